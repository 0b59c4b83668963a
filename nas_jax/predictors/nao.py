"""NAO's encoder-predictor-decoder (Luo et al., NeurIPS 2018) in JAX and flax.

An architecture's token sequence (``space.to_tokens``) is embedded and read by
a single-layer LSTM encoder. Each step's output is L2-normalised; their mean,
normalised again, is the architecture embedding. An MLP with a sigmoid maps the
embedding to a predicted (min-max normalised) score. A single-layer LSTM
decoder, started from the embedding and attending over the encoder outputs,
reconstructs the sequence; at each position it may only emit a token that
``space.token_mask()`` allows, so every decoded sequence is a valid
architecture.

Training minimises ``lam * MSE + (1 - lam) * NLL`` with Adam and gradient
clipping, on sequences augmented by ``space.augment_tokens`` (NAO's symmetric
swap). The ascent moves the encoder outputs along the gradient of the
predicted score, ``o' = normalise(o + eta * d f / d o)``, and decodes; a whole
batch of seeds and a whole sweep of step sizes ``eta`` run in one compiled
call, and the caller picks, per seed, the smallest ``eta`` whose decoded
architecture is new.

The model is functional: parameters are a flax-style nested dict built from
flax layers (``nn.Embed``, ``nn.OptimizedLSTMCell``, ``nn.Dense``), and every
step is a pure function of explicit arrays. Compiled functions are cached per
``(space, settings)``, so a new strategy instance (a new benchmark run) does
not compile again.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> model = NAOModel(space)
    >>> model.settings.hidden_size, model.etas(3)
    (64, Array([1., 2., 3.], dtype=float32))

  Training and the ascent (not run here: compiling ``init`` and ``fit`` takes
  about 20 s of CPU)::

    params, opt_state = model.init(jax.random.key(0))
    tokens = jax.vmap(lambda k: space.to_tokens(space.sample(k)))(
        jax.random.split(jax.random.key(1), 100))
    params, opt_state, metrics = model.fit(
        params, opt_state, jax.random.key(2), tokens, jnp.linspace(0, 1, 100), 100, 50)
    new = model.ascend(params, tokens[:10], model.etas())  # [10, S, L]
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.spaces.base import SearchSpace

Params = Any
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class NAOSettings:
  """Sizes and training settings of the encoder-predictor-decoder.

  Defaults follow the authors' PyTorch code (NAO_pytorch, ``NAO_V1/
  train_search.py``, the ``controller_*`` flags) unless noted.

  Attributes:
    emb_size: token embedding size of the encoder (``encoder_emb_size`` 32).
    hidden_size: LSTM size of encoder and decoder (``encoder_hidden_size`` and
      ``decoder_hidden_size`` 64).
    mlp_layers: hidden layers of the predictor MLP (code: 0; the paper
      describes an MLP, we use 1 by default: measured better pairwise accuracy
      on nb201).
    mlp_hidden_size: width of each MLP layer (``mlp_hidden_size`` 200).
    mlp_dropout: dropout in the MLP during training (``mlp_dropout`` 0.1).
    trade_off: lambda in ``lam * MSE + (1 - lam) * NLL`` (paper and code 0.8).
    lr: Adam learning rate (``controller_lr`` 1e-3).
    grad_bound: global-norm gradient clipping (``controller_grad_bound`` 5.0).
    l2_reg: weight decay (``controller_l2_reg`` 0 in V1; 1e-4 in the TF code).
    batch_size: training batch (``controller_batch_size`` 100).
  """
  emb_size: int = 32
  hidden_size: int = 64
  mlp_layers: int = 1
  mlp_hidden_size: int = 200
  mlp_dropout: float = 0.1
  trade_off: float = 0.8
  lr: float = 1e-3
  grad_bound: float = 5.0
  l2_reg: float = 0.0
  batch_size: int = 100

  def __post_init__(self):
    for name in ("emb_size", "hidden_size", "mlp_hidden_size", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"NAO setting {name} must be >= 1, got {getattr(self, name)}")
    if self.mlp_layers < 0:
      raise ValueError(f"NAO setting mlp_layers must be >= 0, got {self.mlp_layers}")
    if not 0.0 <= self.trade_off <= 1.0:
      raise ValueError(f"NAO setting trade_off must be in [0, 1], got {self.trade_off}")
    if not 0.0 <= self.mlp_dropout < 1.0:
      raise ValueError(f"NAO setting mlp_dropout must be in [0, 1), got {self.mlp_dropout}")


class Metrics(NamedTuple):
  """Training measurements: total loss, MSE and NLL (means over the batch)."""
  loss: jax.Array
  mse: jax.Array
  nll: jax.Array


def _l2_normalise(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


class _Layers:
  """The flax layers of the model (stateless descriptions; params live apart)."""

  def __init__(self, s: NAOSettings, vocab_size: int):
    self.enc_embed = nn.Embed(vocab_size, s.emb_size)
    self.enc_lstm = nn.OptimizedLSTMCell(s.hidden_size)
    self.mlp = [nn.Dense(s.mlp_hidden_size) for _ in range(s.mlp_layers)]
    self.regressor = nn.Dense(1)
    self.dec_embed = nn.Embed(vocab_size, s.hidden_size)
    self.dec_lstm = nn.OptimizedLSTMCell(s.hidden_size)
    self.attn_out = nn.Dense(s.hidden_size)
    self.dec_out = nn.Dense(vocab_size)


def _build(space: SearchSpace, s: NAOSettings) -> dict[str, Callable]:
  """Builds the pure functions and their jitted forms for one space/settings."""
  L, V, H = space.token_length, space.vocab_size, s.hidden_size
  mask_np = np.asarray(space.token_mask(), bool)
  if mask_np.shape != (L, V):
    raise ValueError(f"space.token_mask() has shape {mask_np.shape}, expected {(L, V)}")
  if mask_np[:, 0].any() or not mask_np.any(axis=1).all():
    raise ValueError("space.token_mask() must forbid token 0 and allow a token at every position")
  mask = jnp.asarray(mask_np)
  layers = _Layers(s, V)
  tx = optax.chain(
      optax.clip_by_global_norm(s.grad_bound),
      optax.add_decayed_weights(s.l2_reg) if s.l2_reg > 0 else optax.identity(),
      optax.adam(s.lr))

  def init(key):
    ks = jax.random.split(key, 8 + s.mlp_layers)
    zh = jnp.zeros(H)
    params = {
        "enc_embed": layers.enc_embed.init(ks[0], jnp.zeros((), jnp.int32))["params"],
        "enc_lstm": layers.enc_lstm.init(ks[1], (zh, zh), jnp.zeros(s.emb_size))["params"],
        "regressor": layers.regressor.init(
            ks[2], jnp.zeros(s.mlp_hidden_size if s.mlp_layers else H))["params"],
        "dec_embed": layers.dec_embed.init(ks[3], jnp.zeros((), jnp.int32))["params"],
        "dec_lstm": layers.dec_lstm.init(ks[4], (zh, zh), zh)["params"],
        "attn_out": layers.attn_out.init(ks[5], jnp.zeros(2 * H))["params"],
        "dec_out": layers.dec_out.init(ks[6], zh)["params"],
    }
    width = H
    for i, dense in enumerate(layers.mlp):
      params[f"mlp_{i}"] = dense.init(ks[8 + i], jnp.zeros(width))["params"]
      width = s.mlp_hidden_size
    return params, tx.init(params)

  def apply(layer, p, *args):
    return layer.apply({"params": p}, *args)

  # --- one example (no batch axis); vmapped below ---------------------------
  def encode(params, tokens):
    """tokens int32[L] -> L2-normalised encoder outputs float[L, H]."""
    emb = apply(layers.enc_embed, params["enc_embed"], tokens)

    def step(carry, x):
      carry, out = apply(layers.enc_lstm, params["enc_lstm"], carry, x)
      return carry, out

    zh = jnp.zeros(H, emb.dtype)
    _, outs = jax.lax.scan(step, (zh, zh), emb)
    return _l2_normalise(outs)

  def pool(outputs):
    return _l2_normalise(jnp.mean(outputs, axis=0))

  def predict(params, outputs, key=None):
    """Encoder outputs [L, H] -> predicted score in (0, 1)."""
    x = pool(outputs)
    for i, dense in enumerate(layers.mlp):
      x = jax.nn.relu(apply(dense, params[f"mlp_{i}"], x))
      if key is not None and s.mlp_dropout > 0:
        key, sub = jax.random.split(key)
        keep = jax.random.bernoulli(sub, 1.0 - s.mlp_dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - s.mlp_dropout), 0.0)
    return jax.nn.sigmoid(apply(layers.regressor, params["regressor"], x)[0])

  def dec_step(params, carry, token, outputs, mask_t):
    """One decoder step: previous token -> masked logits [V]."""
    x = apply(layers.dec_embed, params["dec_embed"], token)
    carry, h = apply(layers.dec_lstm, params["dec_lstm"], carry, x)
    attn = jax.nn.softmax(outputs @ h)
    mix = attn @ outputs
    out = jnp.tanh(apply(layers.attn_out, params["attn_out"], jnp.concatenate([mix, h])))
    logits = apply(layers.dec_out, params["dec_out"], out)
    return carry, jnp.where(mask_t, logits, _NEG)

  def decode_logits(params, outputs, tokens):
    """Teacher-forced masked logits [L, V] for target ``tokens``."""
    emb = pool(outputs)
    inputs = jnp.concatenate([jnp.zeros(1, tokens.dtype), tokens[:-1]])  # 0 = start

    def step(carry, xs):
      tok, m = xs
      return dec_step(params, carry, tok, outputs, m)

    _, logits = jax.lax.scan(step, (emb, emb), (inputs, mask))
    return logits

  def decode_greedy(params, outputs):
    """Greedy masked decoding of encoder outputs -> int32[L] valid tokens."""
    emb = pool(outputs)

    def step(carry, m):
      lstm_carry, prev = carry
      lstm_carry, logits = dec_step(params, lstm_carry, prev, outputs, m)
      tok = jnp.argmax(logits).astype(jnp.int32)
      return (lstm_carry, tok), tok

    _, toks = jax.lax.scan(step, ((emb, emb), jnp.zeros((), jnp.int32)), mask)
    return toks

  # --- batched ---------------------------------------------------------------
  def loss_fn(params, key, tokens, targets, weights):
    B = tokens.shape[0]
    outputs = jax.vmap(encode, (None, 0))(params, tokens)
    pred = jax.vmap(predict, (None, 0, 0))(params, outputs, jax.random.split(key, B))
    logits = jax.vmap(decode_logits, (None, 0, 0))(params, outputs, tokens)
    logp = jax.nn.log_softmax(logits)
    nll_ex = -jnp.mean(jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0], -1)
    wsum = jnp.maximum(jnp.sum(weights), 1.0)
    mse = jnp.sum(weights * (pred - targets) ** 2) / wsum
    nll = jnp.sum(weights * nll_ex) / wsum
    loss = s.trade_off * mse + (1.0 - s.trade_off) * nll
    return loss, Metrics(loss, mse, nll)

  def augment(key, tokens):
    return jax.vmap(space.augment_tokens)(jax.random.split(key, tokens.shape[0]), tokens)

  def step_body(params, opt_state, key, tokens, targets, weights):
    k_aug, k_drop = jax.random.split(key)
    tokens = augment(k_aug, tokens)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, k_drop, tokens, targets, weights)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  def fit(params, opt_state, key, tokens, targets, count, num_steps):
    """``num_steps`` steps on batches drawn (with replacement) from the first
    ``count`` rows of the fixed-capacity arrays ``tokens`` / ``targets``."""
    count = jnp.maximum(jnp.asarray(count, jnp.int32), 1)

    def body(i, carry):
      params, opt_state, _ = carry
      k_idx, k_step = jax.random.split(jax.random.fold_in(key, i))
      idx = jax.random.randint(k_idx, (s.batch_size,), 0, count)
      return step_body(params, opt_state, k_step, tokens[idx], targets[idx],
                       jnp.ones(s.batch_size, jnp.float32))

    zero = jnp.zeros((), jnp.float32)
    return jax.lax.fori_loop(0, num_steps, body, (params, opt_state, Metrics(zero, zero, zero)))

  def predict_tokens(params, tokens):
    outputs = jax.vmap(encode, (None, 0))(params, tokens)
    return jax.vmap(predict, (None, 0))(params, outputs)

  def reconstruct(params, tokens):
    outputs = jax.vmap(encode, (None, 0))(params, tokens)
    return jax.vmap(decode_greedy, (None, 0))(params, outputs)

  def ascend_one(params, tokens, etas):
    outputs = encode(params, tokens)
    grad = jax.grad(lambda o: predict(params, o))(outputs)

    def at(eta):
      new = _l2_normalise(outputs + eta * grad)
      dec = decode_greedy(params, new)
      return dec, predict(params, encode(params, dec))

    return jax.vmap(at)(etas)

  def ascend(params, tokens, etas):
    """Seeds int32[N, L], step sizes float[S] -> (tokens int32[N, S, L],
    predicted score of each decoded sequence float[N, S])."""
    return jax.vmap(ascend_one, (None, 0, None))(params, tokens, etas)

  return {
      "init": jax.jit(init),
      "train_step": jax.jit(step_body),
      "fit": jax.jit(fit),
      "loss": jax.jit(loss_fn),
      "predict": jax.jit(predict_tokens),
      "reconstruct": jax.jit(reconstruct),
      "ascend": jax.jit(ascend),
      "encode": encode, "predict_outputs": predict, "decode_greedy": decode_greedy,
  }


@functools.lru_cache(maxsize=16)
def _cached_build(space: SearchSpace, settings: NAOSettings) -> dict[str, Callable]:
  return _build(space, settings)


class NAOModel:
  """Encoder-predictor-decoder for the token view of a search space.

  Args:
    space: any ``SearchSpace`` (its ``token_length``, ``vocab_size``,
      ``token_mask`` and ``augment_tokens`` are used).
    **settings: fields of ``NAOSettings``; unknown names raise ``ValueError``.

  Example:
    >>> from nas_jax.spaces import get_space
    >>> NAOModel(get_space("nb201"), hidden_size=32).settings.hidden_size
    32
    >>> NAOModel(get_space("nb201"), hidden=32)
    Traceback (most recent call last):
    ...
    ValueError: unknown NAO model setting(s) ['hidden']; allowed: [...]
  """

  def __init__(self, space: SearchSpace, **settings: Any):
    allowed = {f.name for f in dataclasses.fields(NAOSettings)}
    unknown = set(settings) - allowed
    if unknown:
      raise ValueError(f"unknown NAO model setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    self.space = space
    self.settings = NAOSettings(**settings)
    self._fns = _cached_build(space, self.settings)

  @property
  def jitted(self) -> dict[str, Callable]:
    """The compiled functions (for cache-size checks)."""
    return self._fns

  def _check_tokens(self, tokens: jax.Array) -> None:
    chex.assert_rank(tokens, 2)
    if tokens.shape[1] != self.space.token_length:
      raise ValueError(
          f"tokens have length {tokens.shape[1]}, space {self.space.name!r} uses "
          f"{self.space.token_length}; encode archs with space.to_tokens")

  def init(self, key: jax.Array) -> tuple[Params, optax.OptState]:
    """Fresh parameters and Adam state."""
    return self._fns["init"](key)

  def etas(self, num: int = 50, step: float = 1.0) -> jax.Array:
    """The step-size sweep ``step, 2*step, ..., num*step``.

    Defaults: the authors' code raises the step size by 1 from 1 up to
    ``max_step_size`` = 50 (NAO_pytorch ``NAO_V1/train_search.py``).
    """
    return step * jnp.arange(1, num + 1, dtype=jnp.float32)

  def train_step(self, params, opt_state, key, tokens, targets, weights=None):
    """One Adam step on a batch; returns ``(params, opt_state, Metrics)``."""
    self._check_tokens(tokens)
    if weights is None:
      weights = jnp.ones(tokens.shape[0], jnp.float32)
    return self._fns["train_step"](params, opt_state, key, jnp.asarray(tokens, jnp.int32),
                                   jnp.asarray(targets, jnp.float32),
                                   jnp.asarray(weights, jnp.float32))

  def fit(self, params, opt_state, key, tokens, targets, count, num_steps):
    """``num_steps`` train steps in one compiled loop.

    Args:
      tokens: int32[C, L] fixed-capacity token array; rows ``>= count`` ignored.
      targets: float[C] normalised scores in [0, 1].
      count: number of valid rows.
      num_steps: number of steps (traced: no recompilation when it changes).

    Returns:
      ``(params, opt_state, Metrics of the last step)``.
    """
    self._check_tokens(tokens)
    chex.assert_shape(targets, (tokens.shape[0],))
    return self._fns["fit"](params, opt_state, key, jnp.asarray(tokens, jnp.int32),
                            jnp.asarray(targets, jnp.float32), jnp.asarray(count, jnp.int32),
                            jnp.asarray(num_steps, jnp.int32))

  def predict(self, params, tokens) -> jax.Array:
    """Predicted normalised scores float[N] (no dropout)."""
    self._check_tokens(tokens)
    return self._fns["predict"](params, jnp.asarray(tokens, jnp.int32))

  def reconstruct(self, params, tokens) -> jax.Array:
    """Encode then greedily decode: int32[N, L]."""
    self._check_tokens(tokens)
    return self._fns["reconstruct"](params, jnp.asarray(tokens, jnp.int32))

  def ascend(self, params, tokens, etas) -> tuple[jax.Array, jax.Array]:
    """Gradient ascent for a batch of seeds over a sweep of step sizes.

    Args:
      tokens: int32[N, L] seed sequences.
      etas: float[S] step sizes, increasing.

    Returns:
      ``(decoded int32[N, S, L], predicted score float[N, S] of each decoded
      sequence)``.
    """
    self._check_tokens(tokens)
    chex.assert_rank(etas, 1)
    return self._fns["ascend"](params, jnp.asarray(tokens, jnp.int32),
                               jnp.asarray(etas, jnp.float32))


def pairwise_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
  """Fraction of pairs ``i < j`` with distinct truths ordered alike by ``pred``.

  Example:
    >>> pairwise_accuracy(np.array([1., 2., 3.]), np.array([0., 5., 9.]))
    1.0
  """
  truth, pred = np.asarray(truth, float), np.asarray(pred, float)
  dt = np.sign(truth[:, None] - truth[None, :])
  dp = np.sign(pred[:, None] - pred[None, :])
  iu = np.triu_indices(len(truth), 1)
  valid = dt[iu] != 0
  if not valid.any():
    raise ValueError("pairwise_accuracy needs at least two distinct true scores")
  return float(np.mean((dt[iu] == dp[iu])[valid]))

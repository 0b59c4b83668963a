"""ENAS's weight-sharing recurrent language model (the ``rnn`` space's supernet).

One set of weights serves every cell of ``nas_jax.spaces.rnn.RNNSpace``; the
architecture ``int32[N, 2]`` (``[node, (input, activation)]``) is a *traced*
argument, so one compiled train step and one compiled evaluation serve every
cell. For each architecture the supernet computes exactly the function of the
child network of ``nas_jax.networks.rnn`` (``RNNChild``) whose variables
``child_variables(arch, params, config)`` returns (tested: same logits and
hidden state, dropout off).

Weight sharing (``config.sharing``). ENAS's code (``src/ptb/ptb_enas_child.py``,
``_build_params`` / ``_rhn_enas``) keeps one matrix per **(node, previous
node, activation)**: ``w_skip[i]`` has ``num_funcs * i`` blocks of ``H`` rows
and node ``i`` reads block ``prev * num_funcs + func``; node 0's ``w_prev``
has one ``(E + H) x 2H`` block per activation. The paper (Pham et al. 2018,
sec. 2.1) describes one matrix per pair of nodes ``j < l`` (no activation
index). ``sharing`` chooses:

* ``"node_input_activation"`` (default; ENAS's code): ``w0: [4, E+H, 2H]``,
  ``w: [4 * N(N-1)/2, H, 2H]``;
* ``"node_input"`` (ENAS's paper): ``w0: [1, E+H, 2H]``, ``w: [N(N-1)/2, H, 2H]``;
* ``"node"`` (one matrix per node whatever it reads, as DARTS's search cell):
  ``w0: [1, E+H, 2H]``, ``w: [N-1, H, 2H]``.

The matrices of the architecture are gathered once per window (outside the
time loop), so a step costs the child's matmuls plus one gather, and the
gradient is one scatter-add into the shared array.

Cell (as ``RNNChild``, ENAS ``_rhn_fixed``): node 0 ``[c, g] = [x_t m_x,
h_{t-1} m_h] @ W_0``, ``s_0 = h + sigmoid(c) (act_0(g) - h)``; node ``i``
reads ``s_j`` (``j = arch[i, 0]``, chosen from the traced array by a one-hot
sum over the earlier nodes), ``[c, g] = (s_j m_h) @ W_i``, ``s_i = s_j +
sigmoid(c) (act_i(g) - s_j)``; ``h_t`` = the average of the output nodes: the
loose ends (nodes no node reads, computed from the traced array; ENAS) or
nodes ``1..N-1`` (``output="mean"``, DARTS). The activation is chosen by a
masked sum of the four activations (``activation_impl="masked"``, default) or
``lax.switch`` (``"switch"``): the same function, and on CPU the same speed
within the noise of the shared machine (below).

Measured (``benchmarks/rnn_supernet.py``: PTB, V = 10,000, E = H = 64, batch
64, bptt 35, N = 12; 2 CPU cores shared with other jobs, load 3-10, so
figures vary about 2x between runs). Train step: trace + lower 1.2-1.8 s, XLA
compile 7-27 s (masked 7.3-25.5 s, switch 9.7-27.2 s over 8 compilations
each), 0.40-1.3 s per step (interleaved A/B at load ~4: masked 0.400 s,
switch 0.403 s); the supernet's step on one cell costs 1.05-1.25x the fixed
child's step for that cell (1.07 vs 0.97 s, 0.56 vs 0.53 s). The tied decoder
(2,240 x 64 x 10,000 multiply-adds per window) dominates, so the traced cell
adds little. Scoring 10 cells on one validation window batch (64 x 35):
``lax.map`` 0.9-3.2 s, ``vmap`` 3.3-5.9 s (1.5-3.5x slower), compile 8-14 s.
Selecting a node's input by a one-hot sum, by indexing a stack or by
``lax.switch`` gave the same step time (0.40-0.46 s); the one-hot sum is kept.

Model: embedding (E = H) -> word dropout ``dropout_e`` (DARTS
``embedded_dropout``: a vocabulary row dropped for the whole window; ENAS
drops a word's every occurrence in a row of the window instead) -> locked
dropout ``dropout_i`` -> cell (``dropout_x`` on its input, ``dropout_h`` on
every node input read from a hidden state; masks shared over time, ENAS
``_gen_mask`` per window) -> locked dropout ``dropout_o`` -> tied decoder
``logits = y @ E^T + b``. Masks come from ``nas_jax.networks.rnn.dropout_masks``.

Not reproduced: ENAS's shared model also batch-normalises every node's
pre-activation and the cell output (``ptb_ops.batch_norm``, epsilon 1.0) while
its fixed child does not; here the supernet keeps the child's function exactly
(no batch norm), so shared-weight scores rank the very networks that are
retrained.

Training (``make_train_step``): truncated BPTT, the hidden state carried
across windows by the caller (``train_step`` returns it; no gradient crosses
a window), loss = mean token cross-entropy plus ``slowness_reg *
mean((h_t - h_{t-1})^2)``, optimiser ``tx`` (e.g.
``nas_jax.tasks.language_model.make_optimizer``: clipping and weight decay)
scaled by a traced learning rate; a step with a non-finite loss or gradient
is skipped, as in the language-model task.

Example:
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> space = RNNSpace(num_nodes=4)  # ENAS: 12
    >>> cfg = config(vocab_size=100, emb_size=8, hidden_size=8, num_nodes=4)
    >>> tx = optax.clip_by_global_norm(0.25)
    >>> state = init_train_state(init(jax.random.key(0), cfg), tx)
    >>> state["params"]["w"].shape  # one matrix per (node, previous node, activation)
    (24, 8, 16)

  Training and scoring (not run here: compiling the step takes tens of
  seconds on a 2-core CPU)::

    step, evaluate = make_train_step(cfg, tx), make_eval_archs(cfg)
    x = y = jnp.zeros((4, 10), jnp.int32)
    hidden = initial_hidden(4, 8)
    state, hidden, m = step(state, space.sample(jax.random.key(1)), x, y, hidden,
                            jax.random.key(2), 20.0)
    archs = jax.vmap(space.sample)(jax.random.split(jax.random.key(3), 5))
    loss, hiddens = evaluate(state["params"], archs, x, y, initial_hidden(4, 8))
    loss.shape, hiddens.shape  # ((5,), (5, 4, 8))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nas_jax.networks import rnn as rnn_net
from nas_jax.spaces.rnn import ENAS_NUM_NODES, NUM_ACTIVATIONS, OUTPUT_RULES

Params = dict[str, Any]
SHARING = ("node_input_activation", "node_input", "node")
ACTIVATION_IMPLS = ("masked", "switch")
EVAL_METHODS = ("map", "vmap")
_DROPOUTS = ("dropout_e", "dropout_i", "dropout_x", "dropout_h", "dropout_o")


def enas_init_range(hidden_size: int) -> float:
  """ENAS's initialisation range by hidden size (``ptb_enas_child.py``,
  ``_build_params``): 0.1 up to 300 units, 0.05 up to 400, else 0.04.

  Example:
    >>> enas_init_range(64), enas_init_range(720)
    (0.1, 0.04)
  """
  return 0.1 if hidden_size <= 300 else 0.05 if hidden_size <= 400 else 0.04


@dataclasses.dataclass(frozen=True)
class RNNSupernetConfig:
  """Sizes and settings of the recurrent supernet.

  Attributes:
    vocab_size: V (PTB: 10,000).
    emb_size, hidden_size: E == H (tied decoder). CPU default 64 (as the
      language-model task); ENAS search 720 (``scripts/ptb_search.sh``).
    num_nodes: N, nodes of the cell (ENAS 12, ``--child_rhn_depth=12``).
    output: ``"loose_ends"`` (ENAS) or ``"mean"`` (DARTS); the space's rule.
    sharing: see the module docstring (default ENAS's code).
    activation_impl: ``"masked"`` or ``"switch"`` (same function; speed only).
    dropout_e, dropout_i, dropout_x, dropout_h, dropout_o: dropout
      probabilities. CPU default 0 (as the language-model task's CPU
      default). ENAS search (``ptb_search.sh`` keep probabilities e 0.75,
      x 0.25, h 0.75, o 0.25): 0.25, 0, 0.75, 0.25, 0.75.
    init_range: uniform initialisation range; None: ENAS's rule by hidden
      size (``enas_init_range``: 0.1 at H = 64).
  """
  vocab_size: int
  emb_size: int = 64
  hidden_size: int = 64
  num_nodes: int = ENAS_NUM_NODES
  output: str = "loose_ends"
  sharing: str = "node_input_activation"
  activation_impl: str = "masked"
  dropout_e: float = 0.0
  dropout_i: float = 0.0
  dropout_x: float = 0.0
  dropout_h: float = 0.0
  dropout_o: float = 0.0
  init_range: float | None = None

  def __post_init__(self):
    for name in ("vocab_size", "emb_size", "hidden_size", "num_nodes"):
      value = getattr(self, name)
      low = 2 if name == "num_nodes" else 1
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"rnn supernet {name}={value!r}: must be an int >= {low}")
    if self.emb_size != self.hidden_size:
      raise ValueError(f"rnn supernet emb_size={self.emb_size} != hidden_size={self.hidden_size}: the "
                       "decoder is tied to the embedding, so set them equal")
    for name, allowed in (("output", OUTPUT_RULES), ("sharing", SHARING),
                          ("activation_impl", ACTIVATION_IMPLS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"rnn supernet {name}={getattr(self, name)!r}: choose one of {list(allowed)}")
    for name in _DROPOUTS:
      p = getattr(self, name)
      if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"rnn supernet {name}={p!r}: must be a probability in [0, 1)")
    r = self.init_range
    if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0):
      raise ValueError(f"rnn supernet init_range={r!r}: must be None (ENAS's rule) or > 0")

  @property
  def resolved_init_range(self) -> float:
    return enas_init_range(self.hidden_size) if self.init_range is None else float(self.init_range)


def config(**fields: Any) -> RNNSupernetConfig:
  """``RNNSupernetConfig(**fields)``; unknown fields raise ``ValueError`` in one line.

  Example:
    >>> config(vocab_size=10000).sharing
    'node_input_activation'
  """
  known = [f.name for f in dataclasses.fields(RNNSupernetConfig)]
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"unknown rnn supernet field(s) {unknown}; known: {known}")
  return RNNSupernetConfig(**fields)


def num_matrices(cfg: RNNSupernetConfig) -> tuple[int, int]:
  """``(node-0 matrices, other nodes' matrices)`` under ``cfg.sharing``.

  Example:
    >>> num_matrices(config(vocab_size=10))  # ENAS's code, N = 12: 4 and 4 * 66
    (4, 264)
  """
  n, f = cfg.num_nodes, NUM_ACTIVATIONS
  if cfg.sharing == "node_input_activation":
    return f, f * n * (n - 1) // 2
  if cfg.sharing == "node_input":
    return 1, n * (n - 1) // 2
  return 1, n - 1


def matrix_indices(arch: jax.Array, cfg: RNNSupernetConfig) -> tuple[jax.Array, jax.Array]:
  """Which shared matrices ``arch`` uses: ``(w0 index, int32[N-1] w indices)``; traceable.

  Node ``i >= 1`` reading node ``j`` with activation ``a`` uses block
  ``4 * i(i-1)/2 + 4 j + a`` (ENAS's code: ``w_skip[i]`` rows
  ``(j * num_funcs + a) * H``, the per-node arrays stacked), ``i(i-1)/2 + j``
  (paper) or ``i - 1`` (per node).

  Example:
    >>> [int(v) for v in matrix_indices(jnp.array([[0, 2], [0, 1], [1, 3]]), config(vocab_size=5, num_nodes=3))[1]]
    [1, 11]
  """
  arch = jnp.asarray(arch, jnp.int32)
  i = jnp.arange(1, cfg.num_nodes, dtype=jnp.int32)
  j, a = arch[1:, 0], arch[1:, 1]
  if cfg.sharing == "node_input_activation":
    return arch[0, 1], NUM_ACTIVATIONS * (i * (i - 1) // 2 + j) + a
  if cfg.sharing == "node_input":
    return jnp.int32(0), i * (i - 1) // 2 + j
  return jnp.int32(0), i - 1


def output_weights(arch: jax.Array, cfg: RNNSupernetConfig) -> jax.Array:
  """float32[N]: 1 for the nodes averaged into ``h_t`` (traced), else 0.

  Loose ends: nodes that no node ``i >= 1`` reads (ENAS); ``"mean"``: nodes
  1..N-1 (DARTS).

  Example:
    >>> output_weights(jnp.array([[0, 0], [0, 1], [1, 0], [1, 3]]), config(vocab_size=5, num_nodes=4)).tolist()
    [0.0, 0.0, 1.0, 1.0]
  """
  n = cfg.num_nodes
  if cfg.output == "mean":
    return jnp.asarray(np.r_[0.0, np.ones(n - 1)], jnp.float32)
  arch = jnp.asarray(arch, jnp.int32)
  read = jnp.any(arch[1:, 0][:, None] == jnp.arange(n)[None, :], axis=0)
  return (~read).astype(jnp.float32)


def initial_hidden(batch_size: int, hidden_size: int) -> jax.Array:
  """``zeros float32[batch_size, hidden_size]`` (the hidden state at the start of an epoch)."""
  return rnn_net.initial_hidden(batch_size, hidden_size)


def init(key: jax.Array, cfg: RNNSupernetConfig) -> Params:
  """The shared parameters, every weight uniform in ``[-r, r]``, decoder bias 0.

  Returns:
    ``{"embedding": [V, E], "w0": [M0, E+H, 2H], "w": [M, H, 2H],
    "decoder_bias": [V]}`` with ``(M0, M) = num_matrices(cfg)``.

  Example:
    >>> init(jax.random.key(0), config(vocab_size=50, emb_size=8, hidden_size=8))["w"].shape
    (264, 8, 16)
  """
  e, h, v = cfg.emb_size, cfg.hidden_size, cfg.vocab_size
  m0, m = num_matrices(cfg)
  r = cfg.resolved_init_range
  shapes = {"embedding": (v, e), "w0": (m0, e + h, 2 * h), "w": (m, h, 2 * h)}
  keys = jax.random.split(key, len(shapes))
  # Flat draws, reshaped: some multi-dimensional threefry draws compile for seconds on XLA:CPU.
  params = {name: jax.random.uniform(k, (int(np.prod(s)),), jnp.float32, -r, r).reshape(s)
            for k, (name, s) in zip(keys, shapes.items())}
  params["decoder_bias"] = jnp.zeros((v,), jnp.float32)
  return params


def _activate(a: jax.Array, g: jax.Array, impl: str) -> jax.Array:
  """``ACTIVATIONS[a](g)`` for a traced ``a`` (tanh, relu, identity, sigmoid)."""
  fns = (jnp.tanh, jax.nn.relu, lambda v: v, jax.nn.sigmoid)
  if impl == "switch":
    return lax.switch(a, fns, g)
  # Every activation is finite for a finite g, so 0 * f(g) adds exact zeros.
  out = jnp.zeros_like(g)
  for k, fn in enumerate(fns):
    out = out + (a == k).astype(g.dtype) * fn(g)
  return out


def _select(states: list[jax.Array], j: jax.Array) -> jax.Array:
  """``states[j]`` for a traced ``j``: a one-hot sum over the earlier nodes
  (exact: it adds zeros)."""
  out = states[0] * (j == 0).astype(states[0].dtype)
  for k in range(1, len(states)):
    out = out + states[k] * (j == k).astype(states[k].dtype)
  return out


def apply(params: Params, arch: jax.Array, tokens: jax.Array, hidden: jax.Array, *,
          config: RNNSupernetConfig, key: jax.Array | None = None,
          train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The language model of the traced ``arch`` on one window.

  Args:
    params: from ``init``.
    arch: int32[N, 2] (traced).
    tokens: int32[B, T].
    hidden: float32[B, H], the state carried from the previous window.
    config: the supernet config.
    key: dropout key (needed when ``train`` and a dropout is on).
    train: apply dropout.

  Returns:
    ``(logits float32[B, T, V], new_hidden float32[B, H], cell_outputs
    float32[B, T, H])``; ``cell_outputs`` (before the output dropout) feed the
    slowness regulariser.
  """
  cfg = config
  chex.assert_rank([tokens, hidden], [2, 2])
  chex.assert_shape(arch, (cfg.num_nodes, 2))
  b, _ = tokens.shape
  e, h_size, v, n = cfg.emb_size, cfg.hidden_size, cfg.vocab_size, cfg.num_nodes
  chex.assert_shape(hidden, (b, h_size))
  arch = jnp.asarray(arch, jnp.int32)
  probs = {name: getattr(cfg, name) for name in _DROPOUTS}
  if train and any(p > 0 for p in probs.values()):
    if key is None:
      raise ValueError("rnn supernet apply(train=True) with dropout on needs key=")
    masks = rnn_net.dropout_masks(key, probs, {"dropout_e": (v, 1), "dropout_i": (b, 1, e),
                                               "dropout_x": (b, 1, e), "dropout_h": (b, h_size),
                                               "dropout_o": (b, 1, h_size)})
  else:
    masks = {name: None for name in _DROPOUTS}

  emb_w = params["embedding"]
  x = jnp.take(emb_w, tokens, axis=0)  # [B, T, E]
  if masks["dropout_e"] is not None:
    x = x * jnp.take(masks["dropout_e"], tokens, axis=0)
  for name in ("dropout_i", "dropout_x"):
    if masks[name] is not None:
      x = x * masks[name]
  m_h = masks["dropout_h"]

  i0, idx = matrix_indices(arch, cfg)
  w0 = params["w0"][i0]  # [E+H, 2H]
  ws = jnp.take(params["w"], idx, axis=0)  # [N-1, H, 2H], gathered once per window
  xw = jnp.einsum("bte,ef->tbf", x, w0[:e])
  w0_h = w0[e:]
  acts = arch[:, 1]
  inputs = arch[:, 0]
  out_w = output_weights(arch, cfg)
  out_count = jnp.sum(out_w)
  impl = cfg.activation_impl

  def drop_h(s):
    return s if m_h is None else s * m_h

  def step(h_prev, xw_t):
    c, g = jnp.split(xw_t + drop_h(h_prev) @ w0_h, 2, axis=-1)
    states = [h_prev + jax.nn.sigmoid(c) * (_activate(acts[0], g, impl) - h_prev)]
    for i in range(1, n):
      s_prev = _select(states, inputs[i])
      c, g = jnp.split(drop_h(s_prev) @ ws[i - 1], 2, axis=-1)
      states.append(s_prev + jax.nn.sigmoid(c) * (_activate(acts[i], g, impl) - s_prev))
    out = 0.0
    for k in range(n):
      out = out + out_w[k] * states[k]
    out = out / out_count
    return out, out

  new_hidden, outs = lax.scan(step, hidden.astype(jnp.float32), xw)
  outs = jnp.swapaxes(outs, 0, 1)  # [B, T, H]
  dropped = outs if masks["dropout_o"] is None else outs * masks["dropout_o"]
  logits = dropped @ emb_w.T + params["decoder_bias"]
  return logits, new_hidden, outs


def init_train_state(params: Params, tx: optax.GradientTransformation) -> dict[str, Any]:
  """``{"params", "opt_state", "step"}``: the supernet's train state (a pytree).

  The hidden state is not part of it: ``train_step`` takes and returns it
  (reset to zeros at each epoch's start, as the language-model task).
  """
  return {"params": params, "opt_state": jax.jit(tx.init)(params),
          "step": jax.device_put(np.zeros((), np.int32))}


def make_train_step(cfg: RNNSupernetConfig, tx: optax.GradientTransformation, *,
                    slowness_reg: float = 0.0, donate: bool = True) -> Callable:
  """One jitted truncated-BPTT step that serves every architecture.

  Args:
    cfg: the supernet config.
    tx: optimiser transformation applied to the gradients (e.g. clipping and
      weight decay: ``nas_jax.tasks.language_model.make_optimizer``); the
      update is ``-lr * tx(grads)`` with the traced ``lr`` (ENAS and DARTS
      train the shared weights with plain SGD).
    slowness_reg: weight of ``mean((h_t - h_{t-1})^2)`` over the window's cell
      outputs (ENAS ``--child_rnn_slowness_reg``, DARTS ``--beta``; the
      language-model task's default 1e-3). 0: off.
    donate: donate the state and hidden buffers (the inputs must not be reused).

  Returns:
    ``train_step(state, arch, x, y, hidden, key, lr) -> (state, hidden,
    metrics)``: ``x``, ``y`` int32[B, T] (inputs, next-word targets),
    ``hidden`` float32[B, H] carried from the previous window (no gradient
    crosses windows), ``key`` draws the dropout masks, ``lr`` a scalar.
    ``metrics``: ``loss`` (mean token cross-entropy, without the regulariser)
    and ``finite`` (False: the step was skipped; state and hidden unchanged).
    ``arch`` (int32[N, 2]) is traced: one compilation for every cell.

  Example:
    >>> step = make_train_step(config(vocab_size=100), optax.clip_by_global_norm(0.25), slowness_reg=1e-3)

    then ``state, hidden, m = step(state, arch, x, y, hidden, key, 20.0)``.
  """
  beta = float(slowness_reg)
  if not beta >= 0:
    raise ValueError(f"slowness_reg={slowness_reg!r}: must be >= 0")

  def loss_fn(params, arch, x, y, hidden, key):
    chex.assert_equal_shape([x, y])
    logits, new_hidden, outs = apply(params, arch, x, hidden, config=cfg, key=key, train=True)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    reg = beta * jnp.mean(jnp.square(outs[:, 1:] - outs[:, :-1])) if beta else 0.0
    return ce + reg, (ce, new_hidden)

  def train_step(state, arch, x, y, hidden, key, lr):
    (_, (ce, new_hidden)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], arch, x, y, hidden, key)
    finite = jnp.isfinite(ce) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    old_state = dict(state, step=state["step"] + 1)  # a skipped step still counts
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, old_state)
    new_hidden = jnp.where(finite, new_hidden, hidden)
    return new_state, new_hidden, {"loss": ce, "finite": finite}

  return jax.jit(train_step, donate_argnums=(0, 4) if donate else ())


def make_eval_archs(cfg: RNNSupernetConfig, *, method: str = "map") -> Callable:
  """One jitted call that scores K architectures on one window (dropout off).

  Args:
    cfg: the supernet config.
    method: ``"map"`` (``lax.map``: one architecture after another) or
      ``"vmap"`` (all K at once: batched matmuls over the gathered weights).
      Same values; speed only.

  Returns:
    ``eval_archs(params, archs int32[K, N, 2], x, y, hidden) -> (loss
    float32[K], new_hidden float32[K, B, H])``: mean token cross-entropy of
    each architecture on the window (perplexity ``exp(loss)``; ENAS's reward
    ``80 / exp(loss)``), starting from ``hidden`` float32[B, H] (the same for
    every architecture, e.g. zeros; ENAS's ``valid_rl`` starts from the
    training's carried state) or float32[K, B, H] (one each, to chain
    windows with the returned states).
  """
  if method not in EVAL_METHODS:
    raise ValueError(f"eval method {method!r}: choose one of {list(EVAL_METHODS)}")

  def one(params, arch, x, y, hidden):
    logits, new_hidden, _ = apply(params, arch, x, hidden, config=cfg, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), new_hidden

  def eval_archs(params, archs, x, y, hidden):
    chex.assert_rank(archs, 3)
    k = archs.shape[0]
    if hidden.ndim == 2:
      hidden = jnp.broadcast_to(hidden, (k,) + hidden.shape)
    chex.assert_rank(hidden, 3)
    if method == "map":
      return lax.map(lambda ah: one(params, ah[0], x, y, ah[1]), (archs, hidden))
    return jax.vmap(one, in_axes=(None, 0, None, None, 0))(params, archs, x, y, hidden)

  return jax.jit(eval_archs)


def child_config(cfg: RNNSupernetConfig) -> dict[str, Any]:
  """``build_child`` keywords of the child with the supernet's sizes and dropouts.

  Example:
    >>> child_config(config(vocab_size=10))["init_range"]
    0.1
  """
  return {"vocab_size": cfg.vocab_size, "emb_size": cfg.emb_size, "hidden_size": cfg.hidden_size,
          **{name: float(getattr(cfg, name)) for name in _DROPOUTS},
          "init_range": cfg.resolved_init_range}


def build_child(space: Any, arch: Any, cfg: RNNSupernetConfig) -> rnn_net.RNNChild:
  """The child network of ``arch`` (``nas_jax.networks.rnn.build_child``) with the
  supernet's sizes and dropouts; ``ValueError`` if ``space`` disagrees with ``cfg``."""
  if getattr(space, "num_nodes", cfg.num_nodes) != cfg.num_nodes or \
      getattr(space, "output", cfg.output) != cfg.output:
    raise ValueError(f"space {space!r} does not match the supernet config (num_nodes={cfg.num_nodes}, "
                     f"output={cfg.output!r}); build the config from the space")
  return rnn_net.build_child(space, arch, **child_config(cfg))


def child_variables(arch: Any, params: Params, cfg: RNNSupernetConfig) -> dict[str, Any]:
  """The child's variables taken from the supernet: ``{"params": {...}}``.

  With them ``build_child(space, arch, cfg).apply(...)`` computes exactly the
  supernet's function for ``arch`` (tested).

  Example:
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> space, cfg = RNNSpace(num_nodes=4), config(vocab_size=20, emb_size=8, hidden_size=8, num_nodes=4)
    >>> arch, params = space.sample(jax.random.key(0)), init(jax.random.key(1), cfg)
    >>> v = child_variables(arch, params, cfg)
    >>> v["params"]["w"].shape
    (3, 8, 16)
    >>> x, h = jnp.zeros((2, 5), jnp.int32), initial_hidden(2, 8)
    >>> logits, _ = build_child(space, arch, cfg).apply(v, x, h, train=False)
    >>> bool(jnp.allclose(logits, apply(params, arch, x, h, config=cfg)[0], atol=1e-6))
    True
  """
  a = np.asarray(arch)
  if a.shape != (cfg.num_nodes, 2):
    raise ValueError(f"arch has shape {a.shape}; expected ({cfg.num_nodes}, 2) for this supernet")
  i0, idx = matrix_indices(jnp.asarray(a, jnp.int32), cfg)
  return {"params": {"embedding": params["embedding"], "w0": params["w0"][i0],
                     "w": jnp.take(params["w"], idx, axis=0),
                     "decoder_bias": params["decoder_bias"]}}


class RNNSupernet:
  """The module's functions as one object (the ``rnn`` family's LM supernet).

  Not ``nas_jax.networks.base.WeightSharing``: a language model's step also
  takes and returns the hidden state and a learning rate.

  Example:
    >>> SUPERNET.config(vocab_size=10000).num_nodes
    12
  """
  config = staticmethod(config)
  init = staticmethod(init)
  apply = staticmethod(apply)
  initial_hidden = staticmethod(initial_hidden)
  init_train_state = staticmethod(init_train_state)
  make_train_step = staticmethod(make_train_step)
  make_eval_archs = staticmethod(make_eval_archs)
  child_variables = staticmethod(child_variables)
  build_child = staticmethod(build_child)


SUPERNET = RNNSupernet()

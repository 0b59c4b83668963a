"""ENAS's controller as an ask/tell strategy (Pham et al., ICML 2018).

The policy is ENAS's LSTM controller over the space's token view
(``nas_jax.predictors.controller``): ``ask`` draws ``batch_size``
architectures with one jitted sampler; ``tell`` turns the told search scores
into one REINFORCE step, as the authors' trainer does
(``src/cifar10/micro_controller.py`` ``build_trainer``):

    reward_i   = reward_scale * score_i + entropy_weight * H_i
    baseline  <- baseline_decay * baseline + (1 - baseline_decay) * reward_i
                 (per told architecture, in order; bias-corrected, see below)
    advantage_i = reward_i - baseline (after the update with reward_i)
    loss       = -mean_i log p(arch_i) * advantage_i
                 + skip_weight * mean_i KL(p_skip(arch_i) || skip_target)   (macro only)
    params    <- Adam(loss)

``H_i`` is the summed entropy of the controller's decisions for ``arch_i``.
One Adam step per ``batch_size`` told architectures: the authors aggregate
the gradients of ``controller_num_aggregate`` samples (``SyncReplicasOptimizer``)
before each step. Where the strategy is used as a chooser with a tabular or
supernet evaluator, the reward is the told search score; ENAS proper (the
controller alternating with shared-weight training) is a one-shot method.

Settings come in presets (``PRESETS``), one per search of the authors'
scripts, picked by space (``preset: "auto"``); explicit settings override the
preset. ``cifar_micro`` (``nasnet``, ``darts`` and the defaults;
``scripts/cifar10_micro_search.sh``, ``src/cifar10/main.py``): learning rate
0.0035, entropy weight 1e-4, ``tanh_constant`` 1.10 with ``op_tanh_reduce``
2.5, no temperature, 10 samples per step (``--controller_num_aggregate``),
hidden size 64 (the paper says 100), reward = accuracy / 100 (ENAS's reward
is a fraction; strategies here are told %). ``cifar_macro`` (``macro``;
``scripts/cifar10_macro_search.sh``, ``general_controller.py``): learning
rate 0.001, ``tanh_constant`` 1.5 on every decision, 20 samples per step,
and the skip-density penalty (``predictors.controller.skip_penalty``) with
target 0.4 and weight 0.8, off (weight 0) in the other presets. ``ptb`` (``rnn``;
``scripts/ptb_search.sh``): learning rate 0.001, entropy weight 1e-3,
``tanh_constant`` 2.5, temperature 5.0, hidden size 100, reward = the told
score (already ENAS's ``80 / valid_ppl``). ``nb201`` (the tabular harness):
see ``PRESETS``. In every preset (``src/cifar10/main.py``, ``src/utils.py``):
baseline decay 0.99 (``--controller_bl_dec``); Adam with ``b1 = 0`` and
``eps = 1e-3`` in TensorFlow's form (``eps`` added to ``sqrt(v)`` before the
bias correction), the rate never decayed; the entropy bonus added to the
reward (here as a constant: the TF code's gradient also flows through the
entropy inside the reward).

Differences, chosen for this library: the moving-average baseline is
bias-corrected (``num / den`` as in NAS-Bench-201's REINFORCE) instead of
starting at 0; over ENAS's ~45,000 controller samples the start is
forgotten, but over a budget of 100 architectures a zero start would make
every advantage positive (``baseline_bias_correction`` False gives ENAS's).
(NAS-Bench-201's ENAS starts it at the first reward instead.) Failed
evaluations (score ``-inf``) are skipped.

Example:
    >>> from nas_jax.spaces import get_space
    >>> strategy = ENAS(get_space("nb201"), {"hidden_size": 8, "batch_size": 2})
    >>> strategy.config["preset"], strategy.config["learning_rate"]  # nb201's preset
    ('nb201', 0.01)
    >>> state = strategy.init(jax.random.key(0))
    >>> archs, state = strategy.ask(state, jax.random.key(1))
    >>> archs.shape
    (2, 6)
    >>> state = strategy.tell(state, archs, np.array([91.0, 85.0]))
    >>> int(state["step"]), round(float(state["baseline_num"] / state["baseline_den"]), 4)
    (1, 87.9859)
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.predictors import controller as ctl
from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import State, Strategy
from nas_jax.strategies.random_search import check_float, check_int, check_tell

#: Adam's second-moment decay (TensorFlow's default, used by ENAS's ``get_train_ops``).
ADAM_B2 = 0.999


@functools.partial(jax.jit, static_argnames=("controller", "space", "n"))
def _ask(controller: ctl.Controller, space: SearchSpace, params: ctl.Params, key: jax.Array,
         n: int) -> jax.Array:
  """``n`` architectures drawn by the controller, int32[n, *arch_shape]."""
  tokens, _, _ = ctl.sample(controller, params, key, n)
  return jax.vmap(space.from_tokens)(tokens).astype(jnp.int32)


def reinforce_loss(controller: ctl.Controller, params: ctl.Params, tokens: jax.Array,
                   advantage: jax.Array, weight: jax.Array) -> jax.Array:
  """``-sum_i weight_i * advantage_i * log p(tokens_i) / sum_i weight_i``.

  Args:
    controller: the controller (static).
    params: its parameters.
    tokens: int32[K, L] token sequences.
    advantage: float[K], treated as constants.
    weight: float[K], 1 for a sample that counts, 0 for padding.

  Returns:
    The scalar loss whose gradient is REINFORCE's.
  """
  log_prob, _ = ctl.sequence_log_prob(controller, params, tokens)
  adv = jax.lax.stop_gradient(advantage * weight)
  return -jnp.sum(log_prob * adv) / jnp.maximum(jnp.sum(weight), 1.0)


@functools.partial(jax.jit, static_argnames=("controller", "space"))
def _update(controller: ctl.Controller, space: SearchSpace, hyper: jax.Array, state: dict,
            archs: jax.Array, scores: jax.Array, valid: jax.Array) -> tuple[dict, jax.Array]:
  """One controller step on a padded batch; returns (new state, loss).

  ``hyper`` = [learning_rate, baseline_decay, entropy_weight, reward_scale,
  adam_eps, baseline_bias_correction, skip_target, skip_weight] (traced, so
  one compilation serves every setting).
  """
  lr, decay, ent_w, scale, eps, correct, rho, skip_w = (hyper[i] for i in range(8))
  tokens = jax.vmap(space.to_tokens)(archs).astype(jnp.int32)
  params = state["params"]
  _, entropy = ctl.sequence_log_prob(controller, params, tokens)
  reward = scale * jnp.where(valid, scores, 0.0) + ent_w * entropy

  def baseline_step(carry, xs):
    num, den = carry
    r, ok = xs
    num = jnp.where(ok, decay * num + (1.0 - decay) * r, num)
    den = jnp.where(ok & (correct > 0), decay * den + (1.0 - decay), den)
    base = num / jnp.where(den > 0, den, 1.0)
    return (num, den), r - base

  (num, den), advantage = jax.lax.scan(
      baseline_step, (state["baseline_num"], state["baseline_den"]), (reward, valid))
  weight = valid.astype(jnp.float32)

  def loss_fn(p):
    loss = reinforce_loss(controller, p, tokens, advantage, weight)
    if controller.has_skips:  # ENAS macro: + skip_weight * KL(p_skip || skip_target)
      penalty = ctl.skip_penalty(controller, p, tokens, rho)
      loss = loss + skip_w * jnp.sum(penalty * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    return loss

  loss, grads = jax.value_and_grad(loss_fn)(params)
  # Adam as TensorFlow writes it (ENAS get_train_ops: beta1 = 0, epsilon = 1e-3):
  # step = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps); b1 = 0 makes m = g.
  t = state["step"] + 1
  v = jax.tree.map(lambda v, g: ADAM_B2 * v + (1.0 - ADAM_B2) * g * g, state["adam_v"], grads)
  rate = lr * jnp.sqrt(1.0 - ADAM_B2 ** t.astype(jnp.float32))
  params = jax.tree.map(lambda p, g, v: p - rate * g / (jnp.sqrt(v) + eps), params, grads, v)
  any_valid = jnp.any(valid)
  new = {"params": params, "adam_v": v, "step": t, "baseline_num": num, "baseline_den": den}
  # A batch with no valid sample (every evaluation failed) changes nothing.
  new = jax.tree.map(lambda a, b: jnp.where(any_valid, a, b), new, state)
  return new, loss


#: ENAS's settings per search, as the authors' scripts give them. The keys every
#: preset sets; the rest (baseline decay, Adam's eps) are the same in every script.
PRESETS: dict[str, dict[str, Any]] = {
    # scripts/cifar10_micro_search.sh and src/cifar10/main.py (the micro space).
    "cifar_micro": {
        "hidden_size": 64,          # main.py lstm_size=64 (the paper: 100)
        "num_layers": 1,            # main.py lstm_num_layers=1
        "learning_rate": 0.0035,    # --controller_lr=0.0035
        "entropy_weight": 1e-4,     # --controller_entropy_weight=0.0001
        "tanh_constant": 1.10,      # --controller_tanh_constant=1.10
        "op_tanh_reduce": 2.5,      # --controller_op_tanh_reduce=2.5
        "temperature": None,        # main.py --controller_temperature default None
        "batch_size": 10,           # --controller_num_aggregate=10
        "reward_scale": 0.01,       # told accuracy in % -> ENAS's reward, a fraction
    },
    # scripts/cifar10_macro_search.sh and src/cifar10/main.py (the macro space,
    # src/cifar10/general_controller.py).
    "cifar_macro": {
        "hidden_size": 64,          # main.py lstm_size=64
        "num_layers": 1,            # main.py lstm_num_layers=1
        "learning_rate": 0.001,     # --controller_lr=0.001
        "entropy_weight": 1e-4,     # --controller_entropy_weight=0.0001
        "tanh_constant": 1.5,       # --controller_tanh_constant=1.5
        "op_tanh_reduce": 1.0,      # the script passes 2.5, but GeneralController has no such
                                    # argument (swallowed by **kwargs): ops use the full 1.5
        "temperature": None,        # main.py --controller_temperature default None
        "batch_size": 20,           # --controller_num_aggregate=20
        "reward_scale": 0.01,       # told accuracy in % -> ENAS's reward, a fraction
        "skip_target": 0.4,         # --controller_skip_target=0.4
        "skip_weight": 0.8,         # --controller_skip_weight=0.8
    },
    # scripts/ptb_search.sh and src/ptb/main.py (the recurrent cell space).
    "ptb": {
        "hidden_size": 100,         # src/ptb/main.py lstm_size=100
        "num_layers": 1,            # lstm_num_layers=1
        "learning_rate": 0.001,     # --controller_lr=0.001
        "entropy_weight": 1e-3,     # --controller_entropy_weight=0.001
        "tanh_constant": 2.5,       # --controller_tanh_constant=2.5
        "op_tanh_reduce": 1.0,      # the PTB controller shapes every decision alike
        "temperature": 5.0,         # --controller_temperature=5.0
        "batch_size": 10,           # --controller_num_aggregate=10
        "reward_scale": 1.0,        # the told score is ENAS's PTB reward, 80 / valid ppl
    },
    # NAS-Bench-201's table (this library's harness, benchmarks/nb201.py): the logit
    # shaping of the NAS-Bench-201 authors' ENAS controller on this space
    # (lib/models/cell_searchs/search_model_enas_utils.py: tanh_constant=2.5,
    # temperature=5.0, ENAS's PTB values); the update schedule of this harness's
    # REINFORCE baseline (strategies/reinforce.py, NAS-Bench-201's reference:
    # learning rate 0.01, one step per told architecture, reward = accuracy in %), so
    # that the two differ only in the policy. The CIFAR micro shaping (op logits
    # capped at 1.1 / 2.5) would hold an op's probability on a 5-op edge under 0.375.
    # Measured (benchmarks/nb201.py --queries 100 --runs 50, CIFAR-10): this preset
    # 94.06 +/- 0.30 (seed 0), 94.15 +/- 0.25 (--seed 1000); the cifar_micro preset
    # 93.80 (random search's figure); cifar_micro with batch 1 and reward in % 93.92;
    # with tanh 2.5 / no temperature at lr 0.0035 94.09; 32 x 2 LSTM (NB201's) 94.05.
    "nb201": {
        "hidden_size": 64,          # ENAS src/cifar10/main.py lstm_size=64
        "num_layers": 1,
        "learning_rate": 0.01,      # strategies/reinforce.py (NATS-Bench reinforce.py)
        "entropy_weight": 1e-4,     # ENAS CIFAR scripts; NAS-Bench-201's ENAS runs
        "tanh_constant": 2.5,       # NAS-Bench-201's ENAS controller (ENAS PTB value)
        "op_tanh_reduce": 1.0,      # every nb201 decision is an op
        "temperature": 5.0,         # NAS-Bench-201's ENAS controller (ENAS PTB value)
        "batch_size": 1,            # one step per architecture (reinforce.py; ENAS main.py
                                    # --controller_num_aggregate default 1)
        "reward_scale": 1.0,        # accuracy in %, as the REINFORCE baseline's reward
    },
}
#: The preset ``"auto"`` picks per space (others: ``cifar_micro``).
SPACE_PRESETS = {"nasnet": "cifar_micro", "darts": "cifar_micro", "rnn": "ptb",
                 "nb201": "nb201", "macro": "cifar_macro"}


class ENAS(Strategy):
  """ENAS's LSTM controller trained by REINFORCE (registry name ``enas``); any space.

  Args:
    space: a search space with a token view and ``token_kinds()``.
    config: ``hidden_size``, ``num_layers``, ``learning_rate``,
      ``baseline_decay``, ``baseline_bias_correction``, ``entropy_weight``,
      ``tanh_constant``, ``op_tanh_reduce``, ``temperature`` (None: off),
      ``batch_size`` (architectures per ask and per controller step),
      ``reward_scale`` (score -> reward), ``adam_eps``, ``skip_target`` and
      ``skip_weight`` (the macro space's skip-density penalty; weight 0 is
      off). Defaults: see the module docstring.

  Example:
    >>> from nas_jax.spaces import get_space
    >>> ENAS(get_space("nb201")).controller.hidden_size
    64
    >>> ENAS(get_space("nb201"), {"temperature": 0.0})
    Traceback (most recent call last):
    ...
    ValueError: enas setting temperature=0.0 must be > 0 or None (off)
  """

  name = "enas"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """The CIFAR-10 micro search's settings plus ``preset`` (see ``PRESETS``)."""
    return {"preset": "auto", **PRESETS["cifar_micro"],
            "baseline_decay": 0.99,     # ENAS main.py --controller_bl_dec 0.99 (every script)
            "baseline_bias_correction": True,  # this library's choice (module docstring)
            "adam_eps": 1e-3,           # ENAS src/utils.py AdamOptimizer(beta1=0.0, epsilon=1e-3)
            # The skip-density penalty skip_weight * KL(p_skip || skip_target) of spaces with
            # skip positions (macro); off elsewhere (ENAS main.py --controller_skip_weight
            # default 0.0; --controller_skip_target default 0.8, the macro preset's 0.4).
            "skip_target": 0.4,
            "skip_weight": 0.0}

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    preset = self.config["preset"]
    if preset == "auto":
      preset = SPACE_PRESETS.get(space.name, "cifar_micro")
    if preset not in PRESETS:
      raise ValueError(f"{self.name} setting preset={preset!r} is unknown; use 'auto' or one "
                       f"of {sorted(PRESETS)}")
    # explicit settings > the preset > the defaults
    self.config = {**self.default_config(), **PRESETS[preset], **(config or {}),
                   "preset": preset}
    cfg, name = self.config, self.name
    self.learning_rate = check_float(cfg, "learning_rate", name, 0.0, 10.0, low_open=True)
    self.baseline_decay = check_float(cfg, "baseline_decay", name, 0.0, 1.0, high_open=True)
    self.entropy_weight = check_float(cfg, "entropy_weight", name, 0.0, 1e3)
    self.reward_scale = check_float(cfg, "reward_scale", name, 0.0, 1e6, low_open=True)
    self.adam_eps = check_float(cfg, "adam_eps", name, 0.0, 1.0, low_open=True)
    self.skip_target = check_float(cfg, "skip_target", name, 0.0, 1.0, low_open=True, high_open=True)
    self.skip_weight = check_float(cfg, "skip_weight", name, 0.0, 1e6)
    self.batch_size = check_int(cfg, "batch_size", name, 1)
    if not isinstance(cfg["baseline_bias_correction"], bool):
      raise ValueError(f"{name} setting baseline_bias_correction="
                       f"{cfg['baseline_bias_correction']!r} must be True or False")
    settings = {"hidden_size": check_int(cfg, "hidden_size", name, 1),
                "num_layers": check_int(cfg, "num_layers", name, 1),
                "op_tanh_reduce": check_float(cfg, "op_tanh_reduce", name, 0.0, 1e6,
                                              low_open=True)}
    for key in ("tanh_constant", "temperature"):
      value = cfg[key]
      if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
          raise ValueError(f"{name} setting {key}={value!r} must be > 0 or None (off)")
        value = float(value)
      settings[key] = value
    self.controller = ctl.Controller.for_space(space, **settings)
    self._hyper = np.asarray([self.learning_rate, self.baseline_decay, self.entropy_weight,
                              self.reward_scale, self.adam_eps,
                              float(cfg["baseline_bias_correction"]), self.skip_target,
                              self.skip_weight], np.float32)

  def init(self, key: jax.Array) -> State:
    """State: controller ``params``, Adam ``adam_v``, ``step``, baseline ``num``/``den``, count."""
    params = ctl.init_params(self.controller, key)
    zero = jnp.zeros((), jnp.float32)
    return {"params": params, "adam_v": jax.tree.map(jnp.zeros_like, params),
            "step": jnp.zeros((), jnp.int32), "baseline_num": zero, "baseline_den": zero,
            "num_told": np.asarray(0, np.int64)}

  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """``batch_size`` architectures sampled by the controller; state unchanged."""
    return self.sample(state, key, self.batch_size), state

  def sample(self, state: State, key: jax.Array, n: int) -> np.ndarray:
    """``n`` architectures sampled by the controller, int32[n, *arch_shape] (one compile per n)."""
    return np.asarray(_ask(self.controller, self.space, state["params"], key, int(n)))

  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """One controller step per ``batch_size`` told architectures (padded, in order)."""
    del costs
    archs, scores = check_tell(self.space, self.name, archs, scores)
    k, bs = len(archs), self.batch_size
    learned = {key: state[key] for key in ("params", "adam_v", "step", "baseline_num",
                                           "baseline_den")}
    for start in range(0, k, bs):
      chunk, chunk_scores = archs[start:start + bs], scores[start:start + bs]
      pad = bs - len(chunk)
      valid = np.concatenate([np.isfinite(chunk_scores), np.zeros(pad, bool)])
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)]).astype(np.int32)
      chunk_scores = np.where(valid, np.pad(chunk_scores, (0, pad)), 0.0).astype(np.float32)
      learned, _ = _update(self.controller, self.space, self._hyper, learned, chunk,
                           chunk_scores, valid)
    return {**learned, "num_told": np.asarray(int(state["num_told"]) + k, np.int64)}

  def log_prob(self, state: State, archs: np.ndarray) -> np.ndarray:
    """The controller's log-probability of each architecture, float[K].

    Example:
      >>> from nas_jax.spaces import get_space
      >>> strategy = ENAS(get_space("nb201"), {"hidden_size": 8, "tanh_constant": None})
      >>> state = strategy.init(jax.random.key(0))
      >>> float(np.exp(strategy.log_prob(state, np.array([[1, 2, 3, 4, 0, 1]]))[0])) > 0
      True
    """
    tokens = jax.vmap(self.space.to_tokens)(jnp.asarray(archs, jnp.int32))
    return np.asarray(ctl.sequence_log_prob(self.controller, state["params"], tokens)[0])

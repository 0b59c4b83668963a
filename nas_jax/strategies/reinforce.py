"""REINFORCE over independent per-position categorical distributions.

This is the RL baseline of NAS-Bench-201 (Dong & Yang, ICLR 2020; reference code
``exps/NAS-Bench-201-algos/reinforce.py`` and ``exps/NATS-algos/reinforce.py``):
the policy is a table of logits, one categorical distribution per position of
the space's token view (``space.to_tokens`` / ``from_tokens``; for ``nb201`` one
per edge), invalid tokens masked out by ``space.token_mask()``. Each told
architecture is one policy-gradient step:

    baseline <- EMA of the rewards (updated with this reward first,
                bias-corrected: numerator / denominator, as in the reference)
    loss      = -sum_t log p(token_t) * (reward - baseline)
    logits   <- Adam(loss)

Defaults and their sources:

- ``learning_rate`` 0.01: the learning rate of the NATS-Bench / NAS-Bench-201
  REINFORCE runs (``exps/NATS-algos/reinforce.py`` usage lines
  ``--learning_rate 0.01``; the NAS-Bench-201 grid ``GRID-RL.sh`` starts at
  0.01).
- ``ema_momentum`` 0.9: ``--EMA_momentum 0.9`` in ``REINFORCE.sh`` and the
  default of ``exps/NATS-algos/reinforce.py``.
- optimizer Adam (b1 0.9, b2 0.999, eps 1e-8: PyTorch's and optax's defaults),
  initial logits ``1e-3 * N(0, 1)``: as in the reference ``Policy``.
- reward: the search score as told (validation accuracy in %).

Example:
    >>> from nas_jax.spaces import get_space
    >>> strategy = Reinforce(get_space("nb201"), {"learning_rate": 0.05})
    >>> state = strategy.init(jax.random.key(0))
    >>> strategy.probs(state)[0].round(2)  # edge 0: token 0 is never drawn, the 5 ops near uniform
    array([0. , 0.2, 0.2, 0.2, 0.2, 0.2], dtype=float32)
    >>> archs, state = strategy.ask(state, jax.random.key(1))
    >>> archs
    array([[3, 0, 3, 4, 1, 4]], dtype=int32)
    >>> state = strategy.tell(state, archs, np.array([88.0]))
    >>> archs, state = strategy.ask(state, jax.random.key(2))
    >>> state = strategy.tell(state, archs, np.array([60.0]))  # below the baseline
    >>> archs[0, 0], strategy.probs(state)[0].round(3)  # its op on edge 0 became rarer
    (np.int32(0), array([0.   , 0.189, 0.203, 0.203, 0.203, 0.203], dtype=float32))
"""
from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import State, Strategy
from nas_jax.strategies.policy import checked_token_mask, masked_log_probs
from nas_jax.strategies.random_search import check_float, check_int, check_tell


@functools.partial(jax.jit, static_argnames=("space", "n"))
def _sample(space: SearchSpace, key: jax.Array, logits: jax.Array, mask: jax.Array,
            n: int) -> jax.Array:
  """``n`` architectures drawn from the policy, int32[n, *arch_shape]."""
  logp = masked_log_probs(logits, mask)
  tokens = jax.random.categorical(key, logp, axis=-1, shape=(n, logp.shape[0]))
  return jax.vmap(space.from_tokens)(tokens.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("space",))
def _step(space: SearchSpace, learning_rate: jax.Array, logits: jax.Array, opt_state: Any,
          mask: jax.Array, arch: jax.Array, advantage: jax.Array):
  """One REINFORCE step for one architecture; returns (logits, opt_state, loss).

  Adam is ``optax.scale_by_adam`` followed by ``-learning_rate`` (what
  ``optax.adam`` does), with the rate traced so one compilation serves all.
  """
  tokens = space.to_tokens(arch)
  chex.assert_shape(tokens, (logits.shape[0],))

  def loss_fn(theta):
    logp = masked_log_probs(theta, mask)
    picked = jnp.take_along_axis(logp, tokens[:, None], axis=-1).sum()
    return -picked * advantage

  loss, grads = jax.value_and_grad(loss_fn)(logits)
  updates, opt_state = optax.scale_by_adam().update(grads, opt_state, logits)
  return logits - learning_rate * updates, opt_state, loss


class Reinforce(Strategy):
  """REINFORCE with an EMA baseline (registry name ``reinforce``); any space.

  Args:
    space: any search space (uses the token view and its mask).
    config: ``learning_rate`` (Adam, default 0.01), ``ema_momentum`` (default
      0.9), ``batch_size`` (archs per ask, default 1; each told arch is one
      update, in order).

  Example:
    >>> from nas_jax.spaces import get_space
    >>> Reinforce(get_space("nb201"), {"learning_rate": 0.05}).config
    {'learning_rate': 0.05, 'ema_momentum': 0.9, 'batch_size': 1}
  """

  name = "reinforce"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    return {
        "learning_rate": 0.01,  # NATS-Bench reinforce.py usage, --learning_rate 0.01
        "ema_momentum": 0.9,    # NAS-Bench-201 REINFORCE.sh --EMA_momentum 0.9
        "batch_size": 1,
    }

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    self.learning_rate = check_float(self.config, "learning_rate", self.name, 0.0, 10.0,
                                     low_open=True)
    self.ema_momentum = check_float(self.config, "ema_momentum", self.name, 0.0, 1.0,
                                    high_open=True)
    self.batch_size = check_int(self.config, "batch_size", self.name, 1)
    self.mask = jnp.asarray(checked_token_mask(space, self.name))

  def init(self, key: jax.Array) -> State:
    """State: ``logits`` [L, V], Adam ``opt_state``, EMA ``ema_num``/``ema_den``, count."""
    logits = 1e-3 * jax.random.normal(key, (self.space.token_length, self.space.vocab_size),
                                      jnp.float32)
    return {"logits": logits, "opt_state": optax.scale_by_adam().init(logits),
            "ema_num": np.asarray(0.0), "ema_den": np.asarray(0.0),
            "num_told": np.asarray(0, np.int64)}

  def probs(self, state: State) -> np.ndarray:
    """The policy's per-position token probabilities, float[L, V]."""
    return np.exp(np.asarray(masked_log_probs(state["logits"], self.mask)))

  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """``batch_size`` architectures sampled from the policy; state unchanged."""
    archs = _sample(self.space, key, state["logits"], self.mask, self.batch_size)
    return np.asarray(archs, np.int32), state

  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """One policy-gradient step per told architecture, in order."""
    archs, scores = check_tell(self.space, self.name, archs, scores)
    logits, opt_state = state["logits"], state["opt_state"]
    num, den = float(state["ema_num"]), float(state["ema_den"])
    m = self.ema_momentum
    for arch, reward in zip(archs, scores):
      if not np.isfinite(reward):
        continue  # a failed evaluation (-inf) teaches nothing
      num = m * num + (1.0 - m) * float(reward)
      den = m * den + (1.0 - m)
      advantage = np.float32(float(reward) - num / den)
      logits, opt_state, _ = _step(self.space, np.float32(self.learning_rate), logits,
                                   opt_state, self.mask, arch, advantage)
    return {"logits": logits, "opt_state": opt_state, "ema_num": np.asarray(num),
            "ema_den": np.asarray(den),
            "num_told": np.asarray(int(state["num_told"]) + len(archs), np.int64)}

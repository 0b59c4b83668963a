"""Random search: uniform samples from the space, without repeats.

Each ``ask`` returns ``batch_size`` architectures drawn with ``space.sample``; a
draw whose canonical form (``space.arch_id``'s basis) was asked before, in this
search or earlier in the same batch, is redrawn up to ``max_retries`` times
(after that the duplicate is accepted, so an exhausted space still answers).
The asked architectures' canonical forms live in a fixed-capacity ring buffer
(``history_capacity`` rows plus a count) so the state is a pytree of arrays that
orbax checkpoints; beyond the capacity the oldest entries are forgotten.

The module also holds small helpers the other baseline strategies share
(config checks, jitted samplers, ``tell`` argument checks).

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> strategy = RandomSearch(space, {"batch_size": 4})
    >>> state = strategy.init(jax.random.key(0))
    >>> archs, state = strategy.ask(state, jax.random.key(1))
    >>> archs
    array([[4, 2, 2, 2, 4, 3],
           [3, 4, 3, 0, 2, 0],
           [0, 4, 3, 4, 0, 1],
           [1, 2, 3, 0, 4, 4]], dtype=int32)
    >>> state = strategy.tell(state, archs, np.array([90.1, 85.0, 70.2, 91.3]))
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import State, Strategy


# --- helpers shared by the baseline strategies --------------------------------
def check_int(config: dict[str, Any], name: str, strategy: str, low: int,
              high: int | None = None) -> int:
  """``config[name]`` as an int in ``low..high`` or ``ValueError``.

  Example:
    >>> check_int({"batch_size": 2}, "batch_size", "random", 1)
    2
    >>> check_int({"batch_size": 0}, "batch_size", "random", 1)
    Traceback (most recent call last):
    ...
    ValueError: random setting batch_size=0 is out of range; use >= 1
  """
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{strategy} setting {name}={value!r} must be an integer")
  if value < low or (high is not None and value > high):
    bound = f"{low}..{high}" if high is not None else f">= {low}"
    raise ValueError(f"{strategy} setting {name}={value} is out of range; use {bound}")
  return int(value)


def check_float(config: dict[str, Any], name: str, strategy: str, low: float,
                high: float, *, low_open: bool = False, high_open: bool = False) -> float:
  """``config[name]`` as a finite float in the given interval or ``ValueError``.

  Example:
    >>> check_float({"lr": 0.1}, "lr", "reinforce", 0.0, 1.0, low_open=True)
    0.1
  """
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{strategy} setting {name}={value!r} must be a number")
  value = float(value)
  ok = math.isfinite(value)
  ok = ok and (value > low if low_open else value >= low)
  ok = ok and (value < high if high_open else value <= high)
  if not ok:
    lb, hb = "(" if low_open else "[", ")" if high_open else "]"
    raise ValueError(f"{strategy} setting {name}={value} is out of range; use a value "
                     f"in {lb}{low}, {high}{hb}")
  return value


@functools.partial(jax.jit, static_argnames=("space", "n"))
def sample_archs(space: SearchSpace, key: jax.Array, n: int) -> jax.Array:
  """``n`` independent ``space.sample`` draws, int32[n, *arch_shape]; jitted once per space."""
  if n == 1:  # no vmap: a smaller program that compiles faster
    return jnp.asarray(space.sample(key))[None].astype(jnp.int32)
  return jax.vmap(space.sample)(jax.random.split(key, n)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("n",))
def split_key(key: jax.Array, n: int) -> tuple[jax.Array, ...]:
  """``jax.random.split`` as one jitted call (un-jitted splits cost ~0.5 ms on CPU)."""
  return tuple(jax.random.split(key, n))


@jax.jit
def fold_key(key: jax.Array, data: jax.Array) -> jax.Array:
  """``jax.random.fold_in`` as one jitted call."""
  return jax.random.fold_in(key, data)


def check_tell(space: SearchSpace, strategy: str, archs: Any,
               scores: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``tell`` arguments: int32[K, *arch_shape] and finite-or-(-inf) float[K]."""
  archs = np.asarray(archs)
  scores = np.asarray(scores, dtype=np.float64)
  shape = tuple(space.arch_shape)
  if archs.shape[1:] != shape:
    raise ValueError(f"{strategy}.tell: archs must have shape [K, *{shape}], got "
                     f"{archs.shape}; pass the archs returned by ask")
  if scores.shape != (archs.shape[0],):
    raise ValueError(f"{strategy}.tell: scores must have shape ({archs.shape[0]},) "
                     f"(one per arch), got {scores.shape}")
  if np.isnan(scores).any() or np.isposinf(scores).any():
    raise ValueError(f"{strategy}.tell: scores contain NaN or +inf; give -inf for a failed "
                     "evaluation")
  return archs.astype(np.int32), scores


# --- random search -------------------------------------------------------------
class RandomSearch(Strategy):
  """Uniform random search with de-duplication (registry name ``random``).

  Args:
    space: any search space.
    config: ``batch_size`` (archs per ask, default 1), ``dedupe`` (default
      True), ``max_retries`` (redraws per arch before accepting a duplicate,
      default 100), ``history_capacity`` (asked archs remembered, default 4096).

  Example:
    >>> from nas_jax.spaces import get_space
    >>> strategy = RandomSearch(get_space("nb201"))
    >>> strategy.config
    {'batch_size': 1, 'dedupe': True, 'max_retries': 100, 'history_capacity': 4096}
    >>> archs, state = strategy.ask(strategy.init(jax.random.key(0)), jax.random.key(1))
    >>> archs.shape
    (1, 6)
  """

  name = "random"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    return {"batch_size": 1, "dedupe": True, "max_retries": 100,
            "history_capacity": 4096}

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    self.batch_size = check_int(self.config, "batch_size", self.name, 1)
    self.max_retries = check_int(self.config, "max_retries", self.name, 0)
    self.capacity = check_int(self.config, "history_capacity", self.name, 1)
    if not isinstance(self.config["dedupe"], (bool, np.bool_)):
      raise ValueError(f"random setting dedupe={self.config['dedupe']!r} must be true or false")
    self.dedupe = bool(self.config["dedupe"])

  def _canon(self, arch: np.ndarray) -> np.ndarray:
    return np.asarray(self.space.canonical(arch), dtype=np.int32).ravel()

  def init(self, key: jax.Array) -> State:
    """State: ``history`` int32[capacity, D] canonical forms, ``count``, ``num_told``."""
    probe = np.asarray(sample_archs(self.space, key, 1))[0]
    width = self._canon(probe).size
    return {"history": np.zeros((self.capacity, width), np.int32),
            "count": np.asarray(0, np.int64), "num_told": np.asarray(0, np.int64)}

  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """``batch_size`` new architectures (int32[B, *arch_shape]) and the new state."""
    history = np.asarray(state["history"])
    count = int(state["count"])
    seen = ({row.tobytes() for row in history[:min(count, self.capacity)]}
            if self.dedupe else set())
    chosen: list[np.ndarray] = []
    chosen_canon: list[np.ndarray] = []
    rejected = 0
    attempt = 0
    while len(chosen) < self.batch_size:
      block = np.asarray(sample_archs(self.space, fold_key(key, np.int32(attempt)),
                                      self.batch_size))
      attempt += 1
      for arch in block:
        canon = self._canon(arch)
        tag = canon.tobytes()
        if self.dedupe and tag in seen and rejected < self.max_retries:
          rejected += 1
          continue
        seen.add(tag)
        chosen.append(arch)
        chosen_canon.append(canon)
        rejected = 0
        if len(chosen) == self.batch_size:
          break
    history = history.copy()
    slots = (count + np.arange(self.batch_size)) % self.capacity
    if self.batch_size > self.capacity:  # only the newest fit
      slots, chosen_canon = slots[-self.capacity:], chosen_canon[-self.capacity:]
    history[slots] = np.stack(chosen_canon)
    new_state = {"history": history, "count": np.asarray(count + self.batch_size, np.int64),
                 "num_told": np.asarray(state["num_told"], np.int64)}
    return np.stack(chosen).astype(np.int32), new_state

  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """Random search learns nothing; counts the told archs."""
    archs, _ = check_tell(self.space, self.name, archs, scores)
    return {**state, "num_told": np.asarray(int(state["num_told"]) + len(archs), np.int64)}

"""Regularized (ageing) evolution, Real et al., AAAI 2019, Algorithm 1.

The first ``population_size`` asks are uniform random samples. After that each
child comes from a tournament: ``sample_size`` members of the population are
drawn uniformly *with replacement* (as in the paper's Algorithm 1 and the
NAS-Bench-201 reference code ``R_EA.py``), the one with the best search score is
the parent, and the child is ``space.mutate(parent)`` (one decision changed).
Every told architecture joins the population and the oldest member leaves
(ageing), so the population is a ring buffer of the last ``population_size``
told architectures.

Defaults: population 10 and sample size 3, the settings of the NAS-Bench-201
paper's REA baseline (``scripts-search/NAS-Bench-201-algos/R-EA.sh``:
``--ea_population 10``, sample size 3 in its usage line) and of the simulated
baseline in the data README.

Example:
    The first ``population_size`` asks are random; after that each child is a
    one-edit mutation of the best of ``sample_size`` random members:

    >>> from nas_jax.spaces import get_space
    >>> strategy = RegularizedEvolution(get_space("nb201"), {"population_size": 3, "sample_size": 2})
    >>> state = strategy.init(jax.random.key(0))
    >>> for r in range(5):
    ...   archs, state = strategy.ask(state, jax.random.fold_in(jax.random.key(1), r))
    ...   state = strategy.tell(state, archs, np.array([80.0 + r]))
    ...   print(archs[0])
    [2 1 0 4 1 0]
    [4 1 0 4 2 4]
    [2 3 3 1 3 0]
    [2 4 3 1 3 0]
    [2 3 2 1 3 0]
    >>> state["pop_archs"].shape, int(state["num_told"])
    ((3, 6), 5)
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import State, Strategy
from nas_jax.strategies.random_search import check_int, check_tell, sample_archs, split_key


@functools.partial(jax.jit, static_argnames=("space", "n", "sample_size"))
def _children(space: SearchSpace, key: jax.Array, pop_archs: jax.Array,
              pop_scores: jax.Array, size: jax.Array, n: int,
              sample_size: int) -> jax.Array:
  """``n`` tournament children, int32[n, *arch_shape].

  Each is ``space.mutate`` of the best (highest ``pop_scores``) of
  ``sample_size`` members drawn with replacement from the first ``size``
  (>= 1) population slots.
  """

  def child(k):
    k_pick, k_mutate = jax.random.split(k)
    # floor(u * size): uniform over the slots; compiles faster than randint
    u = jax.random.uniform(k_pick, (sample_size,))
    picks = jnp.minimum((u * size).astype(jnp.int32), size - 1)
    parent = pop_archs[picks[jnp.argmax(pop_scores[picks])]]
    return space.mutate(k_mutate, parent)

  if n == 1:  # no vmap: a smaller program that compiles faster
    return child(key)[None].astype(jnp.int32)
  return jax.vmap(child)(jax.random.split(key, n)).astype(jnp.int32)


class RegularizedEvolution(Strategy):
  """Ageing evolution (registry name ``evolution``); works on any space.

  Args:
    space: any search space (uses ``sample`` and ``mutate``).
    config: ``population_size`` (default 10), ``sample_size`` (tournament
      size, 1..population_size, default 3), ``batch_size`` (children per ask,
      default 1).

  Example:
    >>> from nas_jax.spaces import get_space
    >>> RegularizedEvolution(get_space("nb201"), {"sample_size": 5}).config
    {'population_size': 10, 'sample_size': 5, 'batch_size': 1}
  """

  name = "evolution"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    return {
        "population_size": 10,  # NAS-Bench-201 R-EA.sh --ea_population 10
        "sample_size": 3,       # NAS-Bench-201 R-EA.sh usage "cifar10 3"; data README
        "batch_size": 1,
    }

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    self.population_size = check_int(self.config, "population_size", self.name, 1)
    self.sample_size = check_int(self.config, "sample_size", self.name, 1,
                                 self.population_size)
    self.batch_size = check_int(self.config, "batch_size", self.name, 1)

  def init(self, key: jax.Array) -> State:
    """State: ``pop_archs`` [P, *arch_shape], ``pop_scores`` [P], counters."""
    del key
    p = self.population_size
    return {"pop_archs": np.zeros((p, *self.space.arch_shape), np.int32),
            "pop_scores": np.full((p,), -np.inf),
            "num_asked": np.asarray(0, np.int64),
            "num_told": np.asarray(0, np.int64)}

  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """``batch_size`` archs: random while fewer than P were asked, else children."""
    asked, told = int(state["num_asked"]), int(state["num_told"])
    n, p = self.batch_size, self.population_size
    size = min(told, p)
    random_slots = (asked + np.arange(n) < p) | (size == 0)  # no parents yet: random
    if random_slots.all():
      archs = np.asarray(sample_archs(self.space, key, n))
    elif not random_slots.any():
      archs = np.asarray(self._evolve(key, state, size))
    else:  # a batch across the end of the random phase
      k_random, k_evolve = split_key(key, 2)
      randoms = np.asarray(sample_archs(self.space, k_random, n))
      children = np.asarray(self._evolve(k_evolve, state, size))
      archs = np.where(random_slots.reshape((n,) + (1,) * (randoms.ndim - 1)), randoms,
                       children)
    return archs.astype(np.int32), {**state, "num_asked": np.asarray(asked + n, np.int64)}

  def _evolve(self, key: jax.Array, state: State, size: int) -> jax.Array:
    # exact integer ranks instead of float64 scores (jax computes in float32)
    ranks = np.argsort(np.argsort(np.asarray(state["pop_scores"]), kind="stable"),
                       kind="stable").astype(np.int32)
    return _children(self.space, key, np.asarray(state["pop_archs"]), ranks,
                     np.int32(size), self.batch_size, self.sample_size)

  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """Adds the told archs to the population, removing the oldest members."""
    archs, scores = check_tell(self.space, self.name, archs, scores)
    told, p = int(state["num_told"]), self.population_size
    slots = (told + np.arange(len(archs))) % p
    keep = slots.size - min(slots.size, p)  # a batch larger than P: newest P survive
    pop_archs = np.array(state["pop_archs"], copy=True)
    pop_scores = np.array(state["pop_scores"], copy=True)
    pop_archs[slots[keep:]] = archs[keep:]
    pop_scores[slots[keep:]] = scores[keep:]
    return {**state, "pop_archs": pop_archs, "pop_scores": pop_scores,
            "num_told": np.asarray(told + len(archs), np.int64)}

"""The strategy protocol: ``init`` / ``ask`` / ``tell`` over an explicit state.

A strategy only *chooses* architectures. It never sees anything but the search
scores it is told (never a test accuracy). Its state is a pytree of arrays and
scalars, so the experiment loop checkpoints it with orbax and a resumed search
continues bit for bit.

Example:
    >>> from nas_jax.registry import get_space, get_strategy
    >>> space = get_space("nb201")
    >>> strategy = get_strategy("random")(space, {"batch_size": 4})
    >>> state = strategy.init(jax.random.key(0))
    >>> archs, state = strategy.ask(state, jax.random.key(1))
    >>> archs.shape, archs.dtype
    ((4, 6), dtype('int32'))
    >>> state = strategy.tell(state, archs, np.array([90.1, 85.0, 70.2, -np.inf]))  # -inf: failed
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

from nas_jax.spaces.base import SearchSpace

State = Any  # a pytree


class Strategy(abc.ABC):
  """Abstract search strategy.

  Args:
    space: the search space it samples from.
    config: strategy settings (a plain dict); unknown keys raise ``ValueError``.
  """

  name: str = "base"
  #: names of spaces it supports, or None for every space.
  supported_spaces: tuple[str, ...] | None = None

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    self.space = space
    self.config = {**self.default_config(), **(config or {})}
    unknown = set(self.config) - set(self.default_config())
    if unknown:
      raise ValueError(
          f"unknown {self.name} setting(s) {sorted(unknown)}; "
          f"allowed: {sorted(self.default_config())}")
    if self.supported_spaces is not None and space.name not in self.supported_spaces:
      raise ValueError(
          f"strategy {self.name!r} does not support space {space.name!r}; "
          f"use one of {list(self.supported_spaces)}")

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """Default settings, each with its source in a comment where it has one."""
    return {}

  @abc.abstractmethod
  def init(self, key: jax.Array) -> State:
    """Initial state (a pytree)."""

  @abc.abstractmethod
  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """Next architectures to evaluate: int32 ``[K, *space.arch_shape]``."""

  #: the runner's loop for it (``nas_jax.runner``); one-shot methods say "oneshot".
  kind = "ask_tell"
  #: what the runner passes to the constructor besides (space, config).
  needs: tuple[str, ...] = ()

  @abc.abstractmethod
  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """Feeds back search scores (higher is better) for the asked ``archs``.

    ``costs`` (when the caller knows them) holds float[K] arrays ``flops``
    and ``params`` of the asked architectures (``nas_jax.runner.costs``), for
    strategies that trade accuracy against size; the others ignore it.
    """

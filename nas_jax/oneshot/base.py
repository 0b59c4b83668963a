"""The one-shot protocol: methods that learn architecture parameters with the weights.

DARTS and BayesNAS do not *choose* architectures for an evaluator to score;
they train a relaxed supernet's weights and architecture parameters together
and read a discrete architecture off the parameters. They run under the same
runner as the ask/tell strategies (same config layers, progress bar, orbax
checkpoints, SIGKILL-safe resume, ``history.jsonl``, final training) through
this protocol over an explicit state pytree::

    state = method.init(key)
    for epoch in range(budget):                       # the budget counts epochs
      for step in range(method.steps_per_epoch()):
        state, metrics = method.step(state, fold_in(key_epoch, step))
      arch = method.derive(state)                     # int32 architecture of the space
      record = method.score(state, arch, key_score)   # its search score and raw metrics
      summary = method.summary(state)                 # JSON summary of the arch parameters
      -> one history line per epoch

Everything that changes during the search (weights, architecture parameters,
both optimizer states, the data position) lives in ``state``, and batches are
pure functions of ``(seed, epoch, step)``, so a run killed at any point and
resumed from a checkpoint writes the same history as an uninterrupted one.

A method is registered under ``nas_jax.registry.STRATEGIES`` like the
choosers (``--strategy darts``); its ``kind = "oneshot"`` tells the runner to
use the one-shot loop.

Example:
    >>> from nas_jax import registry
    >>> DARTS = registry.get_strategy("darts")
    >>> issubclass(DARTS, OneShotMethod), DARTS.kind
    (True, 'oneshot')

  Driving one by hand (not run here: a step compiles the relaxed network's
  forward and backward passes, tens of seconds)::

    method = DARTS(registry.get_space("nb201"), {"steps_per_epoch": 2}, data=data)
    state = method.init(jax.random.key(0))
    state, metrics = method.step(state, jax.random.key(1))
    arch = method.derive(state)
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

from nas_jax.spaces.base import SearchSpace

State = Any  # a pytree


class OneShotMethod(abc.ABC):
  """Abstract one-shot method.

  Args:
    space: the search space whose architectures it derives.
    config: the method's settings (plain dict); unknown keys raise
      ``ValueError``.
    data: the task's data (``nas_jax.tasks``), loaded by the runner.

  Attributes:
    kind: ``"oneshot"`` (the runner's loop for it).
    needs: what the runner must pass to the constructor (``"data"``).
    supported_spaces: names of the spaces it runs on (None: any space whose
      network family has a continuous relaxation).
  """

  kind = "oneshot"
  name: str = "base"
  needs: tuple[str, ...] = ("data",)
  supported_spaces: tuple[str, ...] | None = None

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None, *, data: Any = None):
    self.space = space
    defaults = self.default_config()
    self.config = {**defaults, **(config or {})}
    unknown = set(self.config) - set(defaults)
    if unknown:
      raise ValueError(f"unknown {self.name} setting(s) {sorted(unknown)}; allowed: {sorted(defaults)}")
    if self.supported_spaces is not None and space.name not in self.supported_spaces:
      raise ValueError(f"strategy {self.name!r} does not support space {space.name!r}; "
                       f"use one of {list(self.supported_spaces)}")
    self.data = data

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """Default settings, each with its source in a comment where it has one."""
    return {}

  @abc.abstractmethod
  def init(self, key: jax.Array) -> State:
    """Initial state: weights, architecture parameters, optimizer states, data position."""

  @abc.abstractmethod
  def steps_per_epoch(self) -> int:
    """Search steps in one epoch (the unit of the budget)."""

  @abc.abstractmethod
  def step(self, state: State, key: jax.Array) -> tuple[State, dict[str, float]]:
    """One search step (weights and architecture parameters).

    Returns:
      ``(state, metrics)``: scalar training metrics (``train_loss``,
      ``train_acc``, ...), averaged over the epoch by the runner.
    """

  @abc.abstractmethod
  def derive(self, state: State) -> np.ndarray:
    """The discrete architecture (int32, ``space.arch_shape``) the state stands for."""

  @abc.abstractmethod
  def score(self, state: State, arch: np.ndarray, key: jax.Array) -> dict[str, Any]:
    """The derived architecture's search score under the trained weights.

    Returns:
      A dict with ``search_score`` (higher is better) and the raw metrics it
      comes from (e.g. ``valid_acc``, ``valid_loss``).
    """

  def summary(self, state: State) -> dict[str, Any]:
    """A JSON summary of the architecture parameters (for the history line)."""
    del state
    return {}

"""The evaluator protocol: architectures in, search scores and costs out.

Search scores (``search_score``: validation accuracy in percent, higher is
better) are what strategies see. Anything for reporting only (a tabular test
accuracy, a learning curve) goes into ``Evaluation.info`` and never reaches a
strategy. One-shot evaluators (weight-sharing supernets) own the supernet
training; their state is a pytree that the experiment loop checkpoints.

Example:
    >>> from nas_jax.registry import get_evaluator, get_space
    >>> space = get_space("nb201")
    >>> evaluator = get_evaluator("tabular")(space, {"noisy": False})
    >>> ev_state = evaluator.init(jax.random.key(0))
    >>> archs = np.array([[3, 3, 3, 1, 3, 2], [0, 0, 0, 0, 0, 0]], np.int32)
    >>> result, ev_state = evaluator.evaluate(ev_state, archs, jax.random.key(1))
    >>> result.scores  # what a strategy sees: validation accuracy, %
    array([91.6067,  9.712 ])
    >>> result.info[0]["test_acc"]  # report only
    94.3733
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import numpy as np

from nas_jax.spaces.base import SearchSpace


@dataclasses.dataclass
class Evaluation:
  """What an evaluator returns for K architectures.

  Attributes:
    scores: float[K] search scores (validation accuracy, %), higher is better.
    costs: float[K] cost of each evaluation in seconds (measured or simulated).
    info: K dicts of report-only extras (e.g. ``test_acc`` of a tabular
      benchmark, ``curve``: a per-epoch learning curve). Never shown to a
      strategy.
  """
  scores: np.ndarray
  costs: np.ndarray
  info: list[dict[str, Any]]


class Evaluator(abc.ABC):
  """Abstract evaluator.

  Args:
    space: the search space of the architectures it scores.
    config: evaluator settings (plain dict).
  """

  name: str = "base"
  #: what the runner passes to the constructor besides (space, config):
  #: ``"data"`` (the task's loaded data, keyword ``data``) and/or ``"workdir"``
  #: (a directory of its own for per-evaluation checkpoints, keyword ``workdir``).
  needs: tuple[str, ...] = ()
  #: True when ``evaluate`` leaves the state unchanged and its scores depend
  #: only on (architectures, key): then a resumed search replays history lines
  #: written after the last checkpoint instead of evaluating them again
  #: (``nas_jax.runner.resume``). A supernet, whose weights train between
  #: queries, is not replayable.
  replayable: bool = False

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    self.space = space
    self.config = dict(config or {})

  @classmethod
  def fixed_dataset(cls, settings: dict[str, Any]) -> str | None:
    """The dataset this evaluator's figures are of, whatever the run's data, or None.

    A benchmark table returns its dataset (``"cifar10"``): the runner then
    names that dataset in the run's files and refuses another one.
    """
    del settings
    return None

  def prepare(self) -> None:
    """Checks everything that can fail before the search (data sizes, files).

    The runner calls it before it writes anything to the workdir, so bad
    input never leaves a half-made workdir. Default: nothing to check.
    """

  def cost_network(self) -> dict[str, Any] | None:
    """The network whose FLOPs/parameters describe an architecture, or None.

    None (the default): the child network with the experiment's final-training
    settings on its data. A benchmark table returns its own network
    (``{"num_classes", "init_channels", "layers", "input_shape"}``).
    """
    return None

  def init(self, key: jax.Array) -> Any:
    """Initial state (a pytree; e.g. supernet parameters). Default: empty."""
    del key
    return {}

  @abc.abstractmethod
  def evaluate(self, state: Any, archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, Any]:
    """Scores ``archs`` (int32 ``[K, *arch_shape]``)."""

  def report(self, arch: np.ndarray) -> dict[str, Any] | None:
    """Final figures known without training, for reporting only.

    A tabular benchmark returns e.g. ``{"test_acc": 94.37}``; the default
    ``None`` tells the experiment loop to train ``arch`` from scratch
    (``nas_jax.train.train_child``) to get its final test accuracy.
    """
    del arch
    return None

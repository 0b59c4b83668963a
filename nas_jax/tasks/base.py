"""The task contract: data, loss, metric, and how the metric becomes a search score.

A task sits below every strategy, evaluator and one-shot method: it loads the
data of a dataset spec, trains a child network for one epoch, evaluates it on
a split, and turns the raw validation metric into a *search score* (higher is
better; strategies only ever see that score). The raw metric (validation
accuracy in %, validation perplexity) is kept beside the score in the history.

Two tasks ship: ``images`` (``nas_jax.tasks.images``: classification, metric
``valid_acc`` in %, score = accuracy) and ``language_model``
(``nas_jax.tasks.language_model``: next-word prediction, metric ``valid_ppl``,
score = ENAS's reward ``80 / perplexity``). ``nas_jax.train.train_child`` runs
the epochs of any task: checkpoints, callbacks that stop a run, warm starts and
the learning curve are the same for both.

Contract of a task's *training state*: a dict pytree with at least ``params``
(the trainable parameters) and ``opt_state``; the task adds what it needs
(``batch_stats`` for images, nothing more for language models, whose hidden
state is reset at every epoch and so never checkpointed).

Example:
    >>> from nas_jax import tasks
    >>> task = tasks.get_task("images")
    >>> data = task.load("digits", train_size=64)
    >>> task.accepts(data), task.metric, task.score(97.5)
    (True, 'valid_acc', 97.5)
    >>> tasks.get_task("language_model").score(80.0)  # 80 / perplexity
    1.0
"""
from __future__ import annotations

import abc
from typing import Any

import jax


class Task(abc.ABC):
  """Abstract task.

  Attributes:
    name: registry name (``"images"``, ``"language_model"``).
    metric: the raw validation metric's key in learning curves and history
      (``"valid_acc"``, ``"valid_ppl"``).
    higher_is_better: whether a larger raw metric is better.
  """

  name: str
  metric: str
  higher_is_better: bool

  # --- data -----------------------------------------------------------------
  @abc.abstractmethod
  def load(self, spec: str, *, data_dir: str | None = None, **options: Any) -> Any:
    """Loads the data of a dataset spec (``"digits"``, ``"ptb"``, ...).

    Raises:
      ValueError: unknown spec, missing files (one line naming the fix).
    """

  @abc.abstractmethod
  def accepts(self, data: Any) -> bool:
    """Whether ``data`` is this task's data object."""

  @abc.abstractmethod
  def describe(self, data: Any) -> dict[str, Any]:
    """A small JSON description (name, sizes, a hash of the labels) for fingerprints."""

  @abc.abstractmethod
  def network_kwargs(self, data: Any) -> dict[str, Any]:
    """``build_child`` keywords fixed by the data (``num_classes`` / ``vocab_size``)."""

  @abc.abstractmethod
  def dummy_input(self, data: Any) -> jax.ShapeDtypeStruct:
    """The shape of one example batch of size 1 (costs, initialisation)."""

  # --- metric ---------------------------------------------------------------
  @abc.abstractmethod
  def score(self, metric: float) -> float:
    """The search score (higher is better) of a raw validation metric value."""

  # --- training -------------------------------------------------------------
  @abc.abstractmethod
  def default_train_config(self) -> dict[str, Any]:
    """Training defaults, each with its source in a comment."""

  @abc.abstractmethod
  def resolve_train_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults updated by ``config``, checked.

    Raises:
      ValueError: an unknown key or a value out of range (one line naming it).
    """

  @abc.abstractmethod
  def network_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
    """``build_child`` keywords taken from a resolved training config (sizes)."""

  @abc.abstractmethod
  def init_variables(self, model: Any, key: jax.Array, data: Any) -> dict[str, Any]:
    """The model's variables (``params`` and the task's other collections)."""

  @abc.abstractmethod
  def init_state(self, model: Any, variables: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The training state (a dict pytree with ``params`` and ``opt_state``)."""

  @abc.abstractmethod
  def num_train_steps(self, data: Any, cfg: dict[str, Any]) -> int:
    """Training steps per epoch (0: the data is too small; ``train_child`` says so)."""

  @abc.abstractmethod
  def train_epoch(self, model: Any, state: dict[str, Any], data: Any, cfg: dict[str, Any],
                  epoch: int, key: jax.Array, data_seed: int, *,
                  nonfinite_before: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains one epoch (0-based ``epoch``).

    ``nonfinite_before`` is the number of steps skipped as non-finite in the
    earlier epochs of the run; the run diverges when that plus this epoch's
    count exceeds ``cfg["max_nonfinite"]``.

    Batches and per-step keys must be functions of ``(data_seed, epoch,
    step)`` and ``key`` so that a resumed run repeats an uninterrupted one.

    Returns:
      ``(state, metrics)``: metrics hold the curve entries of the epoch (at
      least ``lr``, ``train_loss`` and the task's training metric), plus
      ``nonfinite`` (skipped steps this epoch), ``step_times`` (seconds per
      step, the first compile included) for ``train_child`` to pop.

    Raises:
      RuntimeError: the run diverged (too many non-finite steps).
    """

  @abc.abstractmethod
  def evaluate(self, model: Any, state: dict[str, Any], data: Any, split: str,
               cfg: dict[str, Any]) -> dict[str, float]:
    """Loss and metric on every example of ``split``: ``{"loss": ..., <metric>: ...}``.

    The metric key is the task's metric without the ``valid_`` prefix
    (``"acc"``, ``"ppl"``).
    """

  def has_split(self, data: Any, split: str | None) -> bool:
    """Whether ``split`` exists and is not empty (default: it is not None)."""
    return split is not None

"""Tasks: data, loss, metric, and how the metric becomes a search score.

``get_task(name)`` returns a task by name (``"images"``, ``"language_model"``);
``task_for_dataset(spec)`` the task a dataset spec belongs to (``"ptb"`` is
language modelling, every other spec is an image dataset); ``task_of(data)``
the task of loaded data. The contract is ``nas_jax.tasks.base.Task``.

Example:
    >>> from nas_jax import tasks
    >>> tasks.task_for_dataset("digits").name
    'images'
    >>> tasks.task_for_dataset("ptb").name
    'language_model'
"""
from __future__ import annotations

import importlib
from typing import Any

from nas_jax.tasks.base import Task  # noqa: F401

TASKS: dict[str, str] = {
    "images": "nas_jax.tasks.images:ImageClassification",
    "language_model": "nas_jax.tasks.language_model:LanguageModel",
}
#: Dataset specs of the language-modelling task (every other spec is images).
LANGUAGE_DATASETS = ("ptb",)
_INSTANCES: dict[str, Task] = {}


def get_task(name: str) -> Task:
  """The task registered as ``name`` (one shared instance; tasks are stateless).

  Raises:
    ValueError: unknown name; the message lists the known ones.
  """
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
  if name not in _INSTANCES:
    module, attr = TASKS[name].split(":")
    _INSTANCES[name] = getattr(importlib.import_module(module), attr)()
  return _INSTANCES[name]


def task_name_for_dataset(spec: str) -> str:
  """``"language_model"`` for ``ptb``, else ``"images"`` (no import)."""
  return "language_model" if spec in LANGUAGE_DATASETS else "images"


def task_for_dataset(spec: str) -> Task:
  """The task of a dataset spec."""
  return get_task(task_name_for_dataset(spec))


def task_of(data: Any) -> Task:
  """The task whose data object ``data`` is.

  Raises:
    ValueError: no task accepts it.
  """
  for name in TASKS:
    try:
      task = get_task(name)
    except ImportError:  # a task module that is not installed
      continue
    if task.accepts(data):
      return task
  raise ValueError(f"dataset must be a task's data, an ImageDataset (nas_jax.data.load_dataset) or "
                   f"a corpus (nas_jax.tasks.get_task('language_model').load('ptb')), got "
                   f"{type(data).__name__}")

"""Networks for each search space: weight-sharing supernets, continuous
relaxations and fixed child networks.

``build_child`` is the one entry point the training loop uses for every space;
each space's module (``nas_jax.networks.<space>``) provides ``build_child``
with the same signature.

Example:
    >>> model = build_child(space, arch, num_classes=10, init_channels=16, layers=8)
    >>> variables = model.init({"params": key}, x, train=False)
    >>> logits, aux_logits = model.apply(variables, x, train=False)
"""
from __future__ import annotations

import importlib
from typing import Any

_FAMILIES = {"nasnet": "nas_jax.networks.nasnet", "nb201": "nas_jax.networks.nb201"}


def family(space_name: str):
  """The network module of a space (``nas_jax.networks.<space>``)."""
  if space_name not in _FAMILIES:
    raise ValueError(f"no networks for space {space_name!r}; known: {sorted(_FAMILIES)}")
  return importlib.import_module(_FAMILIES[space_name])


def build_child(space, arch, **config: Any):
  """The fixed child network of ``arch`` (a flax ``nn.Module``).

  Args:
    space: the ``SearchSpace`` of ``arch``.
    arch: int32 architecture array of that space.
    **config: ``num_classes``, ``init_channels``, ``layers``, ``auxiliary``
      (bool), ... as documented by the space's network module.

  Returns:
    A module whose ``__call__(x, *, train: bool, drop_prob: float = 0.0)``
    returns ``(logits, aux_logits_or_None)``; variable collections ``params``
    and ``batch_stats``; rng stream ``drop_path`` when ``drop_prob > 0``.
  """
  return family(space.name).build_child(space, arch, **config)


#: The tasks (``nas_jax.tasks``) each space's networks serve, declared with the
#: family's registration so that configs are checked without importing the
#: networks; ``tests`` check them against each family's own ``tasks``.
SERVED_TASKS = {"nasnet": ("images",), "nb201": ("images",), "darts": ("images",),
                "rnn": ("language_model",)}


def served_tasks(space_name: str) -> tuple[str, ...] | None:
  """The tasks the networks of ``space_name`` serve, or None when unknown.

  Example:
    >>> served_tasks("rnn")
    ('language_model',)
  """
  return SERVED_TASKS.get(space_name)

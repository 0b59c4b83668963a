"""Networks for each search space: weight-sharing supernets, continuous
relaxations and fixed child networks.

Every search space with networks has one *family* object
(``nas_jax.networks.base.NetworkFamily``): ``family(space_name)`` returns it.
It builds the fixed child network of an architecture (``build_child``, the one
entry point the training loop uses for every space) and offers, where the
space has them, a weight-sharing supernet (``.supernet``, a
``base.WeightSharing``) and a continuous relaxation (``.continuous``, a
``base.ContinuousRelaxation``); a capability the family lacks is None. Each
space's package ``nas_jax.networks.<space>`` defines its family as the module
attribute ``FAMILY``; it is imported on first use.

Example:
    >>> from nas_jax.spaces import get_space
    >>> fam = family("nb201")
    >>> cfg = fam.supernet.config(num_classes=10, init_channels=4, layers=1)
    >>> params, stats = fam.supernet.init(jax.random.key(0), cfg, (8, 8, 1))
    >>> sum(p.size for p in jax.tree_util.tree_leaves(params))  # every op of every edge
    25654
    >>> arch = [3, 1, 2, 0, 4, 3]
    >>> model = build_child(get_space("nb201"), arch, num_classes=10, init_channels=4, layers=1)
    >>> variables = fam.supernet.child_variables(arch, params, stats, cfg)  # the child's share
    >>> sum(p.size for p in jax.tree_util.tree_leaves(variables["params"]))
    11374
    >>> sorted(variables["params"]["block_0"])  # the cell's convolutions: edges 0, 2 and 5
    ['e0', 'e2', 'e5']

  ``model.apply(variables, x, train=False)`` then computes what the supernet
  computes for ``arch`` (``nas_jax.networks.nb201.child`` runs a child).
"""
from __future__ import annotations

import importlib
from typing import Any

from nas_jax.networks.base import ContinuousRelaxation, NetworkFamily, WeightSharing

# space name -> the module whose ``FAMILY`` is the space's network family
_FAMILIES = {"nasnet": "nas_jax.networks.nasnet", "nb201": "nas_jax.networks.nb201",
             "darts": "nas_jax.networks.darts", "rnn": "nas_jax.networks.rnn",
             "petridish": "nas_jax.networks.petridish",
             "petridish_cell": "nas_jax.networks.petridish_cell", "macro": "nas_jax.networks.macro"}

#: The tasks (``nas_jax.tasks``) each space's networks serve, declared with the
#: family's registration so that configs are checked without importing the
#: networks; ``tests`` check them against each family's own ``tasks``.
SERVED_TASKS = {"nasnet": ("images",), "nb201": ("images",), "darts": ("images",),
                "rnn": ("language_model",), "petridish": ("images",),
                "petridish_cell": ("images",), "macro": ("images",)}

__all__ = ["ContinuousRelaxation", "NetworkFamily", "SERVED_TASKS", "WeightSharing", "build_child", "family",
           "known_families", "served_tasks"]


def known_families() -> tuple[str, ...]:
  """The names of the spaces that have networks."""
  return tuple(sorted(_FAMILIES))


def family(space_name: str) -> NetworkFamily:
  """The network family of a space (the ``FAMILY`` of ``nas_jax.networks.<space>``).

  Args:
    space_name: the space's registry name, e.g. "nasnet" or "nb201".

  Returns:
    An object satisfying ``NetworkFamily``: ``name``, ``tasks``, ``supernet``
    (or None), ``continuous`` (or None), ``build_child(space, arch, **config)``.

  Example:
    >>> family("nb201").supernet.config(init_channels=16, layers=5)
    SupernetConfig(num_classes=10, init_channels=16, layers=5, num_nodes=4)
  """
  if space_name not in _FAMILIES:
    raise ValueError(f"no networks for space {space_name!r}; spaces with networks: {list(known_families())}")
  module = importlib.import_module(_FAMILIES[space_name])
  fam = getattr(module, "FAMILY", None)
  if fam is None:
    raise ValueError(f"{_FAMILIES[space_name]} defines no FAMILY; it must set FAMILY to its "
                     "networks.base.NetworkFamily object")
  return fam


def build_child(space, arch, **config: Any):
  """The fixed child network of ``arch`` (a flax ``nn.Module``).

  Args:
    space: the ``SearchSpace`` of ``arch``.
    arch: int32 architecture array of that space.
    **config: ``num_classes``, ``init_channels``, ``layers``, ``auxiliary``
      (bool), ... as documented by the space's network package.

  Returns:
    Image families: a module whose ``__call__(x, *, train: bool, drop_prob:
    float = 0.0)`` returns ``(logits, aux_logits_or_None)``; variable
    collections ``params`` and ``batch_stats``; rng stream ``drop_path`` when
    ``drop_prob > 0``. Language-model families: see
    ``nas_jax.tasks.language_model``.
  """
  return family(space.name).build_child(space, arch, **config)


def served_tasks(space_name: str) -> tuple[str, ...] | None:
  """The tasks the networks of ``space_name`` serve, or None when unknown.

  Example:
    >>> served_tasks("rnn"), served_tasks("nb201")
    (('language_model',), ('images',))
  """
  return SERVED_TASKS.get(space_name)

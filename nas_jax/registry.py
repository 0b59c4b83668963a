"""Name -> implementation registries for spaces, strategies and evaluators.

Entries are ``"module:attribute"`` strings imported on first use, so importing
``nas_jax`` stays cheap and a plug-in only needs a line here (or a call to
``register``).

Example:
    >>> from nas_jax import registry
    >>> space = registry.get_space("nb201")
    >>> Strategy = registry.get_strategy("evolution")
    >>> space.name, Strategy.__name__
    ('nb201', 'RegularizedEvolution')
    >>> registry.get_evaluator("table")
    Traceback (most recent call last):
    ...
    ValueError: unknown evaluator 'table'; choose one of ['lm_supernet', 'scratch', 'supernet', 'tabular'...]
"""
from __future__ import annotations

import importlib
from typing import Any

SPACES: dict[str, str] = {
    "nasnet": "nas_jax.spaces.nasnet:NasNetSpace",
    "nb201": "nas_jax.spaces.nb201:NB201Space",
    "darts": "nas_jax.spaces.darts:DartsSpace",
    "rnn": "nas_jax.spaces.rnn:RNNSpace",
    "petridish": "nas_jax.spaces.petridish:PetridishSpace",
    "petridish_cell": "nas_jax.spaces.petridish_cell:PetridishCellSpace",
    "macro": "nas_jax.spaces.macro:MacroSpace",
}

STRATEGIES: dict[str, str] = {
    "random": "nas_jax.strategies.random_search:RandomSearch",
    "evolution": "nas_jax.strategies.evolution:RegularizedEvolution",
    "reinforce": "nas_jax.strategies.reinforce:Reinforce",
    "nao": "nas_jax.strategies.nao:NAO",
    "enas": "nas_jax.strategies.enas:ENAS",
    # one-shot methods (kind "oneshot": nas_jax.oneshot.base)
    "darts": "nas_jax.oneshot.darts:DARTS",
    "bayesnas": "nas_jax.oneshot.bayesnas:BayesNAS",
    "enas_oneshot": "nas_jax.oneshot.enas:ENASOneShot",
    # growth methods (kind "growth": nas_jax.runner.growth)
    "petridish": "nas_jax.growth.petridish:Petridish",
}

EVALUATORS: dict[str, str] = {
    "tabular": "nas_jax.evaluators.tabular:TabularEvaluator",
    "supernet": "nas_jax.evaluators.supernet:SupernetEvaluator",
    "scratch": "nas_jax.evaluators.scratch:ScratchEvaluator",
    "lm_supernet": "nas_jax.evaluators.lm_supernet:LMSupernetEvaluator",
}

_TABLES = {"space": SPACES, "strategy": STRATEGIES, "evaluator": EVALUATORS}


def register(kind: str, name: str, target: str) -> None:
  """Adds ``name -> "module:attribute"`` to the ``kind`` registry."""
  _TABLES[kind][name] = target


def lookup(kind: str, name: str) -> Any:
  """Imports and returns the object registered as ``name``.

  Raises:
    ValueError: unknown name; the message lists the known ones.
  """
  table = _TABLES[kind]
  if name not in table:
    raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}")
  module, attr = table[name].split(":")
  return getattr(importlib.import_module(module), attr)


def get_space(name: str):
  """A search-space instance by name."""
  return lookup("space", name)()


def get_strategy(name: str):
  """A strategy class by name (construct with ``cls(space, config)``)."""
  return lookup("strategy", name)


def get_evaluator(name: str):
  """An evaluator class by name (construct with ``cls(space, config, ...)``)."""
  return lookup("evaluator", name)

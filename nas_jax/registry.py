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
    >>> registry.get_space("rnn", num_nodes=9, output="mean")  # constructor arguments: space options
    RNNSpace(num_nodes=9, output='mean')
    >>> registry.space_options("macro")
    ['num_layers']
    >>> registry.get_evaluator("table")
    Traceback (most recent call last):
    ...
    ValueError: unknown evaluator 'table'; choose one of ['lm_supernet', 'scratch', 'supernet', 'tabular'...]
"""
from __future__ import annotations

import importlib
import inspect
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


def space_options(name: str) -> list[str] | None:
  """The options of space ``name``: its constructor's keyword arguments (None: it takes any).

  Example:
    >>> space_options("rnn"), space_options("nasnet")
    (['num_nodes', 'output'], [])
  """
  params = inspect.signature(lookup("space", name)).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params
          if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def space_option_defaults(name: str) -> dict[str, Any]:
  """The default values of space ``name``'s options (its constructor's keyword arguments that have one).

  Example:
    >>> space_option_defaults("rnn"), space_option_defaults("nasnet")
    ({'num_nodes': 12, 'output': 'loose_ends'}, {})
  """
  params = inspect.signature(lookup("space", name)).parameters.values()
  return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
          and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def check_space_options(name: str, options: Any) -> dict[str, Any]:
  """``options`` as a dict, checked against the options of space ``name`` (not their values).

  Raises:
    ValueError: not a dict, or an option the space's constructor does not
      take; the message names the space, the option and the allowed ones.

  Example:
    >>> check_space_options("macro", {"num_nodes": 9})
    Traceback (most recent call last):
    ...
    ValueError: space 'macro' has no option 'num_nodes'; its options: ['num_layers']
  """
  if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
    raise ValueError(f"options of space {name!r} must be a dict of its constructor's keyword arguments, "
                     f"got {options!r}")
  allowed = space_options(name)
  unknown = [] if allowed is None else sorted(set(options) - set(allowed))
  if unknown:
    what = f"option {unknown[0]!r}" if len(unknown) == 1 else f"options {unknown}"
    raise ValueError(f"space {name!r} has no {what}; " +
                     (f"its options: {allowed}" if allowed else "it takes no options"))
  return dict(options)


def get_space(name: str, **options: Any):
  """A search-space instance by name, built with ``options`` (its constructor's keyword arguments).

  Raises:
    ValueError: an unknown name or option (``check_space_options``), or a bad
      value (the space's own message).
  """
  return lookup("space", name)(**check_space_options(name, options))


def get_strategy(name: str):
  """A strategy class by name (construct with ``cls(space, config)``)."""
  return lookup("strategy", name)


def get_evaluator(name: str):
  """An evaluator class by name (construct with ``cls(space, config, ...)``)."""
  return lookup("evaluator", name)

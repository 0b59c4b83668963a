"""Experiment configs: defaults, checks, fingerprints, config files and ``--set``.

A config is a nested dict of JSON values: ``default_config()`` holds the
library's defaults, ``experiments/configs/default.py`` and
``configs/<strategy>.py`` refine them, then ``--config FILE``, the flags and
``--set FIELD=VALUE`` (``merge``, ``load_config_file``, ``apply_overrides``).
``validate_config`` checks one and resolves ``evaluator.name = "auto"``;
``fingerprint`` names the experiment (a workdir holds one experiment).

``space_options`` (a dict, default ``{}``) are keyword arguments of the
space's constructor (``registry.get_space(space, **space_options)``): the
sizes of spaces that have them, e.g. ``{"num_nodes": 9, "output": "mean"}``
for DARTS's recurrent cell on ``rnn`` (default: ENAS's 12 nodes, loose
ends), ``{"num_layers": 24}`` on ``macro`` (default 12), ``stages``,
``layers_per_stage`` / ``cells_per_stage`` and ``max_layers`` on the
Petridish spaces; on the command line ``--set space_options.num_nodes=9``.
They are part of the experiment (its fingerprint, ``best_arch.json``,
``result.json``); an option the space does not take is refused with the
ones it does (``registry.space_options``). An option set to the
constructor's default is dropped (``validate_space_options``), so
``{"num_layers": 12}`` on ``macro`` is the same experiment as ``{}``.

Example:
    >>> cfg = validate_config(merge(default_config(), {"space": "nb201", "budget": 20}))
    >>> cfg["evaluator"]["name"], len(fingerprint(cfg))
    ('tabular', 16)
    >>> space_label(validate_config(merge(default_config(), {"space": "macro", "space_options": {"num_layers": 6}})))
    'macro(num_layers=6)'
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

from nas_jax import registry
from nas_jax.runner import references

#: Top-level keys that do not change the results (left out of the fingerprint).
NOT_FINGERPRINTED = ("data_dir", "checkpoint", "references")


def default_config() -> dict[str, Any]:
  """The library's built-in defaults (``experiments/configs/default.py`` refines them).

  Returns:
    A nested dict; see the module docstring of ``experiments/configs/default.py``
    for every field. ``budget`` counts evaluated architectures for the
    ask/tell strategies and epochs for the one-shot methods (``darts``).

  Example:
    >>> default_config()["budget"]
    8
  """
  return {
      "seed": 0,
      "space": "nasnet",
      "space_options": {},  # keyword arguments of the space's constructor (module docstring)
      "dataset": "digits",
      "data_dir": None,
      "data": {},           # extra arguments of the task's loader (valid_fraction, ...)
      "budget": 8,          # architectures (ask/tell) or epochs (one-shot)
      "strategy": {"name": "random"},
      # "auto": the space's default evaluator. Per-evaluator settings live
      # under the evaluator's name.
      "evaluator": {"name": "auto"},
      "final": {"epochs": 10},
      # Figures beside the found cell's (nas_jax.runner.references): a published
      # cell trained with the final recipe, a scikit-learn model on the pixels.
      "references": {"cell": None, "classical": None},
      "checkpoint": {"interval_s": 30.0, "keep": 2},
  }


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def resolve_evaluator_name(config: dict[str, Any]) -> str:
  """The evaluator ``config["evaluator"]["name"]`` stands for.

  "auto" is the space's ``default_evaluator`` (``tabular`` on ``nb201``,
  ``supernet`` on ``nasnet``, ``scratch`` where a space has neither).

  Example:
    >>> resolve_evaluator_name({"space": "nb201", "evaluator": {"name": "auto"}})
    'tabular'
  """
  name = config["evaluator"]["name"]
  if name != "auto":
    return name
  return getattr(registry.lookup("space", config["space"]), "default_evaluator", "scratch")


def validate_config(config: Any, *, search: bool = True) -> dict[str, Any]:
  """Checks a config and returns a resolved deep copy.

  The evaluator name "auto" is resolved (``resolve_evaluator_name``) and the
  names are checked against the registry; settings of the chosen strategy and
  evaluator are checked when they are constructed. For a search on a
  benchmark table, the dataset is the table's (the default dataset becomes
  it; another one is refused).

  Args:
    config: nested dict as returned by ``get_config()`` of a config file.
    search: the config runs a search (False: a retraining, which has no
      evaluator, so the table's dataset rule does not apply).

  Returns:
    A resolved deep copy.

  Raises:
    ValueError: a missing, unknown or malformed field; the message names it.

  Example:
    >>> cfg = validate_config(default_config())
    >>> cfg["evaluator"]["name"]
    'supernet'
  """
  if not isinstance(config, dict):
    raise ValueError(f"config must be a dict, got {type(config).__name__}")
  cfg = copy.deepcopy(config)
  allowed = set(default_config())
  unknown = sorted(set(cfg) - allowed)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; allowed: {sorted(allowed)}")
  for k, v in default_config().items():
    cfg.setdefault(k, copy.deepcopy(v))
  if not _is_int(cfg["seed"]) or not 0 <= cfg["seed"] < 2**63:
    raise ValueError(f"seed must be a non-negative integer below 2**63, got {cfg['seed']!r}")
  if not _is_int(cfg["budget"]) or cfg["budget"] < 1:
    raise ValueError(f"budget must be a positive integer (architectures to evaluate, or epochs "
                     f"of a one-shot method), got {cfg['budget']!r}")
  cfg["seed"], cfg["budget"] = int(cfg["seed"]), int(cfg["budget"])
  for k in ("space", "dataset"):
    if not isinstance(cfg[k], str) or not cfg[k]:
      raise ValueError(f"{k} must be a non-empty string, got {cfg[k]!r}")
  if cfg["data_dir"] is not None and not isinstance(cfg["data_dir"], str):
    raise ValueError(f"data_dir must be a path string or None, got {cfg['data_dir']!r}")
  for k in ("data", "strategy", "evaluator", "final", "checkpoint"):
    if not isinstance(cfg[k], dict):
      raise ValueError(f"{k} must be a dict of settings, got {cfg[k]!r}")
  for k in ("strategy", "evaluator"):
    name = cfg[k].get("name")
    if not isinstance(name, str) or not name:
      raise ValueError(f"{k}.name must be a non-empty string, got {name!r}")
  if cfg["space"] not in registry.SPACES:
    raise ValueError(f"unknown space {cfg['space']!r}; choose one of {sorted(registry.SPACES)}")
  cfg["space_options"] = validate_space_options(cfg["space"], cfg["space_options"])
  if cfg["strategy"]["name"] not in registry.STRATEGIES:
    raise ValueError(f"unknown strategy {cfg['strategy']['name']!r}; "
                     f"choose one of {sorted(registry.STRATEGIES)}")
  ev = cfg["evaluator"]["name"]
  if ev != "auto" and ev not in registry.EVALUATORS:
    raise ValueError(f"unknown evaluator {ev!r}; choose 'auto' or one of "
                     f"{sorted(registry.EVALUATORS)}")
  for name, sub in cfg["evaluator"].items():
    if name != "name" and not isinstance(sub, dict):
      raise ValueError(f"evaluator.{name} must be a dict of {name} settings, got {sub!r}")
  cfg["evaluator"]["name"] = resolve_evaluator_name(cfg)
  kind = getattr(registry.lookup("strategy", cfg["strategy"]["name"]), "kind", "ask_tell")
  if search and kind == "ask_tell":
    _evaluator_dataset(cfg)
  check_task(cfg["space"], cfg["dataset"])
  epochs = cfg["final"].get("epochs", 0)
  if not _is_int(epochs) or epochs < 0:
    raise ValueError(f"final.epochs must be a non-negative integer (0 skips final "
                     f"training), got {epochs!r}")
  cfg["references"] = references.resolve(cfg["references"], cfg["space"])
  ck = {**default_config()["checkpoint"], **cfg["checkpoint"]}
  if set(ck) - {"interval_s", "keep"}:
    raise ValueError(f"unknown checkpoint setting(s) {sorted(set(ck) - {'interval_s', 'keep'})}; "
                     "allowed: ['interval_s', 'keep']")
  if not _is_number(ck["interval_s"]) or ck["interval_s"] < 0:
    raise ValueError(f"checkpoint.interval_s must be a number >= 0, got {ck['interval_s']!r}")
  if not _is_int(ck["keep"]) or ck["keep"] < 1:
    raise ValueError(f"checkpoint.keep must be an integer >= 1, got {ck['keep']!r}")
  cfg["checkpoint"] = ck
  try:
    json.dumps(cfg, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config must hold only JSON values (str, numbers, bool, None, "
                     f"lists, dicts): {e}") from None
  return cfg


#: The dataset a config names when it names none of its own (experiments/configs/default.py).
DEFAULT_DATASET = "digits"


def _evaluator_dataset(cfg: dict[str, Any]) -> None:
  """An evaluator whose figures are of one dataset (a benchmark table) fixes the run's dataset.

  The evaluator class declares it (``Evaluator.fixed_dataset(settings)``); the
  default dataset then becomes that one, and another one is refused.
  """
  name = cfg["evaluator"]["name"]
  cls = registry.lookup("evaluator", name)
  fixed_fn = getattr(cls, "fixed_dataset", None)
  settings = cfg["evaluator"].get(name, {})
  fixed = fixed_fn(settings if isinstance(settings, dict) else {}) if fixed_fn else None
  if fixed is None:
    return
  if cfg["dataset"] in (DEFAULT_DATASET, fixed):
    cfg["dataset"] = fixed
    return
  raise ValueError(f"dataset {cfg['dataset']!r} does not apply to the {name} evaluator, whose figures "
                   f"are of {fixed!r}; drop --dataset, or train on it with another --evaluator")


def validate_space_options(space: str, options: Any) -> dict[str, Any]:
  """The ``space_options`` of a config, checked: names against the space's
  constructor, values by building the space once; options equal to the
  constructor's default (same type and value) are dropped, so that spelling a
  default out names the same experiment as leaving it out.

  Raises:
    ValueError: ``space_options: `` and the problem, e.g. an option the space
      does not take (naming the ones it does) or the space's own message on a
      bad value.

  Example:
    >>> validate_space_options("rnn", {"num_nodes": 9, "output": "mean"})
    {'num_nodes': 9, 'output': 'mean'}
    >>> validate_space_options("macro", {"num_layers": 12}), validate_space_options("rnn", {"num_nodes": 12})
    ({}, {})
    >>> validate_space_options("rnn", {"num_layers": 9})
    Traceback (most recent call last):
    ...
    ValueError: space_options: space 'rnn' has no option 'num_layers'; its options: ['num_nodes', 'output']
  """
  try:
    options = registry.check_space_options(space, options)
    registry.get_space(space, **options)
  except (ValueError, TypeError) as e:
    raise ValueError(f"space_options: {e}") from None
  defaults = registry.space_option_defaults(space)
  return {k: v for k, v in options.items()
          if not (k in defaults and type(v) is type(defaults[k]) and v == defaults[k])}


def space_label(config: dict[str, Any]) -> str:
  """The space of a config, result or ``best_arch.json`` with its options: ``"macro(num_layers=6)"``.

  Example:
    >>> space_label({"space": "rnn", "space_options": {"num_nodes": 9}}), space_label({"space": "nb201"})
    ('rnn(num_nodes=9)', 'nb201')
  """
  options = config.get("space_options") or {}
  if not options:
    return str(config["space"])
  return f"{config['space']}({', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))})"


def check_task(space: str, dataset: str) -> None:
  """Rejects a dataset whose task the space's networks do not serve.

  Raises:
    ValueError: one line naming the task, the space and spaces that fit.

  Example:
    >>> check_task("nasnet", "ptb")
    Traceback (most recent call last):
    ...
    ValueError: space 'nasnet' serves ['images'], but dataset 'ptb' is a language_model task; use --space rnn
  """
  from nas_jax import networks, tasks  # pylint: disable=import-outside-toplevel
  task = tasks.task_name_for_dataset(dataset)
  served = networks.served_tasks(space)
  if served is None or task in served:
    return
  fits = [name for name in sorted(registry.SPACES)
          if name != space and task in (networks.served_tasks(name) or ())]
  raise ValueError(f"space {space!r} serves {list(served)}, but dataset {dataset!r} is a {task} task; "
                   + (f"use --space {' or '.join(fits)}" if fits else "no space serves it"))


def identity(config: dict[str, Any]) -> dict[str, Any]:
  """The result-relevant part of a config: without ``NOT_FINGERPRINTED``, and without
  ``space_options`` when empty (so a config written before that key existed names the same
  experiment as one with ``{}``).

  Example:
    >>> identity({"space": "rnn", "space_options": {}, "data_dir": "/d"})
    {'space': 'rnn'}
  """
  return {k: v for k, v in config.items()
          if k not in NOT_FINGERPRINTED and not (k == "space_options" and v == {})}


def fingerprint(config: dict[str, Any]) -> str:
  """A short hash of the result-relevant part of a resolved config (``identity``).

  Example:
    >>> fingerprint(validate_config(default_config())) == fingerprint(validate_config(default_config()))
    True
  """
  text = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Dotted paths where two JSON trees differ, the weightiest first.

  Names (``strategy.name``, ``space``, ``dataset``, ...) come before the
  settings under them, shallower paths before deeper ones.

  Example:
    >>> diff({"strategy": {"name": "nao", "k": 1}}, {"strategy": {"name": "random", "k": 2}})
    ["strategy.name: 'nao' there, 'random' now", 'strategy.k: 1 there, 2 now']
  """
  def walk(a, b, prefix):
    if isinstance(a, dict) and isinstance(b, dict):
      out = []
      for k in sorted(set(a) | set(b), key=str):
        out += walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
      return out
    return [] if a == b else [(prefix[:-1], f"{prefix[:-1]}: {a!r} there, {b!r} now")]

  found = walk(a, b, prefix)
  found.sort(key=lambda t: (not t[0].endswith("name"), t[0].count("."), t[0]))
  return [text for _, text in found]


def enable_compile_cache() -> str | None:
  """Turns on JAX's persistent compilation cache for command-line runs.

  Networks take minutes to compile on a CPU; with the cache a second run (a
  resume, a retrain, the same command again) loads them in seconds. The
  directory is ``$NAS_JAX_COMPILE_CACHE`` or ``~/.cache/nas_jax/xla``; setting
  the variable to an empty string turns the cache off.

  Returns:
    The cache directory, or None when off.
  """
  path = os.environ.get("NAS_JAX_COMPILE_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "nas_jax", "xla"))
  if not path:
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return path


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
  """Deep-merges ``override`` into a copy of ``base`` (dicts merge, rest replaces).

  Example:
    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
  """
  out = copy.deepcopy(base)
  for k, v in override.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = merge(out[k], v)
    else:
      out[k] = copy.deepcopy(v)
  return out


def load_config_file(path: str | os.PathLike, *args: Any) -> dict[str, Any]:
  """Runs a Python config file and returns its ``get_config(*args)``.

  Raises:
    ValueError: missing file, no ``get_config``, an error while running it, or
      a result that is not a dict.

  Example:
    >>> with open("my_config.py", "w") as f:
    ...   _ = f.write("def get_config():\\n  return {'space': 'nb201', 'budget': 20}\\n")
    >>> load_config_file("my_config.py")
    {'space': 'nb201', 'budget': 20}
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if path.is_dir():
    raise ValueError(f"config file {path} is a directory; give a Python file with get_config()")
  if not path.is_file():
    raise ValueError(f"config file {path} does not exist; give a Python file with get_config()")
  spec = importlib.util.spec_from_file_location(f"_nas_jax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a user's file: report, don't crash
    raise ValueError(f"config file {path} failed to load ({type(e).__name__}: {e})") from None
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"config file {path} defines no get_config() function")
  try:
    config = module.get_config(*args)
  except Exception as e:  # a user's function: report, don't crash
    raise ValueError(f"get_config() of {path} failed ({type(e).__name__}: {e})") from None
  if not isinstance(config, dict):
    raise ValueError(f"get_config() of {path} returned {type(config).__name__}, expected a dict")
  return config


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal (``20``, ``0.1``, ``None``, ``[1, 2]``,
  ``{'a': 1}``, ``true``/``false``) or else the plain string."""
  import ast  # pylint: disable=import-outside-toplevel
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  if low in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
  """Applies ``path.to.field=value`` assignments (``--set``) to a config copy.

  Raises:
    ValueError: an assignment without ``=``, an empty path, or a path through a
      non-dict value.

  Example:
    >>> apply_overrides({"strategy": {"name": "random"}}, ["strategy.batch_size=4"])
    {'strategy': {'name': 'random', 'batch_size': 4}}
  """
  out = copy.deepcopy(config)
  for a in assignments:
    path, sep, value = a.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
      raise ValueError(f"malformed --set {a!r}; write FIELD=VALUE, e.g. --set budget=20 "
                       "or --set strategy.population_size=20")
    node = out
    for depth, k in enumerate(keys[:-1]):
      node = node.setdefault(k, {})
      if not isinstance(node, dict):
        raise ValueError(f"--set {a!r}: {'.'.join(keys[:depth + 1])} is not a group of "
                         "settings")
    node[keys[-1]] = parse_value(value)
  return out



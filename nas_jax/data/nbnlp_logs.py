"""Learning curves from a zip of NAS-Bench-NLP training logs (Klyuchnikov et al. 2020).

Each member ``*.json`` of the zip is one training run of a recurrent cell: the
cell recipe (``recepie``, a JSON string of nodes ``{"op", "input"}``),
``num_params``, the training hyperparameters (``lr``, ``dropout``, ``epochs``,
...) and per-epoch lists ``train_losses``, ``val_losses``, ``test_losses``,
``wall_times``. ``load_logs(path)`` reads every log of any such zip into
``LearningCurves``: ``[N, T]`` arrays per column, one dict of architecture
features (``recipe_features``: parameter count, node and op counts, depth;
with ``arch_encoding="paths"`` also ``recipe_path_features``, how the input
reaches the output, or with ``"path_encoding"`` a truncated path encoding,
``recipe_paths``) and one dict of numeric hyperparameters per run, and each
run's recipe (runs of the same cell share it).

Bad input, what happens (``on_bad="skip"``, the default, or ``"raise"``):

* the zip itself unreadable (truncated, not a zip, missing): always a one-line
  ``ValueError`` naming the zip;
* one log unreadable (bad JSON, a corrupt member), without the curve column
  asked for, with a curve of another length than the rest (a diverged run
  stops early: the public logs hold three with ``status`` "loss is nan!") or
  non-finite values: with ``"skip"`` the log is left out and recorded in
  ``LearningCurves.skipped`` as ``(member, reason)`` (so ``len(skipped)`` is
  the count); with ``"raise"`` a one-line ``ValueError`` naming the member;
* no usable log at all: ``ValueError`` naming the zip.

The expected curve length is ``epochs`` when given, else the most common length
in the zip (ties: the longest).

Example:
    >>> import io, json, zipfile
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as z:
    ...   for i, n in enumerate((3, 3, 2)):  # the last run stopped early
    ...     z.writestr(f"run{i}.json", json.dumps({
    ...         "num_params": 100 + i, "lr": 0.001, "recepie": json.dumps(
    ...             {"node_0": {"op": "linear", "input": ["x", "h_prev_0"]},
    ...              "h_new_0": {"op": "activation_tanh", "input": ["node_0"]}}),
    ...         "val_losses": [7.0 - j - i for j in range(n)]}))
    >>> logs = load_logs(buf)
    >>> logs.curves["val_losses"].shape, logs.skipped
    ((2, 3), [('run2.json', 'val_losses has 2 epochs, expected 3')])
    >>> logs.arch[0]["op_linear"], logs.arch[0]["depth"], logs.hparams[0]
    (1.0, 2.0, {'lr': 0.001})
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import os
import zipfile
from typing import Any

import numpy as np

# Curve columns of the NAS-Bench-NLP logs (the benchmark's training script writes these names).
CURVE_COLUMNS = ("train_losses", "val_losses", "test_losses", "wall_times")
# Numeric fields that are identifiers or logging settings, not hyperparameters.
_NOT_HPARAMS = frozenset({"recepie_id", "experiment_id", "log_interval", "num_params"})
# Recipe inputs that are not nodes: the input token and the previous hidden states.
_SOURCES = ("x", "h_prev_")


@dataclasses.dataclass
class LearningCurves:
  """Learning curves of training runs, one row per run.

  Attributes:
    names: zip member of each run.
    curves: column (``val_losses``, ...) -> float64 ``[N, T]``; only columns
      that every kept log holds at full length.
    arch: per run, architecture features (``recipe_features``).
    hparams: per run, numeric hyperparameters (booleans and ids left out).
    skipped: ``(member, reason)`` of each log left out.
    recipes: per run, the recipe as sorted-key JSON ("" without one): runs
      with equal strings trained the same cell (the public zip retrains 28
      of its cells).
  """
  names: list[str]
  curves: dict[str, np.ndarray]
  arch: list[dict[str, float]]
  hparams: list[dict[str, float]]
  skipped: list[tuple[str, str]]
  recipes: list[str] = dataclasses.field(default_factory=list)

  @property
  def epochs(self) -> int:
    return next(iter(self.curves.values())).shape[1]

  def features(self, i: int) -> dict[str, float]:
    """Architecture features and hyperparameters of run ``i`` in one dict."""
    return {**self.arch[i], **{f"hp_{k}": v for k, v in self.hparams[i].items()}}


def recipe_features(recipe: dict[str, Any] | str, num_params: float | None = None) -> dict[str, float]:
  """Numbers describing a NAS-Bench-NLP cell recipe.

  Args:
    recipe: ``{node: {"op": name, "input": [names]}}`` (or its JSON string);
      inputs ``x`` and ``h_prev_*`` are the cell's sources.
    num_params: the model's parameter count, added as ``num_params`` and
      ``log_params`` when given.

  Returns:
    ``nodes``, ``hidden_states`` (the ``h_new_*`` outputs), ``depth`` (the
    longest chain of nodes from a source), ``edges`` and ``op_<name>``
    counts of the ops present.

  Raises:
    ValueError: a node without ``op``, an input that is neither a node nor a
      source, or a cycle.

  Example:
    >>> recipe_features({"h_new_0": {"op": "activation_tanh", "input": ["node_0"]},
    ...                  "node_0": {"op": "linear", "input": ["x", "h_prev_0"]}})
    {'nodes': 2.0, 'hidden_states': 1.0, 'edges': 3.0, 'depth': 2.0, 'op_activation_tanh': 1.0, 'op_linear': 1.0}
  """
  if isinstance(recipe, str):
    recipe = json.loads(recipe)
  if not isinstance(recipe, dict) or not recipe:
    raise ValueError(f"a recipe must be a non-empty dict of nodes, got {type(recipe).__name__}")
  ops: collections.Counter = collections.Counter()
  for name, node in recipe.items():
    if not isinstance(node, dict) or "op" not in node:
      raise ValueError(f"recipe node {name!r} has no 'op'")
    ops[str(node["op"])] += 1
    for src in node.get("input", []):
      if src not in recipe and not src.startswith(_SOURCES):
        raise ValueError(f"recipe node {name!r} reads {src!r}, which is neither a node nor x / h_prev_*")
  depth: dict[str, int] = {}

  def node_depth(name: str, stack: tuple[str, ...] = ()) -> int:
    if name not in recipe:
      return 0  # a source
    if name in stack:
      raise ValueError(f"recipe has a cycle through {name!r}")
    if name not in depth:
      depth[name] = 1 + max((node_depth(s, stack + (name,)) for s in recipe[name].get("input", [])),
                            default=0)
    return depth[name]

  out = {"nodes": float(len(recipe)),
         "hidden_states": float(sum(n.startswith("h_new") for n in recipe)),
         "edges": float(sum(len(n.get("input", [])) for n in recipe.values())),
         "depth": float(max(node_depth(n) for n in recipe))}
  out.update({f"op_{op}": float(c) for op, c in sorted(ops.items())})
  if num_params is not None:
    out["num_params"] = float(num_params)
    out["log_params"] = math.log(max(float(num_params), 1.0))
  return out


# The ops of the NAS-Bench-NLP search space (Klyuchnikov et al. 2020, Sec. 3.1): a linear layer over
# the concatenated inputs, three activations, element-wise sum and product, and blend (z * a + (1 - z) * b).
RECIPE_OPS = ("linear", "activation_sigm", "activation_tanh", "activation_leaky_relu",
              "elementwise_sum", "elementwise_prod", "blend")
# What load_logs(arch_encoding=...) puts in LearningCurves.arch: recipe_features' counts alone, or
# with recipe_path_features' path numbers added, or with a truncated path encoding (White et al. 2020,
# "A Study on Encodings for Neural Architecture Search": one count per op sequence from a source to the
# output, only the PATH_VOCAB sequences found in the most cells of the zip).
ARCH_ENCODINGS = ("counts", "paths", "path_encoding")
# White et al. truncate the path encoding to its most frequent paths; in the public zip 310 distinct
# op sequences reach h_new_0, 19 of them in 10 or more of its 242 usable cells.
PATH_VOCAB = 20
_SHORT_OPS = {"linear": "lin", "activation_sigm": "sigm", "activation_tanh": "tanh",
              "activation_leaky_relu": "lrelu", "elementwise_sum": "sum", "elementwise_prod": "prod",
              "blend": "blend"}


def recipe_paths(recipe: dict[str, Any] | str, target: str = "h_new_0") -> dict[str, int]:
  """Op sequences from the cell's sources to ``target`` and how many paths follow each.

  A sequence is named ``x_...`` (from the input) or ``h_...`` (from any
  ``h_prev_*``) followed by the short names of the ops on the path, the
  target's last (``lin``, ``sigm``, ``tanh``, ``lrelu``, ``sum``, ``prod``,
  ``blend``).

  Args:
    recipe: ``{node: {"op": name, "input": [names]}}`` (or its JSON string).
    target: the node the paths end at (the cell's output ``h_new_0``).

  Returns:
    sequence name -> number of paths (empty when ``target`` is not a node).

  Raises:
    ValueError: as ``recipe_features``.

  Example:
    >>> recipe_paths({"h_new_0": {"op": "activation_tanh", "input": ["node_0", "x"]},
    ...               "node_0": {"op": "linear", "input": ["x", "h_prev_0"]}})
    {'x_lin_tanh': 1, 'h_lin_tanh': 1, 'x_tanh': 1}
  """
  if isinstance(recipe, str):
    recipe = json.loads(recipe)
  recipe_features(recipe)  # the same checks
  memo: dict[str, dict[str, int]] = {}

  def walk(name: str) -> dict[str, int]:
    if name not in recipe:
      return {"x" if name == "x" else "h": 1}
    if name not in memo:
      op = _SHORT_OPS.get(str(recipe[name]["op"]), str(recipe[name]["op"]))
      out: dict[str, int] = {}
      for src in recipe[name].get("input", []):
        for path, n in walk(src).items():
          out[f"{path}_{op}"] = out.get(f"{path}_{op}", 0) + n
      memo[name] = out
    return memo[name]

  return dict(walk(target)) if target in recipe else {}


def _path_summary(recipe: dict[str, Any], source: str, target: str):
  """(number of paths, per-path minima, per-path maxima) from ``source`` to ``target``.

  A path's numbers are the nodes on it after the source (the target included),
  and among them the linear layers, activations, sigmoids and multiplicative
  ops (product, blend). Minima and maxima are taken per number, over paths.
  """
  memo: dict[str, tuple] = {}

  def walk(name: str):
    if name == source:
      return 1, (0,) * 5, (0,) * 5
    if name not in recipe:
      return 0, None, None  # another source
    if name not in memo:
      op = str(recipe[name]["op"])
      own = (1, op == "linear", op.startswith("activation"), op == "activation_sigm",
             op in ("elementwise_prod", "blend"))
      count, low, high = 0, None, None
      for src in recipe[name].get("input", []):
        n, lo, hi = walk(src)
        if n:
          lo = tuple(a + b for a, b in zip(lo, own))
          hi = tuple(a + b for a, b in zip(hi, own))
          count += n
          low = lo if low is None else tuple(map(min, low, lo))
          high = hi if high is None else tuple(map(max, high, hi))
      memo[name] = (count, low, high)
    return memo[name]

  return walk(target)


def recipe_path_features(recipe: dict[str, Any] | str) -> dict[str, float]:
  """Path numbers of a NAS-Bench-NLP cell recipe: how the input reaches the output.

  The cell's output (what the next layer and the decoder read) is ``h_new_0``;
  every ``h_new_i`` returns as ``h_prev_i`` at the next step. Over the paths
  (within one step) from ``x`` to ``h_new_0``:

  * ``x_reach`` (1 if there is one), ``x_paths`` (log(1 + their number));
  * ``x_len_min`` / ``x_len_max``: nodes on the shortest / longest path;
  * ``x_lin_min`` / ``x_lin_max``, ``x_act_min`` / ``x_act_max``,
    ``x_sigm_min``, ``x_mult_min`` / ``x_mult_max``: the fewest / most linear
    layers, activations, sigmoids and multiplicative ops (product, blend) on
    a path (each taken over paths on its own);

  over the paths from ``h_prev_0`` to ``h_new_0`` (the recurrence):
  ``rec_reach``, ``rec_len_min``, ``rec_lin_min`` (0: a path with no linear
  layer, an LSTM-like carry), ``rec_act_min``; and across steps ``x_delay``:
  the fewest steps before ``x`` reaches ``h_new_0`` through the hidden states
  (0 within the step). ``out_<op>`` is 1 for ``h_new_0``'s op. Numbers of
  paths that do not exist read 0 (their ``*_reach`` is 0), a delay that never
  happens reads the number of hidden states. Every key is always present.

  Args:
    recipe: ``{node: {"op": name, "input": [names]}}`` (or its JSON string)
      with an ``h_new_0`` node.

  Returns:
    the numbers above, by name.

  Raises:
    ValueError: as ``recipe_features``, or no ``h_new_0``.

  Example:
    >>> f = recipe_path_features({"h_new_0": {"op": "activation_tanh", "input": ["node_0"]},
    ...                           "node_0": {"op": "linear", "input": ["x", "h_prev_0"]}})
    >>> f["x_len_min"], f["x_lin_min"], f["rec_lin_min"], f["x_delay"], f["out_activation_tanh"]
    (2.0, 1.0, 1.0, 0.0, 1.0)
  """
  if isinstance(recipe, str):
    recipe = json.loads(recipe)
  recipe_features(recipe)  # the same checks: nodes with ops, known inputs, no cycle
  out_node = "h_new_0"
  if out_node not in recipe:
    raise ValueError(f"a recipe needs an {out_node!r} node (the cell's output), got {sorted(recipe)}")
  out: dict[str, float] = {}
  n, low, high = _path_summary(recipe, "x", out_node)
  low, high = low or (0,) * 5, high or (0,) * 5
  out.update(x_reach=float(n > 0), x_paths=math.log1p(n), x_len_min=float(low[0]),
             x_len_max=float(high[0]), x_lin_min=float(low[1]), x_lin_max=float(high[1]),
             x_act_min=float(low[2]), x_act_max=float(high[2]), x_sigm_min=float(low[3]),
             x_mult_min=float(low[4]), x_mult_max=float(high[4]))
  n, low, _ = _path_summary(recipe, "h_prev_0", out_node)
  low = low or (0,) * 5
  out.update(rec_reach=float(n > 0), rec_len_min=float(low[0]), rec_lin_min=float(low[1]),
             rec_act_min=float(low[2]))
  # Steps before x reaches h_new_0: breadth-first over the hidden states, one step per h_prev -> h_new.
  states = sorted(name for name in recipe if name.startswith("h_new_"))
  feeds = {s: [t for t in states if _path_summary(recipe, "h_prev_" + s[len("h_new_"):], t)[0]]
           for s in states}
  delay = {s: 0 for s in states if _path_summary(recipe, "x", s)[0]}
  frontier = list(delay)
  while frontier:
    nxt = []
    for s in frontier:
      for t in feeds[s]:
        if t not in delay:
          delay[t] = delay[s] + 1
          nxt.append(t)
    frontier = nxt
  out["x_delay"] = float(delay.get(out_node, len(states)))
  op = str(recipe[out_node]["op"])
  out.update({f"out_{name}": float(op == name) for name in RECIPE_OPS})
  return out


def _open_zip(path) -> tuple[zipfile.ZipFile, str]:
  label = getattr(path, "name", None) or (os.fspath(path) if isinstance(path, (str, os.PathLike))
                                          else "<zip>")
  try:
    return zipfile.ZipFile(path), str(label)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise ValueError(f"{label} is not a readable zip of training logs ({e}); "
                     "re-copy or re-download it") from None


def _curve(log: dict[str, Any], column: str) -> np.ndarray:
  if column not in log:
    raise ValueError(f"no {column!r} column")
  try:
    values = np.asarray(log[column], dtype=np.float64)
  except (TypeError, ValueError):
    raise ValueError(f"{column} is not a list of numbers") from None
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f"{column} is not a non-empty list of numbers")
  return values


def load_logs(path: str | os.PathLike | io.IOBase, *, column: str = "val_losses",
              epochs: int | None = None, on_bad: str = "skip",
              arch_encoding: str = "counts") -> LearningCurves:
  """Reads every ``*.json`` training log of a zip (see the module docstring).

  Args:
    path: the zip (a path or a binary file object).
    column: the curve every kept log must have, complete and finite
      (``val_losses``: the validation loss per epoch).
    epochs: the expected curve length; default the most common length.
    on_bad: ``"skip"`` (leave a bad log out, recorded in ``skipped``) or
      ``"raise"`` (a one-line ``ValueError`` naming the log).
    arch_encoding: ``"counts"`` (``recipe_features``) or ``"paths"``
      (``recipe_features`` and ``recipe_path_features``) or ``"path_encoding"``
      (``recipe_features`` and ``path_<sequence>``: ``recipe_paths``' counts
      of the ``PATH_VOCAB`` sequences found in the most kept runs, every key
      in every run).

  Returns:
    ``LearningCurves`` sorted by member name.

  Raises:
    ValueError: the zip unreadable, no usable log, a bad log with
      ``on_bad="raise"``, a bad ``on_bad``, ``epochs`` or ``arch_encoding``.
  """
  if on_bad not in ("skip", "raise"):
    raise ValueError(f"on_bad must be 'skip' or 'raise', got {on_bad!r}")
  if arch_encoding not in ARCH_ENCODINGS:
    raise ValueError(f"arch_encoding must be one of {ARCH_ENCODINGS}, got {arch_encoding!r}")
  if epochs is not None and int(epochs) < 1:
    raise ValueError(f"epochs must be a positive number of epochs, got {epochs!r}")
  archive, label = _open_zip(path)
  skipped: list[tuple[str, str]] = []

  def bad(member: str, reason: str) -> None:
    if on_bad == "raise":
      raise ValueError(f"{label}: log {member}: {reason} (or load with on_bad='skip')")
    skipped.append((member, reason))

  runs = []
  with archive:
    members = sorted(n for n in archive.namelist() if n.endswith(".json") and not n.endswith("/"))
    for member in members:
      try:
        log = json.loads(archive.read(member).decode("utf-8"))
        if not isinstance(log, dict):
          raise ValueError("is not a JSON object")
        main = _curve(log, column)
        if not np.all(np.isfinite(main)):
          raise ValueError(f"{column} holds non-finite values (a diverged run)")
        recipe = ""
        if "recepie" in log:  # parsed once, for the features and the recipe's identity
          parsed = json.loads(log["recepie"]) if isinstance(log["recepie"], str) else log["recepie"]
          arch = recipe_features(parsed, log.get("num_params"))
          recipe = json.dumps(parsed, sort_keys=True)
          if arch_encoding == "paths":
            arch.update(recipe_path_features(parsed))
        else:
          arch = ({"num_params": float(log["num_params"]),
                   "log_params": math.log(max(float(log["num_params"]), 1.0))}
                  if "num_params" in log else {})
      except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError,
              ValueError, TypeError, KeyError) as e:
        bad(member, str(e).splitlines()[0] if str(e) else type(e).__name__)
        continue
      hparams = {k: float(v) for k, v in log.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_HPARAMS}
      runs.append((member, log, main, arch, hparams, recipe))
  if not runs:
    raise ValueError(f"{label} holds no usable training log with a {column!r} curve "
                     f"({len(members)} *.json members, {len(skipped)} skipped)")
  if epochs is None:
    counts = collections.Counter(len(r[2]) for r in runs)
    epochs = max(counts, key=lambda n: (counts[n], n))
  kept = []
  for run in runs:
    if len(run[2]) != epochs:
      bad(run[0], f"{column} has {len(run[2])} epochs, expected {epochs}")
    else:
      kept.append(run)
  if not kept:
    raise ValueError(f"{label} holds no log whose {column!r} has {epochs} epochs")
  if arch_encoding == "path_encoding":
    paths = [recipe_paths(r[5]) if r[5] else {} for r in kept]
    found = collections.Counter(p for run in paths for p in run)
    vocab = sorted(found, key=lambda p: (-found[p], p))[:PATH_VOCAB]
    for run, counts in zip(kept, paths):
      run[3].update({f"path_{p}": float(counts.get(p, 0)) for p in vocab})
  curves = {column: np.stack([r[2] for r in kept])}
  for other in CURVE_COLUMNS:  # the other columns, where every kept log has them complete
    if other == column:
      continue
    try:
      rows = [_curve(r[1], other) for r in kept]
    except ValueError:
      continue
    if all(len(x) == epochs for x in rows):
      curves[other] = np.stack(rows)
  return LearningCurves(names=[r[0] for r in kept], curves=curves, arch=[r[3] for r in kept],
                        hparams=[r[4] for r in kept], skipped=skipped,
                        recipes=[r[5] for r in kept])

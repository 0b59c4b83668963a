"""Learning curves from a zip of NAS-Bench-NLP training logs (Klyuchnikov et al. 2020).

Each member ``*.json`` of the zip is one training run of a recurrent cell: the
cell recipe (``recepie``, a JSON string of nodes ``{"op", "input"}``),
``num_params``, the training hyperparameters (``lr``, ``dropout``, ``epochs``,
...) and per-epoch lists ``train_losses``, ``val_losses``, ``test_losses``,
``wall_times``. ``load_logs(path)`` reads every log of any such zip into
``LearningCurves``: ``[N, T]`` arrays per column, one dict of architecture
features (``recipe_features``: parameter count, node and op counts, depth)
and one dict of numeric hyperparameters per run.

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
  """
  names: list[str]
  curves: dict[str, np.ndarray]
  arch: list[dict[str, float]]
  hparams: list[dict[str, float]]
  skipped: list[tuple[str, str]]

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
              epochs: int | None = None, on_bad: str = "skip") -> LearningCurves:
  """Reads every ``*.json`` training log of a zip (see the module docstring).

  Args:
    path: the zip (a path or a binary file object).
    column: the curve every kept log must have, complete and finite
      (``val_losses``: the validation loss per epoch).
    epochs: the expected curve length; default the most common length.
    on_bad: ``"skip"`` (leave a bad log out, recorded in ``skipped``) or
      ``"raise"`` (a one-line ``ValueError`` naming the log).

  Returns:
    ``LearningCurves`` sorted by member name.

  Raises:
    ValueError: the zip unreadable, no usable log, a bad log with
      ``on_bad="raise"``, a bad ``on_bad`` or ``epochs``.
  """
  if on_bad not in ("skip", "raise"):
    raise ValueError(f"on_bad must be 'skip' or 'raise', got {on_bad!r}")
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
        arch = recipe_features(log["recepie"], log.get("num_params")) if "recepie" in log else (
            {"num_params": float(log["num_params"]),
             "log_params": math.log(max(float(log["num_params"]), 1.0))}
            if "num_params" in log else {})
      except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError,
              ValueError, TypeError, KeyError) as e:
        bad(member, str(e).splitlines()[0] if str(e) else type(e).__name__)
        continue
      hparams = {k: float(v) for k, v in log.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_HPARAMS}
      runs.append((member, log, main, arch, hparams))
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
                        hparams=[r[4] for r in kept], skipped=skipped)

"""Reports of a run: the best record, the Pareto frontier, and the plots.

``best(records)`` is the record with the highest finite search score;
``pareto_front(records)`` the architectures no other beats in both search
score (higher) and FLOPs (lower); ``plot_search``, ``plot_curve`` and
``plot_pareto`` draw ``search.png``, ``final_curve.png`` and ``pareto.png``.

Example:
    >>> recs = [{"arch_id": "a", "search_score": 90.0, "flops": 10},
    ...         {"arch_id": "b", "search_score": 80.0, "flops": 5},
    ...         {"arch_id": "c", "search_score": 70.0, "flops": 20}]
    >>> [r["arch_id"] for r in pareto_front(recs)]
    ['b', 'a']
"""
from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np

#: Fields of history lines and result.json that hold wall-clock measurements
#: (``cost_s`` is one for evaluators that train; the tabular one simulates it)
#: or session counts; everything else is a deterministic function of the config.
WALL_CLOCK_FIELDS = ("wall_time_s", "cost_s", "search_cost_s", "setup_seconds",
                     "search_seconds", "final_seconds", "references_seconds", "total_seconds",
                     "seconds", "step_s",
                     "first_step_s", "resumed_sessions")


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
  """The record with the highest finite ``search_score`` (the first of ties), or None."""
  best = None
  for r in records:
    s = r["search_score"]
    if s is not None and math.isfinite(s) and (best is None or s > best["search_score"]):
      best = r
  return best


def plot_search(records: list[dict[str, Any]], path: pathlib.Path, title: str, *,
                xlabel: str = "evaluations", ylabel: str = "search score (validation acc, %)") -> None:
  """Each record's search score and the best so far, in history order."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  scores = np.array([np.nan if r["search_score"] is None else r["search_score"]
                     for r in records], dtype=np.float64)
  best = np.fmax.accumulate(np.where(np.isfinite(scores), scores, -np.inf))
  x = np.arange(1, len(scores) + 1)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(x, scores, ".", color="0.6", label="search_score")
  ax.step(x, best, where="post", color="C0", label="best search_score")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_curve(curve: list[dict[str, Any]], path: pathlib.Path, title: str,
               references: dict[str, Any] | None = None) -> None:
  """A learning curve's accuracies (or, for language models, perplexities) per epoch.

  ``references`` (``runner.references``): the published cell's validation
  curve (its training curve when no data was held out) is drawn dashed
  beside the found cell's, and every reference's test
  figure (published cell, classical model, table best / median) as a dotted
  horizontal line.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  epochs = [c.get("epoch", i + 1) for i, c in enumerate(curve)]
  def numeric(kind):
    return [k for k in curve[0] if k != "epoch" and k not in WALL_CLOCK_FIELDS
            and kind in k and all(_is_number(c.get(k)) for c in curve)]

  keys, ylabel = numeric("acc"), "accuracy (%)"
  if not keys:
    keys, ylabel = numeric("ppl"), "perplexity"
  for k in keys:
    ax.plot(epochs, [c[k] for c in curve], marker=".", label=k)
  refs = references or {}
  cell = refs.get("cell") or {}
  ref_curve = cell.get("curve") or []
  valid = [k for k in keys if k.startswith("valid")]
  for k in valid or keys:  # the validation curve, else (all data trained on) the training curve
    values = [c.get(k) for c in ref_curve]
    if values and all(_is_number(v) for v in values):
      ax.plot([c.get("epoch", i + 1) for i, c in enumerate(ref_curve)], values, "--",
              color="0.4", label=f"{cell['name']} {k}")
  test_key = "test_acc" if ylabel.startswith("accuracy") else "test_ppl"
  lines = [(f"{cell.get('name')} {test_key}", cell.get(test_key)),
           (f"{(refs.get('classical') or {}).get('model', '').split('(')[0]} {test_key}",
            (refs.get("classical") or {}).get(test_key)),
           ("table best test_acc", (refs.get("table") or {}).get("table_best_test_acc")),
           ("table median test_acc", (refs.get("table") or {}).get("table_median_test_acc"))]
  for i, (label, value) in enumerate((l, v) for l, v in lines if _is_number(v)):
    ax.axhline(value, linestyle=":", color=f"C{4 + i}", label=f"{label} {value:.2f}")
    keys = keys or [label]
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  if keys:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def clean_curve(curve: Any) -> list[dict[str, Any]]:
  """A JSON-friendly learning curve: list of per-epoch dicts."""
  if curve is None:
    return []
  out = []
  for i, c in enumerate(curve):
    if isinstance(c, dict):
      out.append({k: (float(v) if _is_number(v) and not _is_int(v) else v)
                  for k, v in c.items()})
    else:
      out.append({"epoch": i + 1, "test_acc": float(c)})
  return out


def pareto_front(records: list[dict[str, Any]], cost: str = "flops") -> list[dict[str, Any]]:
  """The records on the frontier of search score (higher) against ``cost`` (lower).

  Each architecture (``arch_id``) counts once, with its highest search score;
  records without a finite score or cost are left out. A record is on the
  frontier when no other has a cost at most its own and a higher score (or the
  same score at a lower cost).

  Args:
    records: history lines with ``arch_id``, ``search_score`` and ``cost``.
    cost: the cost field (``"flops"`` or ``"params"``).

  Returns:
    The frontier, by increasing cost (and increasing score).
  """
  per_arch: dict[str, dict[str, Any]] = {}
  for r in records:
    s, c = r.get("search_score"), r.get(cost)
    if not (_is_number(s) and math.isfinite(s) and _is_number(c) and math.isfinite(c)):
      continue
    old = per_arch.get(r["arch_id"])
    if old is None or s > old["search_score"]:
      per_arch[r["arch_id"]] = r
  front, top = [], -math.inf
  for r in sorted(per_arch.values(), key=lambda r: (r[cost], -r["search_score"])):
    if r["search_score"] > top:
      front.append(r)
      top = r["search_score"]
  return front


def plot_pareto(records: list[dict[str, Any]], front: list[dict[str, Any]], path: pathlib.Path,
                title: str, score_label: str = "search score") -> None:
  """Every evaluated architecture's search score against its FLOPs, frontier marked."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  pts = [(r["flops"], r["search_score"]) for r in records
         if _is_number(r.get("flops")) and _is_number(r.get("search_score"))
         and math.isfinite(r["search_score"])]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  if pts:
    x, y = np.asarray(pts, np.float64).T
    ax.plot(x / 1e6, y, ".", color="0.6", label="evaluated")
  if front:
    fx = np.asarray([r["flops"] for r in front], np.float64) / 1e6
    fy = np.asarray([r["search_score"] for r in front], np.float64)
    ax.step(fx, fy, where="post", color="C3", marker="o", label=f"frontier ({len(front)})")
  ax.set_xlabel("FLOPs (M multiply-adds per example)")
  ax.set_ylabel(score_label)
  ax.set_title(title, fontsize=9)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)

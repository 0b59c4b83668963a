"""Replays early-stopping rules over the histories of searches that trained every run in full.

A scratch-evaluator search is deterministic: with early stopping on, a run's
curve up to the epoch it stops at is the curve it has in the full-training
search. So the ``history.jsonl`` of a search without ``--early-stop`` (the
reference) tells what any rule would have done: each run, in the history's
order, is fed epoch by epoch to the rule's ``train_child`` callback
(``nas_jax.predictors.hyperband.make_stopper``: the same stopper the runner
builds from ``early_stop_settings``; ``hyperband.simulate_search`` in the
history's order) until the callback stops it. Reported per
history: the speedup (epochs of the reference / epochs the rule trains) and
the gap of the best completed run's final score to the reference's best, and
how many histories meet ``--speedup`` with a gap of at most ``--within``
points (issue 21: 2x and 0.5 points on digits).

Measured (``experiments/configs/lce_digits.py``'s reference searches, seeds 0-13,
``/work/runs/lce_digits_s{S}_ref``; each replay matches the live ``--early-stop``
run epoch for epoch, see that file): successive halving with eta 2 ranked by the
training accuracy at the rungs (``"rank_by": "train"``, the config's rule) meets
the target on 13 of 14 (2.25-5.56x; seeds 14-21, run after: 6 of 8); ranked by the validation
accuracy 8 of 14 (3 of 8),
by predicted final values 7 of 14; Hyperband eta 3 ranked by predictions 7 of 14;
Baker et al.'s rule 1 of 14 (it keeps the best but saves 1.0-2.1x).

Usage:
    python benchmarks/early_stop_replay.py --histories RUN_DIR [RUN_DIR ...] \\
        --rule '{"rule": "sha", "eta": 2, "predict": false}' [--rule '{...}' ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from nas_jax.predictors import hyperband
from nas_jax.tasks import get_task


def load_history(path: str) -> list[dict[str, Any]]:
  """The history lines of a run directory or a ``history.jsonl``, each with a complete curve.

  Raises:
    ValueError: no such file, a bad line, runs of different lengths or a stopped run
      (a reference must train every run in full).
  """
  if os.path.isdir(path):
    path = os.path.join(path, "history.jsonl")
  try:
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read the history {path}: {e}") from None
  records = [r for r in records if r.get("curve")]
  lengths = {len(r["curve"]) for r in records}
  if not records or len(lengths) != 1 or any(r.get("stopped") for r in records):
    raise ValueError(f"{path}: a reference history needs runs trained in full, all of one length "
                     f"(got lengths {sorted(lengths)}); rerun the search without --early-stop")
  return records


def replay(records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any],
           task: str = "images") -> dict[str, Any]:
  """What a rule does to a reference search (see the module docstring).

  Example:
    >>> curve = lambda top: [{"valid_acc": top * e / 4} for e in range(1, 5)]
    >>> runs = [{"arch_id": str(i), "curve": curve(top)} for i, top in enumerate([90, 50, 95, 60])]
    >>> out = replay(runs, {"rule": "sha", "eta": 2, "predict": False, "min_curves": 100})
    >>> out["stop_epochs"], out["gap"], round(out["speedup"], 2)
    ([4, 1, 4, 1], 0.0, 1.6)
  """
  t = get_task(task)
  curves = np.array([[float(entry[t.metric]) for entry in r["curve"]] for r in records])
  stopper = hyperband.make_stopper(t, curves.shape[1], dict(settings))
  extra = {}
  rank_metric = getattr(stopper, "rank_metric", stopper.metric)
  if rank_metric != stopper.metric:  # rank_by="train": the training values go along
    try:
      extra[rank_metric] = [[float(entry[rank_metric]) for entry in r["curve"]] for r in records]
    except (KeyError, TypeError):
      raise ValueError(f"the rule ranks by {rank_metric!r}, which the history's curves lack") from None
  out = hyperband.simulate_search(stopper, curves, order=range(len(curves)), extra=extra)
  sign = 1.0 if t.higher_is_better else -1.0
  return {"speedup": out["speedup"], "best": out["best_found"], "reference_best": out["best_true"],
          "gap": sign * (out["best_found"] - out["best_true"]), "stop_epochs": out["stop_epochs"]}


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--histories", nargs="+", required=True,
                      help="run directories (or history.jsonl files) of full-training searches")
  parser.add_argument("--rule", action="append", required=True,
                      help="early_stop settings as JSON (repeat to compare rules)")
  parser.add_argument("--task", default="images", help="the task of the searches (its metric)")
  parser.add_argument("--speedup", type=float, default=2.0, help="target speedup (issue 21: 2)")
  parser.add_argument("--within", type=float, default=0.5,
                      help="largest allowed gap of the best found, in metric units (issue 21: 0.5)")
  parser.add_argument("--out", help="JSON file to write")
  args = parser.parse_args(argv)
  try:
    rules = [json.loads(r) for r in args.rule]
    if not all(isinstance(r, dict) for r in rules):
      raise ValueError("every --rule must be a JSON object of early_stop settings")
    histories = {h: load_history(h) for h in args.histories}
    results = []
    for rule in rules:
      per = {h: replay(recs, rule, args.task) for h, recs in histories.items()}
      met = sum(p["speedup"] >= args.speedup and p["gap"] >= -args.within for p in per.values())
      results.append({"rule": rule, "met": met, "of": len(per), "per_history": per})
      print(f"{json.dumps(rule)}: target met on {met} of {len(per)}  " + "  ".join(
          f"{os.path.basename(os.path.normpath(h))} {p['speedup']:.2f}x {p['gap']:+.2f}"
          for h, p in per.items()), flush=True)
  except (ValueError, json.JSONDecodeError) as e:
    raise SystemExit(f"early_stop_replay.py: {e}") from None
  out = {"results": results, "speedup_target": args.speedup, "within": args.within}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])

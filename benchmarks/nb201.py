"""Compares search strategies on the NAS-Bench-201 table (CPU, seconds).

Each strategy runs ``--runs`` seeded searches of ``--queries`` look-ups (a fresh
strategy and evaluator per run, built from the registry alone); prints the mean
+/- std over runs of the test accuracy of the best-by-validation architecture
and writes JSON with ``strategy, queries, runs, mean_test_acc, std_test_acc,
curve, seconds`` (plus ``std_curve``, ``final_test_accs``, ``best_archs``, ...).

Usage:
    python benchmarks/nb201.py --strategy evolution --queries 100 --runs 50 \
        --out runs/nb201_evolution.json
    # several strategies: one JSON each ({strategy} in --out) and one plot
    python benchmarks/nb201.py --strategy random evolution reinforce \
        --queries 100 --runs 50 --out 'runs/nb201_{strategy}.json' --plot runs/nb201.png
    # add saved results (e.g. NAO's) to the plot without rerunning them
    python benchmarks/nb201.py --compare runs/nb201_*.json --plot runs/all.png
    # another dataset of the benchmark, strategy settings
    python benchmarks/nb201.py --strategy evolution --benchmark-file cifar100.csv.gz \
        --strategy-config '{"sample_size": 5}' --out ev.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from nas_jax import benchmarks_nb201


def parse_strategy_configs(text: str | None, names: list[str]) -> dict[str, dict[str, Any]]:
  """``--strategy-config`` JSON -> per-strategy settings.

  A JSON object whose keys are all among ``names`` and whose values are objects
  is read per strategy (``{"evolution": {"sample_size": 5}}``); any other
  object is given to every strategy.
  """
  if not text:
    return {n: {} for n in names}
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise SystemExit(f"--strategy-config is not valid JSON ({e}); write e.g. "
                     "'{\"population_size\": 20}'") from None
  if not isinstance(config, dict):
    raise SystemExit("--strategy-config must be a JSON object, e.g. '{\"sample_size\": 5}'")
  if config and all(k in names and isinstance(v, dict) for k, v in config.items()):
    return {n: dict(config.get(n, {})) for n in names}
  return {n: dict(config) for n in names}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--strategy", nargs="+", action="extend", default=[],
                      help="registry name(s) of the strategies to run")
  parser.add_argument("--queries", type=int, default=100, help="evaluations per run")
  parser.add_argument("--runs", type=int, default=50, help="seeded runs per strategy")
  parser.add_argument("--seed", type=int, default=0, help="seed of the first run")
  parser.add_argument("--benchmark-file", default=None,
                      help="NAS-Bench-201 CSV(.gz) table (default: shipped CIFAR-10)")
  parser.add_argument("--strategy-config", default=None,
                      help="JSON settings, for all strategies or keyed by strategy name")
  parser.add_argument("--out", default=None,
                      help="JSON output; with several strategies it must contain {strategy}")
  parser.add_argument("--plot", default=None, help="PNG with the curves of all strategies")
  parser.add_argument("--compare", nargs="+", default=[],
                      help="saved JSON results to add to the plot")
  args = parser.parse_args(argv)

  if not args.strategy and not (args.compare and args.plot):
    parser.error("give --strategy NAME [NAME ...] (or --compare JSON ... with --plot)")
  if args.strategy and not args.out:
    parser.error("--out FILE is required when running strategies")
  if len(args.strategy) > 1 and "{strategy}" not in args.out:
    parser.error("several strategies: put {strategy} in --out, e.g. --out 'nb201_{strategy}.json'")
  if len(set(args.strategy)) != len(args.strategy):
    parser.error("a strategy is named twice in --strategy")
  if args.queries < 1 or args.runs < 1:
    parser.error("--queries and --runs must be positive")
  configs = parse_strategy_configs(args.strategy_config, args.strategy)

  results = []
  for path in args.compare:
    try:
      with open(path, encoding="utf-8") as f:
        results.append(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
      parser.error(f"--compare {path}: cannot read JSON ({e})")
  for name in args.strategy:
    try:
      result = benchmarks_nb201.run_search(
          name, args.queries, args.runs, benchmark_file=args.benchmark_file,
          config=configs[name], seed=args.seed)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    out = args.out.replace("{strategy}", name)
    if os.path.dirname(out):
      os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    print(f"{name}: test accuracy {result['mean_test_acc']:.2f} +/- {result['std_test_acc']:.2f} "
          f"over {result['runs']} runs x {result['queries']} queries "
          f"({result['seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU) -> {out}")
    results.append(result)
  if args.plot:
    if os.path.dirname(args.plot):
      os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    benchmarks_nb201.plot_curves(results, args.plot)
    print(f"plot -> {args.plot}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

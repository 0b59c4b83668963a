"""Comparison harness for search strategies on the NAS-Bench-201 table.

``run_search`` runs ``runs`` independent searches of ``queries`` table look-ups
each: every run has its own seed, a fresh strategy (built from its registry
entry alone) and a fresh ``TabularEvaluator``, and repeats the runner's
``search_round`` (ask -> evaluate -> tell) until the budget is spent (a batch larger than
what remains is truncated, and only the evaluated part is told). The strategy
sees only search scores (one seed's validation accuracy); the result is the
*test* accuracy of the architecture with the best search score so far, the
literature's protocol. Everything is deterministic per seed.

``benchmarks/nb201.py`` is the command line around it; ``plot_curves`` draws
several strategies' mean curves in one PNG.

Example:
    The benchmark itself is ``run_search("evolution", queries=100, runs=50)``;
    a short one:

    >>> result = run_search("evolution", queries=20, runs=3)
    >>> len(result["curve"]), result["runs"]
    (20, 3)
    >>> result["final_test_accs"]  # best architecture's test accuracy, per run
    [93.35, 92.19, 94.02]
    >>> print(f"{result['mean_test_acc']:.2f} +/- {result['std_test_acc']:.2f}")
    93.19 +/- 0.93
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np

from nas_jax import registry
from nas_jax.evaluators.tabular import TabularEvaluator
from nas_jax.runner.search import search_round
from nas_jax.strategies.base import Strategy
from nas_jax.strategies.random_search import split_key

#: Keys every result dict has (the JSON written by ``benchmarks/nb201.py``).
RESULT_KEYS = ("strategy", "queries", "runs", "mean_test_acc", "std_test_acc", "curve",
               "seconds")


def run_one(strategy: Strategy, evaluator: TabularEvaluator, queries: int,
            key: jax.Array) -> dict[str, Any]:
  """One search of ``queries`` evaluations, round by round with the runner's ``search_round``.

  Args:
    strategy: a fresh strategy instance.
    evaluator: the evaluator (its ``info`` or ``report`` gives ``test_acc``).
    queries: the number of architectures to evaluate.
    key: the run's PRNG key.

  Returns:
    ``curve`` (float[queries]: test accuracy of the best-by-score arch after
    each query), ``best_arch``, ``best_score``, ``best_test_acc``, ``cost_s``
    (simulated training seconds), ``scores`` (every search score, in order).

  Raises:
    ValueError: the strategy returned no architecture or a wrong shape.
  """
  k_strategy, k_evaluator, k_loop = split_key(key, 3)
  s_state = strategy.init(k_strategy)
  e_state = evaluator.init(k_evaluator)
  curve = np.empty(queries)
  scores_seen = np.empty(queries)
  best_score, best_test, best_arch = -np.inf, np.nan, None
  done, step, cost = 0, 0, 0.0
  while done < queries:
    # The table's costs are not needed here, so the strategies are told none.
    rnd = search_round(strategy, evaluator, evaluator.space, s_state, e_state, k_loop, step,
                       remaining=queries - done)
    step += 1
    s_state, e_state = rnd.strategy_state, rnd.evaluator_state
    cost += float(np.sum(rnd.evaluation.costs))
    for i, score in enumerate(rnd.scores):
      if score > best_score:
        best_score, best_arch = float(score), rnd.archs[i]
        test = rnd.evaluation.info[i].get("test_acc") if rnd.evaluation.info else None
        if test is None:
          test = (evaluator.report(rnd.archs[i]) or {}).get("test_acc", np.nan)
        best_test = float(test)
      curve[done] = best_test
      scores_seen[done] = score
      done += 1
  return {"curve": curve, "best_arch": best_arch, "best_score": best_score,
          "best_test_acc": best_test, "cost_s": cost, "scores": scores_seen}


def run_search(strategy: str | type[Strategy], queries: int, runs: int, *,
               benchmark_file: str | os.PathLike[str] | None = None,
               config: dict[str, Any] | None = None, seed: int = 0,
               callback: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
  """``runs`` seeded searches of ``queries`` look-ups; summary over runs.

  Args:
    strategy: a registry name (``"random"``, ``"evolution"``, ``"nao"``, ...)
      or a ``Strategy`` subclass.
    queries: evaluations per run (>= 1).
    runs: independent runs (>= 1); run ``r`` uses ``jax.random.key(seed + r)``.
    benchmark_file: a NAS-Bench-201 CSV table; None: the shipped CIFAR-10 one.
    config: the strategy's settings.
    seed: the first run's seed.
    callback: called as ``callback(run, run_result)`` after each run.

  Returns:
    A JSON-ready dict with ``strategy, queries, runs, mean_test_acc,
    std_test_acc`` (sample std over runs, 0 for one run), ``curve`` (mean best
    test accuracy after each query), ``seconds`` (wall time, including
    loading the table and compiling), ``cpu_seconds`` (this process's CPU
    time, less sensitive to other load on the machine), and
    ``std_curve``, ``final_test_accs``, ``best_archs`` (benchmark strings),
    ``mean_best_score``, ``config``, ``seed``, ``benchmark_file``.

  Raises:
    ValueError: bad counts, unknown strategy or settings, bad table.
  """
  for name, value in (("queries", queries), ("runs", runs)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer")
  cls = registry.get_strategy(strategy) if isinstance(strategy, str) else strategy
  name = strategy if isinstance(strategy, str) else getattr(cls, "name", cls.__name__)
  space = registry.get_space("nb201")
  ev_config = {} if benchmark_file is None else {"benchmark_file": os.fspath(benchmark_file)}
  start, cpu_start = time.perf_counter(), time.process_time()
  curves, finals, archs, best_scores = [], [], [], []
  for r in range(runs):
    strategy_obj = cls(space, dict(config or {}))
    evaluator = TabularEvaluator(space, ev_config)
    out = run_one(strategy_obj, evaluator, queries, jax.random.key(seed + r))
    curves.append(out["curve"])
    finals.append(out["best_test_acc"])
    archs.append(evaluator.report(out["best_arch"])["arch_str"])
    best_scores.append(out["best_score"])
    if callback is not None:
      callback(r, out)
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  curves_np, finals_np = np.stack(curves), np.asarray(finals)
  ddof = 1 if runs > 1 else 0
  return {
      "strategy": name, "queries": int(queries), "runs": int(runs),
      "mean_test_acc": float(finals_np.mean()), "std_test_acc": float(finals_np.std(ddof=ddof)),
      "curve": curves_np.mean(axis=0).tolist(), "seconds": seconds,
      "cpu_seconds": cpu_seconds,
      "std_curve": curves_np.std(axis=0, ddof=ddof).tolist(),
      "final_test_accs": finals_np.tolist(), "best_archs": archs,
      "mean_best_score": float(np.mean(best_scores)), "config": dict(config or {}),
      "seed": int(seed),
      "benchmark_file": os.fspath(benchmark_file) if benchmark_file is not None else "shipped:cifar10",
  }


def plot_curves(results: list[dict[str, Any]], path: str | os.PathLike[str],
                title: str | None = None) -> None:
  """Draws each result's mean curve into one PNG, shaded +/- one standard error.

  The band is the standard error of the mean over runs (``std_curve /
  sqrt(runs)``), which is what tells two strategies' means apart.

  Args:
    results: dicts as returned by ``run_search`` (or read from its JSON);
      each needs ``strategy`` and ``curve`` (``std_curve`` optional).
    path: the PNG to write.
    title: the figure title (default: from the results).

  Example:
    >>> import os
    >>> plot_curves([{"strategy": "random", "curve": [90.1, 92.0, 92.4]},  # e.g. run_search(...)
    ...              {"strategy": "evolution", "curve": [90.5, 92.8, 93.6], "std_curve": [1, 1, 0.5],
    ...               "runs": 4}], "c.png")
    >>> os.path.getsize("c.png") > 0
    True
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  if not results:
    raise ValueError("nothing to plot: give at least one result")
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for res in results:
    for key in ("strategy", "curve"):
      if key not in res:
        raise ValueError(f"result without {key!r}; plot the JSON written by benchmarks/nb201.py")
    curve = np.asarray(res["curve"], float)
    x = np.arange(1, len(curve) + 1)
    label = (f"{res['strategy']}: {res.get('mean_test_acc', curve[-1]):.2f}"
             + (f" ± {res['std_test_acc']:.2f}" if "std_test_acc" in res else "")
             + (f" ({res['runs']} runs)" if "runs" in res else ""))
    line, = ax.plot(x, curve, label=label)
    if "std_curve" in res:
      sem = np.asarray(res["std_curve"], float) / np.sqrt(max(int(res.get("runs", 1)), 1))
      ax.fill_between(x, curve - sem, curve + sem, color=line.get_color(), alpha=0.2)
  finite = np.concatenate([np.asarray(r["curve"], float) for r in results])
  finite = finite[np.isfinite(finite)]
  if finite.size:
    top = finite.max()
    ax.set_ylim(max(finite.min(), top - 4.0) - 0.2, top + 0.4)
  ax.set_xlabel("queries (architectures evaluated)")
  ax.set_ylabel("test accuracy of best-by-validation arch (%)")
  ax.text(0.01, 0.01, "mean over runs, shaded: ± standard error", transform=ax.transAxes,
          fontsize=7, color="gray")
  source = results[0].get("benchmark_file", "")
  ax.set_title(title or f"NAS-Bench-201 ({os.path.basename(str(source)) or 'table'})")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(os.fspath(path), dpi=120)
  plt.close(fig)

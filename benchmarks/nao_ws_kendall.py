"""NAO-WS on digits: does the weight-sharing supernet rank architectures right?

1. Trains the shared supernet exactly as the NAO-WS search of the main command
   does (``experiments/configs/default.py`` merged with
   ``experiments/configs/nao.py``: the ``nao`` strategy with
   ``reevaluate_pool``, the ``supernet`` evaluator from the registry, the same
   budget, the runner's own rounds ``nas_jax.runner.search_round`` with the
   same keys as ``nas_jax.runner.run_experiment``).
2. Scores ``--archs`` distinct architectures with that trained supernet on the
   validation split (``SupernetEvaluator.score``: one batch, batched over
   architectures). ``--archs-from random`` (default): random architectures of
   the space, not chosen by the search, so the supernet may never have trained
   them; ``--archs-from search``: a random subset of the last round's asked
   architectures (the pool and the new ones), i.e. those NAO-WS actually ranks.
3. Trains each of them from scratch with the config's ``final`` settings
   (``nas_jax.train.train_child``, as the main command's final training).
4. Prints and writes JSON with both score lists and Kendall's tau-b between
   the supernet scores and the from-scratch test (and validation) accuracies.

Usage:
    nice -n 10 python benchmarks/nao_ws_kendall.py --out runs/nao_ws_kendall.json
    # the architectures of the search's last round instead of random ones
    nice -n 10 python benchmarks/nao_ws_kendall.py --archs-from search --out runs/k_search.json
    # quicker check: fewer archs and epochs
    python benchmarks/nao_ws_kendall.py --out /tmp/k.json --archs 4 --final-epochs 1
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiments" / "configs"


def kendall_tau_b(x: Any, y: Any) -> float:
  """Kendall's tau-b rank correlation (ties in either list handled).

  ``tau_b = (C - D) / sqrt((n0 - n1) * (n0 - n2))`` with ``C`` / ``D`` the
  concordant / discordant pairs, ``n0`` all pairs, ``n1`` / ``n2`` the pairs
  tied in ``x`` / ``y``.

  Args:
    x: float[n] first scores.
    y: float[n] second scores (same length, n >= 2).

  Returns:
    tau-b in [-1, 1]; NaN when either list is constant.

  Raises:
    ValueError: lengths differ, fewer than 2 items or non-finite values.

  Example:
    >>> kendall_tau_b([1, 2, 3], [1, 3, 2])
    0.3333333333333333
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
    raise ValueError(f"kendall_tau_b needs two 1-D lists of the same length >= 2, got shapes "
                     f"{x.shape} and {y.shape}")
  if not (np.isfinite(x).all() and np.isfinite(y).all()):
    raise ValueError("kendall_tau_b needs finite scores; drop failed runs first")
  iu = np.triu_indices(len(x), 1)
  dx = np.sign(x[:, None] - x[None, :])[iu]
  dy = np.sign(y[:, None] - y[None, :])[iu]
  n0 = float(len(dx))
  n1, n2 = float(np.sum(dx == 0)), float(np.sum(dy == 0))
  denom = np.sqrt((n0 - n1) * (n0 - n2))
  if denom == 0:
    return float("nan")
  return float(np.sum(dx * dy) / denom)


def nao_ws_config(overrides: list[str] | None = None) -> dict[str, Any]:
  """The main command's resolved config (default.py, then nao.py, then ``--set``)."""
  from nas_jax import experiment  # pylint: disable=import-outside-toplevel
  config = experiment.load_config_file(CONFIGS / "default.py")
  config = experiment.merge(config, experiment.load_config_file(CONFIGS / "nao.py"))
  config["strategy"]["name"] = "nao"
  config = experiment.apply_overrides(config, overrides or [])
  return experiment.validate_config(config)


def train_supernet_like_search(cfg: dict[str, Any], dataset, log=print):
  """Runs the NAO-WS search loop (no final training); returns the evaluator and its state.

  Args:
    cfg: a resolved config (``nao_ws_config``).
    dataset: the experiment's ``ImageDataset``.
    log: a print-like function for progress lines.

  Returns:
    ``(space, evaluator, evaluator_state, searched)`` where ``searched`` is
    the list of (arch, search score) of the last round.
  """
  from nas_jax import registry  # pylint: disable=import-outside-toplevel
  from nas_jax.runner.search import search_round  # pylint: disable=import-outside-toplevel
  space = registry.get_space(cfg["space"], **cfg["space_options"])
  strategy = registry.get_strategy(cfg["strategy"]["name"])(
      space, {k: v for k, v in cfg["strategy"].items() if k != "name"})
  ev_name = cfg["evaluator"]["name"]
  evaluator = registry.get_evaluator(ev_name)(space, dict(cfg["evaluator"].get(ev_name, {})),
                                              data=dataset)
  # the experiment's keys: split(key(seed), 4) = (strategy, evaluator, search, final)
  k_strategy, k_evaluator, k_search, _ = jax.random.split(jax.random.key(cfg["seed"]), 4)
  s_state, e_state = strategy.init(k_strategy), evaluator.init(k_evaluator)
  done, r, last = 0, 0, []
  while done < cfg["budget"]:
    t0 = time.perf_counter()
    rnd = search_round(strategy, evaluator, space, s_state, e_state, k_search, r,
                       remaining=cfg["budget"] - done)
    s_state, e_state = rnd.strategy_state, rnd.evaluator_state
    done += len(rnd.archs)
    last = list(zip(rnd.archs, rnd.scores))
    log(f"search round {r}: {len(rnd.archs)} archs, best supernet score {rnd.scores.max():.2f}, "
        f"{time.perf_counter() - t0:.1f} s")
    r += 1
  return space, evaluator, e_state, last


def distinct_random_archs(space, key: jax.Array, n: int) -> np.ndarray:
  """``n`` random archs with distinct ``arch_id``."""
  out, seen, i = [], set(), 0
  while len(out) < n:
    if i > 100:
      raise ValueError(f"could not draw {n} distinct architectures of {space.name!r}")
    block = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.fold_in(key, i), 2 * n)))
    i += 1
    for a in block:
      if space.arch_id(a) not in seen and len(out) < n:
        seen.add(space.arch_id(a))
        out.append(a)
  return np.stack(out)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--out", required=True, help="JSON output file")
  parser.add_argument("--archs", type=int, default=10, help="random architectures to compare")
  parser.add_argument("--arch-seed", type=int, default=1, help="seed of the random architectures")
  parser.add_argument("--archs-from", choices=("random", "search"), default="random",
                      help="random archs of the space, or a random subset of the search's "
                           "last round")
  parser.add_argument("--final-epochs", type=int, default=None,
                      help="override final.epochs of the config (default: the config's)")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="config override as in experiments/run.py (repeatable)")
  parser.add_argument("--workdir", default=None,
                      help="checkpoints of the from-scratch runs (a rerun resumes them)")
  args = parser.parse_args(argv)
  if args.archs < 2:
    parser.error("--archs must be >= 2 (a rank correlation needs pairs)")

  from nas_jax import experiment, train  # pylint: disable=import-outside-toplevel
  from nas_jax.data import load_dataset  # pylint: disable=import-outside-toplevel
  experiment.enable_compile_cache()
  try:
    cfg = nao_ws_config(args.set)
  except ValueError as e:
    parser.error(str(e))
  if args.final_epochs is not None:
    cfg["final"]["epochs"] = args.final_epochs
  if cfg["final"].get("epochs", 0) < 1:
    parser.error("final.epochs must be >= 1 to train from scratch")
  start = time.perf_counter()
  data_kwargs = dict(cfg["data"])
  data_kwargs.setdefault("seed", 0)  # as the experiment: one fixed split
  dataset = load_dataset(cfg["dataset"], data_dir=cfg["data_dir"], **data_kwargs)

  space, evaluator, e_state, last = train_supernet_like_search(
      cfg, dataset, log=lambda m: print(m, flush=True))
  t_search = time.perf_counter() - start
  if args.archs_from == "random":
    archs = distinct_random_archs(space, jax.random.key(args.arch_seed), args.archs)
  else:
    if len(last) < args.archs:
      parser.error(f"the last search round asked {len(last)} archs, fewer than --archs")
    pick = np.asarray(jax.random.permutation(jax.random.key(args.arch_seed), len(last)))
    archs = np.stack([last[i][0] for i in pick[:args.archs]])
  supernet_scores, supernet_losses = evaluator.score(
      e_state, archs, jax.random.key(args.arch_seed + 1))
  print("supernet scores (valid %):", np.round(supernet_scores, 2).tolist(), flush=True)

  k_final = jax.random.key(cfg["seed"] + 1)
  test_accs, valid_accs, secs = [], [], []
  for i, arch in enumerate(archs):
    workdir = None if args.workdir is None else os.path.join(args.workdir, f"arch{i}")
    out = train.train_child(space, arch, dataset, dict(cfg["final"]),
                            jax.random.fold_in(k_final, i), workdir=workdir)
    test_accs.append(float(out["test_acc"]))
    valid = out["curve"][-1].get("valid_acc")  # None when the recipe holds no data out
    valid_accs.append(None if valid is None else float(valid))
    secs.append(float(out["seconds"]))
    print(f"arch {i}: supernet {supernet_scores[i]:.2f}  scratch valid "
          f"{'-' if valid is None else f'{valid:.2f}'}  test {test_accs[-1]:.2f}  "
          f"({secs[-1]:.1f} s)", flush=True)

  tau_test = kendall_tau_b(supernet_scores, test_accs)
  tau_valid = (None if any(v is None for v in valid_accs)
               else kendall_tau_b(supernet_scores, valid_accs))
  result = {
      "kendall_tau_test": tau_test,
      "kendall_tau_valid": tau_valid,
      "supernet_scores": np.asarray(supernet_scores, float).tolist(),
      "supernet_losses": np.asarray(supernet_losses, float).tolist(),
      "scratch_test_accs": test_accs,
      "scratch_valid_accs": valid_accs,
      "scratch_seconds": secs,
      "genotypes": [space.to_genotype(a) for a in archs],
      "arch_ids": [space.arch_id(a) for a in archs],
      "config": {k: cfg[k] for k in ("seed", "space", "dataset", "budget", "strategy",
                                     "evaluator", "final")},
      "arch_seed": args.arch_seed,
      "archs_from": args.archs_from,
      "search_seconds": t_search,
      "seconds": time.perf_counter() - start,
      "loadavg": list(os.getloadavg()),
  }
  if os.path.dirname(args.out):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1, default=str)
  print(f"Kendall tau-b (supernet score vs from-scratch test acc): {tau_test:.3f}; "
        f"vs from-scratch valid acc: {'-' if tau_valid is None else f'{tau_valid:.3f}'}  "
        f"({len(archs)} archs, "
        f"{result['seconds']:.0f} s) -> {args.out}")
  return 0


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # see nas_jax/runtime.py
  sys.exit(main())

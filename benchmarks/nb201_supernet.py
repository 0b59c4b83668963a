"""Ranking quality of the NAS-Bench-201 weight-sharing supernet on CIFAR-10.

Trains the nb201 weight-sharing supernet with the library's
``SupernetEvaluator``, each step on a uniformly random cell (random-sampling
parameter sharing, the RSPS baseline of the NAS-Bench-201 paper), and at
checkpoints scores ``--archs`` random cells on held-out validation images.
The scores are compared with the benchmark table (200-epoch accuracies):

- ``kendall_tau`` (tau-b, ``nao_ws_kendall.kendall_tau_b``) against the table's ``valid_acc``, over
  all scored cells and over the ``trainable`` ones (table valid accuracy
  above 80 %: uniform sampling also draws cells whose output is cut off from
  the input, which any ranking separates easily and which inflate tau);
- ``top1_test_acc``: the table test accuracy of the cell the supernet ranks
  first, against ``best_test_acc`` of the scored cells.

The data must be CIFAR-10 as an image folder, e.g. the JPEG copy in
``../shared/data`` unzipped outside the repository; 25,000 training images
train the supernet and 25,000 are held out for validation, like the
benchmark's ``cifar10-valid`` split (the split itself differs).

Usage:
    unzip -q ../shared/data/cifar10-jpeg.zip -d /tmp/cifar10
    python benchmarks/nb201_supernet.py --data imagefolder:/tmp/cifar10 --steps 2000 --eval-every 500 \\
        --out /tmp/nb201_supernet.json
"""
from __future__ import annotations

import argparse
import json
import time


TRAINABLE_VALID_ACC = 80.0  # table valid accuracy (%) above which a cell counts as trainable


def ranking(scores, valid_acc, test_acc) -> dict:
  """Kendall tau-b of ``scores`` against the table's ``valid_acc`` (all cells and
  trainable ones), and the table test accuracy of the top-scored cell.

  Example:
      >>> ranking(np.array([1., 2., 3.]), np.array([85., 90., 10.]), np.array([86., 91., 10.]))["all"]
      {'n': 3, 'kendall_tau': -0.3333}
  """
  import numpy as np

  from nao_ws_kendall import kendall_tau_b  # benchmarks/nao_ws_kendall.py, beside this script

  scores, valid_acc, test_acc = (np.asarray(a, np.float64) for a in (scores, valid_acc, test_acc))
  out = {}
  trainable = valid_acc > TRAINABLE_VALID_ACC
  for name, keep in (("all", np.ones_like(trainable)), ("trainable", trainable)):
    if keep.sum() >= 3:
      out[name] = {"n": int(keep.sum()), "kendall_tau": round(float(kendall_tau_b(scores[keep], valid_acc[keep])), 4)}
  top = int(np.argmax(scores))
  out["top1_test_acc"] = round(float(test_acc[top]), 2)
  out["best_test_acc"] = round(float(test_acc.max()), 2)
  return out


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True, help="imagefolder:PATH of CIFAR-10 (train/ and test/ class folders)")
  parser.add_argument("--steps", type=int, default=2000, help="supernet training steps in all")
  parser.add_argument("--eval-every", type=int, default=500, help="score the cells every this many steps")
  parser.add_argument("--archs", type=int, default=100, help="random cells scored")
  parser.add_argument("--eval-batches", type=int, default=2, help="500-image validation batches per score")
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--layers", type=int, default=5, help="cells per stage (the benchmark: 5)")
  parser.add_argument("--lr", type=float, default=0.05)
  parser.add_argument("--batch", type=int, default=64, help="training batch size")
  parser.add_argument("--eval-batch", type=int, default=500, help="images per validation batch")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="write the JSON figures here")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.eval_every < 1 or args.archs < 3 or args.eval_batches < 1:
    raise SystemExit("error: --steps, --eval-every and --eval-batches must be >= 1 and --archs >= 3")

  import jax
  import numpy as np

  from nas_jax.evaluators.supernet import SupernetEvaluator
  from nas_jax.evaluators.tabular import arch_string, load_table
  from nas_jax.spaces import get_space

  space = get_space("nb201")
  table = load_table()
  rounds = -(-args.steps // args.eval_every)
  ev = SupernetEvaluator(space, {
      "dataset": args.data, "valid_fraction": 0.5, "init_channels": args.channels, "layers": args.layers,
      "batch_size": args.batch, "eval_batch_size": args.eval_batch, "steps_per_round": args.eval_every, "total_rounds": rounds,
      "lr": args.lr, "seed": args.seed})
  t0 = time.time()
  print(f"data: {ev.dataset.summary()} ({time.time() - t0:.1f} s)", flush=True)
  key = jax.random.key(args.seed)
  state = ev.init(jax.random.fold_in(key, 0))
  all_archs = table.archs  # every cell: training draws uniformly from the whole space
  rng = np.random.default_rng(args.seed)
  scored = table.archs[rng.choice(len(table.archs), args.archs, replace=False)]
  rows = table.rows(scored)
  valid_acc, test_acc = table.valid_acc[rows], table.test_acc[rows]

  history = []
  done = 0
  for r in range(rounds):
    steps = min(args.eval_every, args.steps - done)
    t = time.time()
    state, metrics = ev.train(state, all_archs, jax.random.fold_in(key, 1000 + r), steps=steps)
    train_s = time.time() - t
    done += steps
    t = time.time()
    scores = np.mean([ev.score(state, scored, jax.random.fold_in(key, 10_000 + b))[0]
                      for b in range(args.eval_batches)], axis=0)
    eval_s = time.time() - t
    entry = {"steps": done, "train_loss": round(metrics["train_loss"], 4),
             "train_acc": round(metrics["train_acc"], 2), "train_s": round(train_s, 1),
             "step_s": round(train_s / steps, 3), "eval_s": round(eval_s, 1),
             "mean_score": round(float(scores.mean()), 2), **ranking(scores, valid_acc, test_acc)}
    history.append(entry)
    print(json.dumps(entry), flush=True)

  result = {"final": history[-1], "history": history, "wall_s": round(time.time() - t0, 1),
            "cells": [{"arch": arch_string(a), "score": round(float(sc), 2), "valid_acc": float(v),
                       "test_acc": float(te)} for a, sc, v, te in zip(scored, scores, valid_acc, test_acc)],
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "jax": jax.__version__, "backend": jax.default_backend()}
  print(json.dumps(result["final"], indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  main()

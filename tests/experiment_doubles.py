"""Test-only helpers for the experiment tests (not part of the library).

- ``write_synthetic_table(path)``: a tiny-to-build, deterministic, fake
  NAS-Bench-201 table (all 15,625 rows, scores a smooth function of the ops).
- ``NaNEvaluator`` (registered as evaluator ``"test_nan"``): scores the sum of
  the op ids but returns NaN for every third architecture of a batch.
"""
from __future__ import annotations

import gzip
import itertools

import numpy as np

from nas_jax import registry
from nas_jax.evaluators.base import Evaluation, Evaluator

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def write_synthetic_table(path) -> str:
  """Writes a fake but well-formed NB201 table (gzip CSV) and returns its path."""
  rng = np.random.default_rng(0)
  weights = np.array([0.0, 1.0, 2.0, 3.0, 0.5])
  lines = ["index,arch,test_acc,valid_acc,valid_acc_seeds,train_time_s"]
  for i, ops in enumerate(itertools.product(range(5), repeat=6)):
    base = 60.0 + 5.0 * float(weights[list(ops)].sum()) / 3.0
    seeds = base + rng.normal(0, 0.5, 3)
    arch = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*(OPS[o] for o in ops))
    lines.append(f"{i},{arch},{base + 1:.2f},{seeds.mean():.3f},"
                 f"{';'.join(f'{s:.2f}' for s in seeds)},{100 + i % 7}")
  with gzip.open(path, "wt") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


class NaNEvaluator(Evaluator):
  """Every third architecture (by position in the batch) gets a NaN score."""

  name = "test_nan"

  def evaluate(self, state, archs, key):
    scores = np.asarray(archs, np.float64).reshape(len(archs), -1).sum(1)
    scores[::3] = np.nan
    return Evaluation(scores, np.ones(len(archs)),
                      [{"nonfinite_steps": 1} for _ in archs]), state


registry.register("evaluator", "test_nan", f"{__name__}:NaNEvaluator")

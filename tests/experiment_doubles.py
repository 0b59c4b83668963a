"""Test-only helpers for the experiment tests (not part of the library).

- ``write_synthetic_table(path)``: a tiny-to-build, deterministic, fake
  NAS-Bench-201 table (all 15,625 rows, scores a smooth function of the ops).
- ``NaNEvaluator`` (registered as evaluator ``"test_nan"``): scores the sum of
  the op ids but returns NaN for every third architecture of a batch.
- ``ToyOneShot`` (registered as strategy ``"test_toy_oneshot"``): a cheap
  one-shot method on nb201 for the one-shot loop's tests.
- ``load_cli(name)``: the script ``experiments/<name>.py`` as a module (its
  ``main``, parsers and helpers called in-process).
"""
from __future__ import annotations

import gzip
import importlib.util
import itertools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import registry
from nas_jax.evaluators.base import Evaluation, Evaluator
from nas_jax.oneshot.base import OneShotMethod

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def load_cli(name: str):
  """The script ``experiments/<name>.py`` as a fresh module (not put in ``sys.modules``)."""
  spec = importlib.util.spec_from_file_location(f"cli_{name}", EXPERIMENTS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
  replayable = True

  def evaluate(self, state, archs, key):
    scores = np.asarray(archs, np.float64).reshape(len(archs), -1).sum(1)
    scores[::3] = np.nan
    return Evaluation(scores, np.ones(len(archs)),
                      [{"nonfinite_steps": 1} for _ in archs]), state


registry.register("evaluator", "test_nan", f"{__name__}:NaNEvaluator")


class CountingEvaluator(Evaluator):
  """Scores nb201 archs by a fixed function of the ops and the key, slowly, and counts them.

  The file named by ``$NAS_JAX_TEST_COUNT_FILE`` gets one line per evaluated
  architecture when an ``evaluate`` call finishes (not in the config, so
  that copies of a workdir stay the same experiment). Config: ``sleep_s``
  (seconds per architecture).
  Registered as evaluator ``"test_counting"``.
  """

  name = "test_counting"
  replayable = True

  def evaluate(self, state, archs, key):
    archs = np.asarray(archs)
    time.sleep(float(self.config.get("sleep_s", 0.0)) * len(archs))
    noise = np.asarray(jax.random.uniform(key, (len(archs),)))
    scores = archs.reshape(len(archs), -1).astype(np.float64) @ np.arange(1, 7) + noise
    with open(os.environ["NAS_JAX_TEST_COUNT_FILE"], "a") as f:
      f.write("x\n" * len(archs))
      f.flush()
      os.fsync(f.fileno())
    return Evaluation(scores, np.ones(len(archs)), [{} for _ in archs]), state


registry.register("evaluator", "test_counting", f"{__name__}:CountingEvaluator")


class ToyOneShot(OneShotMethod):
  """A one-shot method in miniature (registered as strategy ``"test_toy_oneshot"``).

  Architecture parameters ``alpha`` (float[6, 5] over nb201's edges and ops)
  and "weights" ``w`` are trained by jitted gradient steps on noisy targets
  drawn from the step key; ``derive`` is the arg-max op per edge. Each step
  sleeps ``sleep_s`` so that a test can kill a run in the middle of an epoch.
  """

  name = "test_toy_oneshot"
  needs = ()
  supported_spaces = ("nb201",)

  @classmethod
  def default_config(cls):
    return {"steps_per_epoch": 5, "lr": 0.3, "sleep_s": 0.0, "epochs": 1}

  def init(self, key):
    return {"alpha": 1e-3 * jax.random.normal(key, (6, 5)), "w": jnp.zeros((6, 5)),
            "step": jnp.zeros((), jnp.int32)}

  def steps_per_epoch(self):
    return int(self.config["steps_per_epoch"])

  def step(self, state, key):
    time.sleep(self.config["sleep_s"])
    new, metrics = _toy_step(state, key, self.config["lr"])
    return new, metrics

  def derive(self, state):
    return np.asarray(jnp.argmax(state["alpha"], -1), np.int32)

  def score(self, state, arch, key):
    target = jnp.asarray(_TOY_TARGET)
    acc = 100.0 * float(jnp.mean(jnp.asarray(arch) == target))
    return {"search_score": acc, "valid_acc": acc,
            "noise": float(jax.random.uniform(key))}

  def summary(self, state):
    return {"alpha": np.round(np.asarray(state["alpha"]), 4).tolist()}


_TOY_TARGET = np.array([3, 1, 2, 3, 4, 3], np.int32)


@jax.jit
def _toy_step(state, key, lr):
  noise = 0.5 * jax.random.normal(key, (6, 5))

  def loss(alpha, w):
    p = jax.nn.softmax(alpha + w, -1)
    return -jnp.mean(jnp.log(p[jnp.arange(6), _TOY_TARGET] + 1e-9)) + jnp.mean((w - noise) ** 2)

  value, (ga, gw) = jax.value_and_grad(loss, argnums=(0, 1))(state["alpha"], state["w"])
  new = {"alpha": state["alpha"] - lr * ga, "w": state["w"] - lr * gw, "step": state["step"] + 1}
  return new, {"train_loss": value, "grad_norm": jnp.sqrt(jnp.sum(ga ** 2))}


registry.register("strategy", "test_toy_oneshot", f"{__name__}:ToyOneShot")

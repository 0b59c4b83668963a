"""Benchmark of BayesNAS's Hessian diagonal against one training step (CPU).

Builds ``BayesNAS`` on the ``darts`` space's relaxation at the size of
DARTS's search network (8 cells, C = 16, 32x32x3 inputs, batch 64; random
CIFAR-shaped images, since only the shapes matter) and times, after their
compilation, alternately (A/B, so that a change of load on the shared machine
hits both):

- ``train_step_s``: one search step of the switch phase (forward and backward
  w.r.t. the weights and the switches, SGD updates), median of ``--repeats``;
- ``hessian_s``: the Hessian diagonal w.r.t. all switches that the prior
  update uses per batch (``hessian="hutchinson"``, the default above 64
  switches: one Hessian-vector product by forward-over-reverse), median;
- ``ratio = hessian_s / train_step_s`` (the issue asks for at most 5).

Also written: both compile times (first call), the number of switches, the
JAX version, the CPU count and the load average at start and end.

Usage:
    nice python benchmarks/bayesnas.py --out /tmp/bayesnas.json
    python benchmarks/bayesnas.py --layers 5 --init-channels 8 --out /tmp/small.json   # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas_jax import registry  # noqa: E402
from nas_jax.data import images as data_lib  # noqa: E402
from nas_jax.oneshot.bayesnas import BayesNAS  # noqa: E402


def cifar_shaped(n: int, seed: int = 0) -> data_lib.ImageDataset:
  """Random uint8 32x32x3 images with 10 labels (train, valid and test splits of ``n``)."""
  rng = np.random.default_rng(seed)
  split = lambda: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                   rng.integers(0, 10, n).astype(np.int32))
  (xt, yt), (xv, yv), (xs, ys) = split(), split(), split()
  return data_lib.ImageDataset(name="cifar_shaped", num_classes=10, image_shape=(32, 32, 3),
                               mean=np.float32([0.5] * 3), std=np.float32([0.25] * 3),
                               images={"train": xt, "valid": xv, "test": xs},
                               labels={"train": yt, "valid": yv, "test": ys}, flip=True)


def _timed(fn) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="JSON file to write")
  p.add_argument("--layers", type=int, default=8, help="cells (DARTS search: 8)")
  p.add_argument("--init-channels", type=int, default=16, help="C (DARTS search: 16)")
  p.add_argument("--batch", type=int, default=64, help="batch size (DARTS: 64)")
  p.add_argument("--repeats", type=int, default=3, help="timed calls of each, alternating")
  p.add_argument("--hessian", default="hutchinson", choices=("hutchinson", "exact"))
  args = p.parse_args(argv)
  load0 = os.getloadavg()[0]
  data = cifar_shaped(args.batch)
  m = BayesNAS(registry.get_space("darts"), {"init_channels": args.init_channels, "layers": args.layers,
                                             "batch_size": args.batch, "hessian": args.hessian, "epochs": 2},
               data=data)
  state = m.init(jax.random.key(0))
  b = next(data_lib.epoch_batches(data, "train", args.batch, seed=0, epoch=0))
  x, y = b["image"], b["label"]
  step_fn = m._build_step()  # pylint: disable=protected-access
  net = {k: state[k] for k in ("params", "batch_stats", "momentum", "switches", "switch_momentum")}
  prior = state["prior"]

  def train_step():
    return step_fn(net, x, y, np.float32(0.025), np.float32(1.0), prior["omega_edge"], prior["omega_op"])

  def hessian():
    return m.switch_hessian(state, (x, y), jax.random.key(1))

  out = {"space": "darts", "layers": args.layers, "init_channels": args.init_channels, "batch": args.batch,
         "hessian_mode": m.hessian_mode, "num_switches": m.num_switches}
  out["train_step_compile_s"] = round(_timed(train_step), 2)
  print("train step compiled in", out["train_step_compile_s"], "s", flush=True)
  out["hessian_compile_s"] = round(_timed(hessian), 2)
  print("hessian compiled in", out["hessian_compile_s"], "s", flush=True)
  steps, hess = [], []
  for r in range(args.repeats):
    steps.append(_timed(train_step))
    hess.append(_timed(hessian))
    print(f"repeat {r}: train step {steps[-1]:.2f} s, hessian {hess[-1]:.2f} s", flush=True)
  out["train_step_s"] = round(statistics.median(steps), 3)
  out["hessian_s"] = round(statistics.median(hess), 3)
  out["ratio"] = round(out["hessian_s"] / out["train_step_s"], 3)
  out["train_step_all_s"] = [round(v, 3) for v in steps]
  out["hessian_all_s"] = [round(v, 3) for v in hess]
  out.update(jax_version=jax.__version__, cpus=os.cpu_count(), load_start=round(load0, 2),
             load_end=round(os.getloadavg()[0], 2))
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()

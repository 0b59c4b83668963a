"""Same-process A/B of the nasnet supernet train step: a reference version against the current one.

Whole benchmark runs on these shared 2-core machines differ by about 10 % from
one run to the next, more than most single optimisations gain. This script
loads a reference copy of ``nas_jax/networks/nasnet.py`` beside the installed
one, compiles both train steps, then times them on the same random
architectures with the steps alternating, and reports the per-architecture
time ratio (current / reference), which machine load affects far less.

Usage:
    git show HEAD~1:nas_jax/networks/nasnet.py > /tmp/nasnet_ref.py
    python benchmarks/supernet_ab.py --ref /tmp/nasnet_ref.py --archs 12 --out /tmp/ab.json

Both versions share ``nas_jax.ops`` and ``nas_jax.networks.supernet`` (the
installed ones): to compare a change to those, copy the reference module under
another name and point ``--ref`` at a ``nasnet.py`` that imports it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time


def _load(path: str, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise SystemExit(f"error: cannot load a module from --ref {path!r}; give a copy of nasnet.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up here
  spec.loader.exec_module(module)
  return module


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="path of the reference nasnet.py")
  parser.add_argument("--archs", type=int, default=12, help="random architectures timed (one step each)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--out", default=None, help="write the JSON figures here")
  args = parser.parse_args()

  import jax
  import numpy as np

  from nas_jax.networks import nasnet as current
  from supernet import build_train_step  # benchmarks/supernet.py, beside this script

  reference = _load(args.ref, "nasnet_reference")
  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.batch, args.size, args.size, 3), np.float32)
  y = rng.integers(0, 10, args.batch).astype(np.int32)
  archs = [current.random_arch(jax.random.key(i)) for i in range(args.archs + 1)]

  runs = {}
  for name, module in (("reference", reference), ("current", current)):
    _, state, step = build_train_step(module, size=args.size)
    t = time.perf_counter()
    state, metrics = step(state, archs[0], (x, y), jax.random.key(1))
    jax.block_until_ready(metrics)
    print(f"{name}: first step (compile included) {time.perf_counter() - t:.1f} s, "
          f"loss {float(metrics['loss']):.4f}", flush=True)
    runs[name] = {"step": step, "state": state, "times": []}

  for arch in archs[1:]:
    for run in runs.values():
      t = time.perf_counter()
      run["state"], metrics = run["step"](run["state"], arch, (x, y), jax.random.key(1))
      jax.block_until_ready(metrics)
      run["times"].append(time.perf_counter() - t)

  ratio = np.asarray(runs["current"]["times"]) / np.asarray(runs["reference"]["times"])
  result = {name: {"median_s": round(float(np.median(r["times"])), 4), "min_s": round(min(r["times"]), 4)}
            for name, r in runs.items()}
  result.update({"ratio_median": round(float(np.median(ratio)), 4),
                 "ratio_geomean": round(float(np.exp(np.mean(np.log(ratio)))), 4),
                 "archs": args.archs, "ref": args.ref})
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  main()

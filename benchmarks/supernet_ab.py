"""Same-process A/B of the nasnet supernet train step: a reference version against the current one.

Whole benchmark runs on these shared 2-core machines differ by about 10 % from
one run to the next, more than most single optimisations gain. This script
loads a reference copy of ``nas_jax/networks/nasnet.py`` beside the installed
one, compiles both train steps, then times them on the same random
architectures with the steps alternating, and reports the per-architecture
time ratio (current / reference), which machine load affects far less.

The reference is the ``nas_jax/networks/nasnet`` package of another checkout
(its modules import each other relatively, so the copy loads beside the
installed one), or the single-file ``nasnet.py`` of revisions before the
package split.

Usage:
    git worktree add /tmp/ref HEAD~1
    python benchmarks/supernet_ab.py --ref /tmp/ref/nas_jax/networks/nasnet --archs 12 --out /tmp/ab.json

Both versions share ``nas_jax.ops`` and ``nas_jax.networks.supernet`` (the
installed ones): to compare a change to those, copy the reference module under
another name and point ``--ref`` at a ``nasnet`` copy that imports it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time


def _load(path: str, name: str):
  """The module at ``path``: a package directory (its ``__init__.py``) or a single ``.py`` file."""
  location, search = path, None
  if os.path.isdir(path):
    location, search = os.path.join(path, "__init__.py"), [path]
  spec = None
  if os.path.isfile(location):
    spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=search)
  if spec is None or spec.loader is None:
    raise SystemExit(f"error: cannot load a module from --ref {path!r}; give a nasnet package directory or "
                     "a nasnet.py file")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses (and relative imports) look their module up here
  spec.loader.exec_module(module)
  return module


class _ModuleSupernet:
  """The ``WeightSharing`` calls ``build_train_step`` makes, on a pre-family ``nasnet.py`` module."""

  def __init__(self, module):
    self.module = module

  def config(self, **fields):
    return self.module.SupernetConfig(**fields)

  def init(self, key, config, input_shape):
    return self.module.init_supernet(key, config, input_shape)

  def default_optimizer(self):
    return self.module.default_optimizer()

  def init_train_state(self, params, batch_stats, tx):
    return self.module.init_train_state(params, batch_stats, tx)

  def make_train_step(self, config, tx):
    return self.module.make_train_step(config, tx)


def _supernet_of(module):
  family = getattr(module, "FAMILY", None)
  return family.supernet if family is not None else _ModuleSupernet(module)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="path of the reference nasnet package (or nasnet.py)")
  parser.add_argument("--archs", type=int, default=12, help="random architectures timed (one step each)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--out", default=None, help="write the JSON figures here")
  args = parser.parse_args()

  import jax
  import numpy as np

  from nas_jax import networks
  from nas_jax.networks import nasnet
  from supernet import build_train_step  # benchmarks/supernet.py, beside this script

  current = networks.family("nasnet").supernet
  reference = _supernet_of(_load(args.ref, "nasnet_reference"))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.batch, args.size, args.size, 3), np.float32)
  y = rng.integers(0, 10, args.batch).astype(np.int32)
  archs = [nasnet.random_arch(jax.random.key(i)) for i in range(args.archs + 1)]

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

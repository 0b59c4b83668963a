"""Measures NAO's encoder-predictor-decoder on NAS-Bench-201 (and nasnet).

Figures (written as JSON to ``--out``):

* ``reconstruction_acc``: exact reconstruction (all tokens right) of held-out
  nb201 architectures after training on 1,000 random ones;
  ``reconstruction_acc_nasnet`` the same on the nasnet space.
* ``pairwise_acc``: pairwise ranking accuracy of the predictor on held-out
  nb201 architectures after training on 500 (targets: the table's mean
  validation accuracy, min-max normalised).
* ``ascent_100_s``: wall time of the ascent for 100 seed architectures with
  the whole step-size sweep (50 step sizes) and the host-side choice of the
  first new architecture per seed, after compilation (median of repeats).

Usage:
    python benchmarks/nao.py --out runs/nao.json
    python benchmarks/nao.py --out runs/nao.json --steps 3000 --skip-nasnet
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from nas_jax.evaluators.tabular import TabularEvaluator
from nas_jax.predictors.nao import NAOModel, pairwise_accuracy
from nas_jax.registry import get_space


def _sample_unique(space, key, n):
  """``n`` random archs with distinct canonical forms."""
  out, seen, i = [], set(), 0
  while len(out) < n:
    block = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.fold_in(key, i), 4 * n)))
    i += 1
    for a in block:
      k = space.arch_id(a)
      if k not in seen:
        seen.add(k)
        out.append(a)
        if len(out) == n:
          break
  return np.stack(out)


def _train(model, key, tokens, targets, steps):
  params, opt = model.init(jax.random.fold_in(key, 0))
  cap = len(tokens)
  t0 = time.perf_counter()
  params, opt, metrics = model.fit(params, opt, jax.random.fold_in(key, 1), tokens,
                                   targets.astype(np.float32), cap, steps)
  jax.block_until_ready(params)
  return params, time.perf_counter() - t0, metrics


def reconstruction(space_name, n_train, n_test, steps, key, settings):
  space = get_space(space_name)
  archs = _sample_unique(space, key, n_train + n_test)
  tokens = np.asarray(jax.vmap(space.to_tokens)(archs))
  model = NAOModel(space, **settings)
  # reconstruction only: the score target is a constant (the MSE term is idle)
  params, secs, metrics = _train(model, key, tokens[:n_train], np.zeros(n_train), steps)
  rec = np.asarray(model.reconstruct(params, tokens[n_train:]))
  acc = float(np.mean(np.all(rec == tokens[n_train:], axis=1)))
  tok_acc = float(np.mean(rec == tokens[n_train:]))
  print(f"{space_name}: exact reconstruction {acc:.4f} (token {tok_acc:.4f}) of {n_test} held-out "
        f"after {steps} steps on {n_train} ({secs:.1f} s, nll {float(metrics.nll):.4f})", flush=True)
  return acc, tok_acc, secs


def pairwise(n_train, n_test, steps, key, settings):
  space = get_space("nb201")
  table = TabularEvaluator(space)
  archs = _sample_unique(space, key, n_train + n_test)
  valid = np.array([table.report(a)["valid_acc"] for a in archs])
  tokens = np.asarray(jax.vmap(space.to_tokens)(archs))
  y = valid[:n_train]
  targets = (y - y.min()) / (y.max() - y.min())
  model = NAOModel(space, **settings)
  params, secs, _ = _train(model, key, tokens[:n_train], targets, steps)
  pred = np.asarray(model.predict(params, tokens[n_train:]))
  acc = pairwise_accuracy(valid[n_train:], pred)
  print(f"nb201: pairwise accuracy {acc:.4f} on {n_test} held-out after {steps} steps on "
        f"{n_train} ({secs:.1f} s)", flush=True)
  return acc, secs, model, params, tokens


def ascent_time(model, params, tokens, repeats=5):
  space = model.space
  seeds = tokens[:100]
  etas = model.etas(50, 1.0)
  from_tokens = jax.jit(jax.vmap(space.from_tokens))
  known = {space.arch_id(a) for a in np.asarray(from_tokens(tokens))}

  def once():
    decoded, _ = model.ascend(params, seeds, etas)
    K, S, L = decoded.shape
    archs = np.asarray(from_tokens(decoded.reshape(K * S, L))).reshape((K, S) + space.arch_shape)
    decoded = np.asarray(decoded)
    seen, ids, new = set(known), {}, 0
    for k in range(K):  # per seed: the smallest eta giving a new arch
      for s in range(S):
        tb = decoded[k, s].tobytes()
        if tb not in ids:  # the canonical id once per distinct sequence
          ids[tb] = space.arch_id(archs[k, s])
        if ids[tb] not in seen:
          seen.add(ids[tb])
          new += 1
          break
    return new

  once()  # compile
  times, device, found = [], [], 0
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(model.ascend(params, seeds, etas))
    device.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    found = once()
    times.append(time.perf_counter() - t0)
  med, med_dev = float(np.median(times)), float(np.median(device))
  print(f"ascent: 100 seeds x 50 step sizes + newness check: {med:.3f} s median "
        f"(compiled ascent alone {med_dev:.3f} s; {found} new archs)", flush=True)
  return med, med_dev, found


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="JSON output file")
  parser.add_argument("--steps", type=int, default=1500, help="Adam steps per training")
  parser.add_argument("--nasnet-steps", type=int, default=None,
                      help="Adam steps for the nasnet reconstruction (default: --steps)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip-nasnet", action="store_true", help="skip the slower nasnet figure")
  parser.add_argument("--skip-reconstruction", action="store_true",
                      help="only the predictor and the ascent")
  parser.add_argument("--settings", default='{"lr": 0.003}', help="JSON NAOSettings overrides")
  args = parser.parse_args(argv)
  try:
    settings = json.loads(args.settings)
  except json.JSONDecodeError as e:
    parser.error(f"--settings is not valid JSON ({e})")
  key = jax.random.key(args.seed)
  start = time.perf_counter()
  result = {"settings": settings, "steps": args.steps, "seed": args.seed, "uptime": os.getloadavg()}
  if not args.skip_reconstruction:
    result["reconstruction_acc"], result["reconstruction_token_acc"], result["reconstruction_s"] = (
        reconstruction("nb201", 1000, 1000, args.steps, jax.random.fold_in(key, 1), settings))
  if not (args.skip_nasnet or args.skip_reconstruction):
    acc, tok, secs = reconstruction("nasnet", 1000, 1000, args.nasnet_steps or args.steps,
                                    jax.random.fold_in(key, 2), settings)
    result.update(reconstruction_acc_nasnet=acc, reconstruction_token_acc_nasnet=tok,
                  reconstruction_nasnet_s=secs)
  acc, secs, model, params, tokens = pairwise(500, 1000, args.steps, jax.random.fold_in(key, 3),
                                              settings)
  result["pairwise_acc"], result["pairwise_train_s"] = acc, secs
  result["ascent_100_s"], result["ascent_100_compiled_only_s"], result["ascent_new_archs"] = (
      ascent_time(model, params, tokens))
  result["seconds"] = time.perf_counter() - start
  if os.path.dirname(args.out):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(f"-> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

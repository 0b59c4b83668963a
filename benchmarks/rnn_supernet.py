"""Benchmark of ENAS's weight-sharing recurrent supernet on Penn Treebank (CPU).

``nas_jax.networks.rnn_supernet`` at a CPU size (default E = H = 64, batch 64,
bptt 35, N = 12 nodes, V = 10,000). Prints and writes JSON with, per
activation implementation (``--activation``):

- ``first_call_s``: the first train step (trace + compile + run);
- ``compile_s``: XLA backend compile time of that step (``jax.monitoring``);
- ``train_step_s``: median wall time of ``--steps`` steps, each on a new random
  architecture, the hidden state carried from window to window;
- ``recompiles``: train-step compilations beyond the first (0: one
  compilation serves every architecture);
- ``eval``: per method (``map``, ``vmap``) the first-call time and the median
  time of ``eval_archs`` scoring ``--archs`` architectures on one validation
  window batch (batch x bptt tokens);
- with ``--child``: ``child_step_s``, the median train-step time of the fixed
  child (``nas_jax.networks.rnn``, compiled for one architecture) beside
  ``supernet_same_arch_s``, the supernet's on that architecture, alternated.
- ``load_avg``: 1-minute load average at start and end (the machine is shared).

Usage:
    python benchmarks/rnn_supernet.py --data-dir /work/shared/data/ptb --out /tmp/rnn_supernet.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas_jax.data import ptb as ptb_lib  # noqa: E402
from nas_jax.networks import rnn_supernet as sn  # noqa: E402
from nas_jax.spaces.rnn import RNNSpace  # noqa: E402
from nas_jax.tasks import language_model as lm  # noqa: E402

_COMPILE_S: list[float] = []


def _listener(event: str, duration: float, **_):
  if "backend_compile" in event:
    _COMPILE_S.append(duration)


def _median_time(fn, n):
  times = []
  for i in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(i))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default=None)
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--bptt", type=int, default=35)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--archs", type=int, default=10)
  p.add_argument("--activation", choices=("masked", "switch", "both"), default="both")
  p.add_argument("--eval-methods", default="map,vmap")
  p.add_argument("--child", action="store_true")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  jax.monitoring.register_event_duration_secs_listener(_listener)

  corpus = ptb_lib.load_ptb(args.data_dir)
  rows = ptb_lib.batchify(corpus.train, args.batch)
  windows = list(ptb_lib.bptt_batches(rows, args.bptt, drop_remainder=True))
  vx, vy = next(iter(ptb_lib.bptt_batches(ptb_lib.batchify(corpus.valid, args.batch), args.bptt,
                                          drop_remainder=True)))
  space = RNNSpace()
  archs = jax.vmap(space.sample)(jax.random.split(jax.random.key(0), max(args.steps + 1, args.archs)))
  cfg_lm = lm.resolve_config({})
  tx = lm.make_optimizer(cfg_lm)
  out = {"hidden": args.hidden, "batch": args.batch, "bptt": args.bptt, "vocab": corpus.vocab_size,
         "num_nodes": space.num_nodes, "load_avg_start": os.getloadavg()[0], "runs": {}}
  impls = ("masked", "switch") if args.activation == "both" else (args.activation,)
  for impl in impls:
    cfg = sn.config(vocab_size=corpus.vocab_size, emb_size=args.hidden, hidden_size=args.hidden,
                    activation_impl=impl)
    state = sn.init_train_state(sn.init(jax.random.key(1), cfg), tx)
    step = sn.make_train_step(cfg, tx, slowness_reg=cfg_lm["slowness_reg"])
    hidden = sn.initial_hidden(args.batch, args.hidden)
    lr = jnp.float32(cfg_lm["lr"])
    _COMPILE_S.clear()
    t0 = time.perf_counter()
    x, y = windows[0]
    state, hidden, m = step(state, archs[0], x, y, hidden, jax.random.key(2), lr)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    compile_s = float(sum(_COMPILE_S))
    box = {"state": state, "hidden": hidden}
    losses = []

    def one(i, box=box, step=step, lr=lr):
      x, y = windows[1 + i]
      box["state"], box["hidden"], m = step(box["state"], archs[1 + i], x, y, box["hidden"],
                                            jax.random.key(3 + i), lr)
      losses.append(m["loss"])
      return m

    step_s = _median_time(one, args.steps)
    run = {"first_call_s": first, "compile_s": compile_s, "train_step_s": step_s,
           "recompiles": step._cache_size() - 1,
           "losses": [float(v) for v in jax.device_get(losses)], "eval": {}}
    for method in args.eval_methods.split(","):
      ev = sn.make_eval_archs(cfg, method=method)
      k_archs = archs[:args.archs]
      h0 = sn.initial_hidden(args.batch, args.hidden)
      _COMPILE_S.clear()
      t0 = time.perf_counter()
      loss, _ = jax.block_until_ready(ev(box["state"]["params"], k_archs, vx, vy, h0))
      first_eval = time.perf_counter() - t0
      eval_s = _median_time(lambda i: ev(box["state"]["params"], k_archs, vx, vy, h0), 3)
      run["eval"][method] = {"first_call_s": first_eval, "compile_s": float(sum(_COMPILE_S)),
                             "eval_s": eval_s, "ppl": [float(v) for v in np.exp(np.asarray(loss))]}
    if args.child:
      arch = np.asarray(archs[0])
      child = sn.build_child(space, arch, cfg)
      _, cstep, _ = lm.get_steps(child, cfg_lm)
      # Copies: the child's step donates its state, which would delete the supernet's embedding.
      cstate = {"params": jax.tree.map(jnp.copy, sn.child_variables(arch, box["state"]["params"],
                                                                    cfg)["params"])}
      cstate["opt_state"] = tx.init(cstate["params"])
      cbox = {"state": cstate, "hidden": sn.initial_hidden(args.batch, args.hidden)}

      def child_one(i):
        x, y = windows[i]
        cbox["state"], cbox["hidden"], m = cstep(cbox["state"], cbox["hidden"], x, y,
                                                 jax.random.key(i), jnp.float32(cfg_lm["lr"]))
        return m

      def super_one(i):
        x, y = windows[i]
        box["state"], box["hidden"], m = step(box["state"], archs[0], x, y, box["hidden"],
                                              jax.random.key(i), jnp.float32(cfg_lm["lr"]))
        return m

      jax.block_until_ready(child_one(0))
      ct, st = [], []
      for i in range(args.steps):
        ct.append(_median_time(child_one, 1))
        st.append(_median_time(super_one, 1))
      run["child_step_s"], run["supernet_same_arch_s"] = float(np.median(ct)), float(np.median(st))
    out["runs"][impl] = run
    print(impl, json.dumps({k: v for k, v in run.items() if k != "losses"}, indent=1), flush=True)
  out["load_avg_end"] = os.getloadavg()[0]
  print(json.dumps({k: out[k] for k in ("load_avg_start", "load_avg_end")}))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()

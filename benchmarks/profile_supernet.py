"""Where the nasnet supernet's time goes on CPU: self time per XLA op, grouped.

Runs the benchmark supernet's train step (``--mode train``, batch 64) or its
``eval_archs`` call (``--mode eval``, one 500-image batch) under
``jax.profiler`` with XLA:CPU's per-op trace events on, then maps every traced
op of the compiled program to what it computes: the C++ kernel it calls
(``custom_call_target``) or the JAX primitive its HLO metadata names. Prints
milliseconds per call (per architecture in eval mode), by label and by single
op, and writes JSON.

Use it to pick the next optimisation, not to judge one: tracing slows the
program down (whole-step times come from ``supernet.py``, A/B ratios from
``supernet_ab.py``).

Usage:
    python benchmarks/profile_supernet.py --mode eval --out /tmp/prof_eval.json
    python benchmarks/profile_supernet.py --mode train --calls 4
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time


def op_labels(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> a readable label: the kernel it calls or the JAX primitive behind it."""
  table = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(", line)
    if not m:
      continue
    name, opcode = m.group(1), m.group(2)
    target = re.search(r'custom_call_target="([^"]+)"', line)
    op_name = re.search(r'op_name="([^"]+)"', line)
    if target:
      label = target.group(1)
    elif op_name:
      label = re.sub(r"\[.*", "", op_name.group(1).split("/")[-1])
    else:
      label = opcode
    table[name] = label if opcode == "custom-call" else f"{opcode}:{label}"
  return table


def self_times(trace_path: str) -> collections.Counter:
  """Trace event name -> summed self time in microseconds (nested events subtracted, per thread)."""
  with gzip.open(trace_path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      by_thread[(e.get("pid"), e.get("tid"))].append(e)
  totals = collections.Counter()
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    open_events: list[list] = []  # [end, name, dur, time in children]
    for e in evs:
      while open_events and e["ts"] >= open_events[-1][0]:
        _, name, dur, child = open_events.pop()
        totals[name] += dur - child
      if open_events:
        open_events[-1][3] += e["dur"]
      open_events.append([e["ts"] + e["dur"], e["name"], e["dur"], 0.0])
    for _, name, dur, child in open_events:
      totals[name] += dur - child
  return totals


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", default="eval", choices=["train", "eval"])
  parser.add_argument("--calls", type=int, default=3, help="profiled calls (after one warm-up call)")
  parser.add_argument("--eval-batch", type=int, default=500)
  parser.add_argument("--eval-archs", type=int, default=2)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--out", default=None, help="write the JSON table here")
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

  import jax
  import numpy as np

  from nas_jax import networks
  from supernet import arch_sampler, build_train_step  # benchmarks/supernet.py, beside this script

  rng = np.random.default_rng(0)
  sample_arch = arch_sampler("nasnet", rng)
  net = networks.family("nasnet").supernet
  cfg, state, train_step = build_train_step(net)
  if args.mode == "train":
    x = rng.standard_normal((64, 32, 32, 3), np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    key = jax.random.key(1)
    hlo = train_step.lower(state, sample_arch(), (x, y), key).compile().as_text()

    def call():
      nonlocal state
      state, metrics = train_step(state, sample_arch(), (x, y), key)
      jax.block_until_ready(metrics)
    per_call = 1
  else:
    eval_archs = net.make_eval_archs(cfg)
    xe = rng.standard_normal((args.eval_batch, 32, 32, 3), np.float32)
    ye = rng.integers(0, 10, args.eval_batch).astype(np.int32)
    archs = lambda: np.stack([sample_arch() for _ in range(args.eval_archs)])  # noqa: E731
    hlo = eval_archs.lower(state["params"], state["batch_stats"], archs(), xe, ye).compile().as_text()

    def call():
      jax.block_until_ready(eval_archs(state["params"], state["batch_stats"], archs(), xe, ye))
    per_call = args.eval_archs

  call()
  untraced = []
  for _ in range(2):
    t = time.perf_counter()
    call()
    untraced.append(time.perf_counter() - t)
  labels = op_labels(hlo)
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(args.calls):
        call()
    traced_s = (time.perf_counter() - t) / args.calls
    totals = self_times(glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)[0])

  scale = 1e-3 / (args.calls * per_call)  # us summed over calls -> ms per call (per arch)
  by_label, by_op = collections.Counter(), collections.Counter()
  for name, us in totals.items():
    if name in labels:
      by_label[labels[name]] += us * scale
      by_op[f"{name} ({labels[name]})"] += us * scale
  unit = "ms per arch" if args.mode == "eval" else "ms per step"
  print(f"untraced {[round(u, 3) for u in untraced]} s per call, traced {traced_s:.3f} s; "
        f"XLA ops' self time (summed over threads) {sum(by_label.values()):.0f} {unit}")
  print(f"-- by label ({unit}) --")
  for label, ms in by_label.most_common(args.top):
    print(f"{ms:9.1f}  {label}")
  print(f"-- by op ({unit}) --")
  for op, ms in by_op.most_common(args.top):
    print(f"{ms:9.1f}  {op}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"mode": args.mode, "unit": unit, "untraced_s": untraced, "traced_s": traced_s,
                 "by_label": dict(by_label.most_common()), "by_op": dict(by_op.most_common(200))}, f, indent=1)


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  main()

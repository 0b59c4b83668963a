"""Benchmark of ENAS's controller: sampling speed and compile time (CPU).

For each ``--space`` (default ``nasnet``, ENAS's micro space) the controller
of the ``enas`` strategy (its defaults: hidden 64, one LSTM layer, the CIFAR
micro logit shaping) is built, and the script prints and writes JSON with,
per space:

- ``compile_s``: the first call of the sampler for 1,000 architectures
  (trace + compile + run) and ``backend_compile_s``, XLA's part of it
  (``jax.monitoring``);
- ``sample_1000_s``: the median wall time of ``--repeats`` further calls,
  each with a new key, drawing 1,000 token sequences with their
  log-probabilities and entropies (``min_sample_1000_s`` too);
- ``ask_1000_s``: the same through the strategy's ``ask`` (tokens turned into
  architectures, copied to the host);
- ``tell_10_s``: the median time of one controller step (``tell`` of 10
  architectures, ENAS's ``controller_num_aggregate``), after its compilation
  (``tell_compile_s``);
- ``recompiles``: sampler compilations beyond the first over the repeats
  (0: one compilation serves every key and architecture).

The top level has ``sample_1000_s`` of the first space, the JAX version, the
CPU count and the 1-minute load average at start and end (the machine is
shared: read the figures beside it).

Usage:
    python benchmarks/enas.py --out /tmp/enas.json
    python benchmarks/enas.py --space nasnet darts rnn nb201 --out /tmp/enas.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas_jax import registry  # noqa: E402
from nas_jax.predictors import controller as ctl  # noqa: E402
from nas_jax.strategies import enas  # noqa: E402

_COMPILE_S: list[float] = []


def _listener(event: str, duration: float, **_):
  if "backend_compile" in event:
    _COMPILE_S.append(duration)


def _timed(fn) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def bench_space(name: str, repeats: int, hidden_size: int | None) -> dict:
  """The figures of one space (see the module docstring)."""
  space = registry.get_space(name)
  config = {} if hidden_size is None else {"hidden_size": hidden_size}
  strategy = enas.ENAS(space, config)
  c = strategy.controller
  state = strategy.init(jax.random.key(0))
  params = state["params"]
  n = 1000
  before = len(_COMPILE_S)
  compile_s = _timed(lambda: ctl.sample(c, params, jax.random.key(1), n))
  backend = float(sum(_COMPILE_S[before:]))
  cache = ctl.sample._cache_size()
  times = [_timed(lambda i=i: ctl.sample(c, params, jax.random.key(2 + i), n))
           for i in range(repeats)]
  recompiles = ctl.sample._cache_size() - cache
  big = enas.ENAS(space, {**config, "batch_size": n})
  _timed(lambda: big.ask(state, jax.random.key(1))[0])
  ask_times = [_timed(lambda i=i: big.ask(state, jax.random.key(50 + i))[0])
               for i in range(max(3, repeats // 2))]
  archs, _ = strategy.ask(state, jax.random.key(3))
  scores = np.linspace(80.0, 90.0, len(archs))
  t0 = time.perf_counter()
  told = strategy.tell(state, archs, scores)
  jax.block_until_ready(told["params"])
  tell_compile_s = time.perf_counter() - t0
  tell_times = [_timed(lambda: strategy.tell(told, archs, scores)["params"])
                for _ in range(max(3, repeats // 2))]
  return {"space": name, "hidden_size": c.hidden_size, "token_length": c.token_length,
          "compile_s": compile_s, "backend_compile_s": backend,
          "sample_1000_s": float(np.median(times)), "min_sample_1000_s": float(min(times)),
          "ask_1000_s": float(np.median(ask_times)), "tell_10_s": float(np.median(tell_times)),
          "tell_compile_s": tell_compile_s, "recompiles": int(recompiles)}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--space", nargs="+", default=["nasnet"],
                      help="spaces to sample (default: nasnet, the micro space)")
  parser.add_argument("--repeats", type=int, default=10, help="timed sampler calls per space")
  parser.add_argument("--hidden-size", type=int, default=None,
                      help="controller width (default: the strategy's, 64)")
  parser.add_argument("--out", required=True, help="JSON output file")
  args = parser.parse_args(argv)
  if args.repeats < 1:
    parser.error("--repeats must be >= 1")
  jax.monitoring.register_event_duration_secs_listener(_listener)
  load_start = os.getloadavg()[0]
  results = []
  for name in args.space:
    try:
      res = bench_space(name, args.repeats, args.hidden_size)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    results.append(res)
    print(f"{name}: sample 1,000 in {res['sample_1000_s']:.3f} s (median of {args.repeats}; "
          f"min {res['min_sample_1000_s']:.3f}), ask 1,000 {res['ask_1000_s']:.3f} s, "
          f"compile {res['compile_s']:.2f} s (XLA {res['backend_compile_s']:.2f}), "
          f"tell of 10 {res['tell_10_s'] * 1e3:.1f} ms (compile {res['tell_compile_s']:.2f} s), "
          f"recompiles {res['recompiles']}")
  out = {"sample_1000_s": results[0]["sample_1000_s"],
         "compile_s": results[0]["compile_s"], "spaces": results,
         "jax": jax.__version__, "cpu_count": os.cpu_count(),
         "load_avg": [load_start, os.getloadavg()[0]]}
  if os.path.dirname(args.out):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1)
  print(f"-> {args.out} (load average {out['load_avg'][0]:.1f} -> {out['load_avg'][1]:.1f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

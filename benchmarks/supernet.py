"""Benchmark of a weight-sharing supernet (nasnet or nb201) on CPU.

``--space nasnet`` (default): the CIFAR-shaped supernet of the core issue (8
cells: 3 stages of 2 normal cells with a reduction cell between stages, C=16,
B=5). ``--space nb201``: the NAS-Bench-201 supernet at the benchmark's size
(C=16, N=5 cells per stage: 15 cells and 2 residual blocks). Batch 64 of
random 32x32x3 images. Prints and writes JSON with:

- ``cold_start_s``: process start to the end of the first train step
  (imports, initialisation and compilation included);
- ``compile_s``: XLA compile time of the train step (from jax.monitoring);
- ``train_step_s``: median wall time of ``--steps`` (>= 20) steps, each with a
  different random architecture;
- ``eval_archs_per_s``: architectures scored per second by one ``eval_archs``
  call on one 500-image batch (second call, compile excluded);
- ``recompiles``: compilations of the train step / eval function beyond their
  first one (0 means one compilation serves every architecture);
- ``peak_rss_mb``: peak resident memory of the process;
- ``load_avg``: 1-minute load average at start and end (the machine is shared);
- ``huge_pages``: whether large allocations use 2 MB pages (the script restarts
  itself with them where that helps, see ``nas_jax/runtime.py``;
  ``NAS_JAX_HUGE_PAGES=0``: off);
- ``depthwise_impl`` / ``pointwise_impl``: how depthwise and 1x1
  convolutions ran (``--depthwise`` / ``--pointwise``; "auto" is the C++
  kernels of ``nas_jax/kernels`` on CPU where they are built, "shift" /
  "einsum" the pure-JAX versions); ``fusion``: whether the undifferentiated
  forward ran separable-conv halves as one fused kernel, and the nasnet
  evaluation its forward-only form (``--fusion``, ``ops.implementation``);
- ``kernels``: whether the C++ CPU kernels ran (``kernels_off_reason`` says why
  not). ``--kernels off`` (or ``NAS_JAX_KERNELS=0``) times the pure-JAX path,
  the one GPUs and TPUs run, on a CPU too, so a regression there shows without
  an accelerator; ``devices`` / ``backend``: what it ran on (the train step is
  data-parallel over every device, ``nas_jax.parallel``); ``benchmarks/accelerator.sh``
  runs both paths on both spaces and a short search in one go;
- with ``--child-archs K``: ``child_vs_supernet``, for K of the architectures,
  the median train-step time of the fixed child network compiled for that one
  architecture (same ops, no switch, no scan) beside the supernet's on the
  same architecture, steps alternating. It shows how much the weight-sharing
  structure itself costs.

Usage:
    python benchmarks/supernet.py --out /tmp/supernet.json
    python benchmarks/supernet.py --space nb201 --out /tmp/supernet_nb201.json
    python benchmarks/supernet.py --depthwise shift --pointwise einsum   # without the C++ kernels
    python benchmarks/supernet.py --kernels off        # the pure-JAX path (GPU / TPU), here on CPU
"""
from __future__ import annotations

import time

_T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402


def _process_start() -> float:
  """Wall-clock time the process started (Linux /proc), else module import."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return _T0


DEFAULT_LAYERS = {"nasnet": 8, "nb201": 5}


def build_train_step(supernet, channels: int = 16, layers: int = 8, size: int = 32):
  """``(config, train state, jitted train step)`` of the benchmark supernet
  (10 classes, ``size x size x 3`` images), built with ``supernet`` (a
  ``networks.base.WeightSharing``: ``networks.family("nasnet").supernet`` /
  ``"nb201"``, or a reference copy of one, see supernet_ab.py)."""
  import jax

  cfg = supernet.config(num_classes=10, init_channels=channels, layers=layers)
  params, stats = supernet.init(jax.random.key(0), cfg, (size, size, 3))
  tx = supernet.default_optimizer()
  state = supernet.init_train_state(params, stats, tx)
  return cfg, state, supernet.make_train_step(cfg, tx)


def arch_sampler(space: str, rng):
  """Uniform random architectures of ``space`` as numpy int32 arrays."""
  import numpy as np

  if space == "nb201":
    return lambda: rng.integers(0, 5, 6).astype(np.int32)

  def nasnet_arch():
    a = np.zeros((2, 5, 4), np.int32)
    for c in range(2):
      for n in range(5):
        a[c, n] = [rng.integers(0, n + 2), rng.integers(0, 5), rng.integers(0, n + 2), rng.integers(0, 5)]
    return a

  return nasnet_arch


def child_vs_supernet(fam, cfg, state, train_step, archs, x, y, steps: int = 5):
  """Median train-step times of each arch's child network and of the supernet on that arch.

  Returns ``(rows, state)``: one dict per arch, and the supernet state after its steps.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from nas_jax.networks.supernet import cross_entropy

  key = jax.random.key(1)
  rows = []
  for arch in archs:
    child = fam.build_child(None, arch, num_classes=cfg.num_classes, init_channels=cfg.init_channels,
                            layers=cfg.layers)
    variables = child.init(jax.random.key(0), x[:2], train=False)
    tx = fam.supernet.default_optimizer()

    @jax.jit
    def child_step(params, batch_stats, opt_state):
      def loss_fn(p):
        (logits, _), new = child.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                       mutable=["batch_stats"])
        return jnp.mean(cross_entropy(logits, y)), new["batch_stats"]
      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_stats, opt_state, loss

    carry = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    t = time.perf_counter()
    carry = child_step(*carry)[:3]
    jax.block_until_ready(carry)
    compile_s = time.perf_counter() - t
    t_child, t_super = [], []
    for _ in range(steps):
      t = time.perf_counter()
      carry = child_step(*carry)[:3]
      jax.block_until_ready(carry)
      t_child.append(time.perf_counter() - t)
      t = time.perf_counter()
      state, metrics = train_step(state, arch, (x, y), key)
      jax.block_until_ready(metrics)
      t_super.append(time.perf_counter() - t)
    row = {"child_step_s": round(float(np.median(t_child)), 4), "supernet_step_s": round(float(np.median(t_super)), 4),
           "child_compile_s": round(compile_s, 1)}
    row["supernet_over_child"] = round(row["supernet_step_s"] / row["child_step_s"], 3)
    print(f"child vs supernet: {row}", flush=True)
    rows.append(row)
  return rows, state


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None, help="write the JSON figures here")
  parser.add_argument("--space", default="nasnet", choices=sorted(DEFAULT_LAYERS))
  parser.add_argument("--steps", type=int, default=21, help="timed train steps (>= 20)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--layers", type=int, default=None,
                      help="cells (nasnet, default 8) or cells per stage (nb201, default 5)")
  parser.add_argument("--eval-batch", type=int, default=500)
  parser.add_argument("--eval-archs", type=int, default=8, help="K architectures per eval call")
  parser.add_argument("--eval-method", default="map", choices=["map", "vmap", "both"])
  parser.add_argument("--depthwise", default="auto", choices=["auto", "kernel", "shift", "grouped"])
  parser.add_argument("--pointwise", default="auto", choices=["auto", "kernel", "einsum"])
  parser.add_argument("--fusion", default="on", choices=["on", "off"],
                      help="fused forward kernel of separable-conv halves (ops.implementation(fusion=...))")
  parser.add_argument("--kernels", default="auto", choices=["auto", "off"],
                      help="off: never load the C++ CPU kernels (as NAS_JAX_KERNELS=0): the pure-JAX path")
  parser.add_argument("--child-archs", type=int, default=0,
                      help="also time the child network of this many archs (nasnet; compiles each, ~40 s)")
  args = parser.parse_args()
  t_start = _process_start()
  if args.kernels == "off":
    os.environ["NAS_JAX_KERNELS"] = "0"  # read when the kernels are first asked for, below

  from nas_jax import ops  # pylint: disable=import-outside-toplevel
  with ops.implementation(depthwise=args.depthwise, pointwise=args.pointwise, fusion=args.fusion == "on"):
    _run(args, t_start)


def _run(args: argparse.Namespace, t_start: float) -> None:
  """The benchmark under the ops implementation ``main`` chose."""
  import jax
  import numpy as np

  from nas_jax import networks, ops, runtime
  from nas_jax.kernels import build as kernels_build

  compile_events: list[float] = []

  def listener(event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compile_events.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  load_start = os.getloadavg()[0]

  rng = np.random.default_rng(0)
  sample_arch = arch_sampler(args.space, rng)
  fam = networks.family(args.space)
  net = fam.supernet
  layers = DEFAULT_LAYERS[args.space] if args.layers is None else args.layers

  cfg, state, train_step = build_train_step(net, args.channels, layers, args.size)
  x = rng.standard_normal((args.batch, args.size, args.size, 3), np.float32)
  y = rng.integers(0, 10, args.batch).astype(np.int32)
  key = jax.random.key(1)

  state, metrics = train_step(state, sample_arch(), (x, y), key)
  jax.block_until_ready(metrics)
  cold_start = time.time() - t_start
  compile_train = sum(compile_events)
  n_compiles_first = len(compile_events)
  print(f"cold start {cold_start:.1f} s (train-step compile {compile_train:.1f} s)", flush=True)

  times = []
  for _ in range(args.steps):
    arch = sample_arch()
    t = time.perf_counter()
    state, metrics = train_step(state, arch, (x, y), key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  train_step_s = float(np.median(times))
  print(f"train step median {train_step_s:.3f} s over {len(times)} archs (min {min(times):.3f}, "
        f"max {max(times):.3f}); loss {float(metrics['loss']):.3f}", flush=True)
  recompiles = train_step._cache_size() - 1  # pylint: disable=protected-access

  child_rows = None
  if args.child_archs:
    if args.space != "nasnet":
      raise SystemExit("error: --child-archs is for --space nasnet")
    child_rows, state = child_vs_supernet(fam, cfg, state, train_step,
                                          [sample_arch() for _ in range(args.child_archs)], x, y)

  xe = rng.standard_normal((args.eval_batch, args.size, args.size, 3), np.float32)
  ye = rng.integers(0, 10, args.eval_batch).astype(np.int32)
  archs = np.stack([sample_arch() for _ in range(args.eval_archs)])
  eval_rates = {}
  eval_compile = {}
  for method in (["map", "vmap"] if args.eval_method == "both" else [args.eval_method]):
    eval_archs = net.make_eval_archs(cfg, method=method)
    n0 = len(compile_events)
    t = time.perf_counter()
    jax.block_until_ready(eval_archs(state["params"], state["batch_stats"], archs, xe, ye))
    eval_compile[method] = sum(compile_events[n0:])
    first = time.perf_counter() - t
    archs2 = np.stack([sample_arch() for _ in range(args.eval_archs)])
    t = time.perf_counter()
    acc, _ = eval_archs(state["params"], state["batch_stats"], archs2, xe, ye)
    jax.block_until_ready(acc)
    dt = time.perf_counter() - t
    eval_rates[method] = args.eval_archs / dt
    recompiles += eval_archs._cache_size() - 1  # pylint: disable=protected-access
    print(f"eval_archs[{method}]: {args.eval_archs} archs x {args.eval_batch} images in {dt:.2f} s "
          f"= {eval_rates[method]:.2f} archs/s (first call incl. compile {first:.1f} s)", flush=True)

  on_cpu = jax.default_backend() == "cpu"
  result = {
      "cold_start_s": round(cold_start, 2),
      "compile_s": round(compile_train, 2),
      "train_step_s": round(train_step_s, 4),
      "train_step_min_s": round(min(times), 4),
      "eval_archs_per_s": round(max(eval_rates.values()), 3),
      "eval_archs_per_s_by_method": {k: round(v, 3) for k, v in eval_rates.items()},
      "eval_compile_s": {k: round(v, 2) for k, v in eval_compile.items()},
      "recompiles": int(recompiles),
      "compilations_before_first_step": n_compiles_first,
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "load_avg_start": round(load_start, 2),
      "load_avg_end": round(os.getloadavg()[0], 2),
      "depthwise_impl": ops.depthwise_impl(),
      "pointwise_impl": ops.pointwise_impl(),
      "fusion": ops.fusion_active(),
      "huge_pages": runtime.huge_pages_active(),
      "kernels": on_cpu and kernels_build.available(),
      "kernels_off_reason": ((kernels_build.unavailable_reason() or None) if on_cpu else
                             f"{jax.default_backend()} backend: the kernels are CPU-only"),
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "space": args.space,
      **({"child_vs_supernet": child_rows} if child_rows else {}),
      "config": {"batch": args.batch, "size": args.size, "channels": args.channels, "layers": layers,
                 "steps": args.steps, "eval_batch": args.eval_batch, "eval_archs": args.eval_archs},
      "jax": jax.__version__, "backend": jax.default_backend(),
  }
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  main()

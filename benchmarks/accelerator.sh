#!/usr/bin/env bash
# The accelerator figures in one go: benchmarks/supernet.py on both spaces (nasnet, nb201) and a short
# one-shot search (NAO-WS on digits, experiments/configs/nao.py shortened), each writing JSON under OUT.
# On a CPU it also times the pure-JAX path (--kernels off: what GPUs and TPUs run) beside the C++ kernels.
#
#   bash benchmarks/accelerator.sh [OUT]        # default OUT=runs/accelerator-<backend>
#   QUICK=1 bash benchmarks/accelerator.sh      # a smoke run: tiny shapes, 3 steps (checks the script)
#
# Prints one summary table at the end (also OUT/summary.json). JAX's backend decides the device: install
# jax[cuda12] / jax[tpu] for GPUs / TPUs; the steps are data-parallel over every local device
# (nas_jax.parallel; NAS_JAX_DEVICES=1 restricts that to one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
BACKEND=$($PY -c "import jax; print(jax.default_backend())")
OUT=${1:-runs/accelerator-$BACKEND}
mkdir -p "$OUT"
$PY -c "import jax; print(f'jax {jax.__version__}: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})')" \
  | tee "$OUT/devices.txt"

if [ -n "${QUICK:-}" ]; then
  BENCH=(--steps 3 --channels 4 --eval-batch 50 --eval-archs 2)
  NAS=(--budget 6 --set strategy.init_pool=4 --set strategy.new_per_round=2 --set strategy.top_k=2
       --set strategy.train_steps=5 --set evaluator.supernet.init_channels=4 --set evaluator.supernet.layers=3
       --set evaluator.supernet.steps_per_round=5 --set evaluator.supernet.total_rounds=2 --final-epochs 0)
else
  BENCH=(--steps 21)
  # configs/nao.py with 2 rounds instead of 4 and no final training: 16 + (16 + 8) = 40 evaluations
  NAS=(--budget 40 --set evaluator.supernet.total_rounds=2 --final-epochs 0)
fi

PATHS=(auto)
[ "$BACKEND" = cpu ] && PATHS=(auto off)
for space in nasnet nb201; do
  for kernels in "${PATHS[@]}"; do
    extra=()
    [ -n "${QUICK:-}" ] && [ "$space" = nb201 ] && extra=(--layers 1)
    [ -n "${QUICK:-}" ] && [ "$space" = nasnet ] && extra=(--layers 3)
    echo "== benchmarks/supernet.py --space $space --kernels $kernels"
    $PY benchmarks/supernet.py --space "$space" --kernels "$kernels" "${BENCH[@]}" "${extra[@]}" \
      --out "$OUT/supernet_${space}_kernels-${kernels}.json" > "$OUT/supernet_${space}_kernels-${kernels}.log" 2>&1 \
      || { tail -20 "$OUT/supernet_${space}_kernels-${kernels}.log"; exit 1; }
    grep -E "^(cold start|train step|eval_archs)" "$OUT/supernet_${space}_kernels-${kernels}.log" || true
  done
done

echo "== NAO-WS search (experiments/run.py --strategy nao, shortened)"
rm -rf "$OUT/nao"
$PY experiments/run.py --strategy nao --quiet --workdir "$OUT/nao" "${NAS[@]}" \
  > "$OUT/nao.log" 2>&1 || { tail -20 "$OUT/nao.log"; exit 1; }

$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("supernet_*.json")):
  d = json.loads(f.read_text())
  rows[f.stem] = {k: d.get(k) for k in ("devices", "backend", "kernels", "cold_start_s", "compile_s",
                                        "train_step_s", "eval_archs_per_s", "recompiles", "depthwise_impl",
                                        "pointwise_impl")}
r = json.loads((out / "nao" / "result.json").read_text())
rows["nao_search"] = {k: r.get(k) for k in ("num_evaluations", "best_search_score", "setup_seconds",
                                            "search_seconds", "total_seconds")}
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for name, row in rows.items():
  print(f"{name:34s} " + ", ".join(f"{k}={v}" for k, v in row.items()))
PY

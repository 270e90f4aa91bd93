#!/usr/bin/env bash
# The GPU check (about 10 minutes on one H100): predict_action latency of the three policies at
# the paper preset, eager, CUDA-graph-replayed and torch.compiled (each checked against eager);
# the MeanFlow vs flow-matching training-step cost in fp32 and bf16; a short MP1 training run in
# bf16 with a strict evaluation. Results go to $OUT (default benchmarks/results/gpu_check).
#
#   bash benchmarks/gpu_check.sh                  # on a CUDA machine (needs a CUDA build of torch)
#   DEVICE=cpu PRESET=cpu COMPILE_TIMEOUT=60 CALLS=2 WARMUP=1 TRAIN_STEPS=1 TRAIN_BATCH=4 EPOCHS=1 DEMOS=2 EPISODES=1 JOBS=2 \
#       OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh   # dry run of the same steps on CPU
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
CALLS=${CALLS:-300}
WARMUP=${WARMUP:-30}
TRAIN_STEPS=${TRAIN_STEPS:-20}
TRAIN_BATCH=${TRAIN_BATCH:-128}
EPOCHS=${EPOCHS:-60}
DEMOS=${DEMOS:-10}
EPISODES=${EPISODES:-50}
JOBS=${JOBS:-8}
OUT=${OUT:-benchmarks/results/gpu_check}
MP1=${MP1:-mp1}  # the CLI; set MP1="python -m mp1.cli" where mp1 is not installed as a command
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$OUT/device.txt"

# 1. Latency, eager and CUDA graph (fast to set up), with the training-step cost in fp32 and bf16.
run $MP1 bench latency --preset "$PRESET" --device "$DEVICE" --calls "$CALLS" --warmup "$WARMUP" \
    --modes eager,cuda_graph --train-batch "$TRAIN_BATCH" --train-steps "$TRAIN_STEPS" --precisions fp32,bf16 --json \
    | tail -n 1 > "$OUT/latency_$PRESET.json"
# 2. torch.compile separately and time-boxed: a slow compile must not cost the other numbers.
run timeout "${COMPILE_TIMEOUT:-240}" $MP1 bench latency --preset "$PRESET" --device "$DEVICE" --calls "$CALLS" --warmup "$WARMUP" \
    --modes compile --train-steps 0 --json | tail -n 1 > "$OUT/latency_${PRESET}_compile.json" \
    || echo "compile benchmark failed or timed out" | tee "$OUT/latency_${PRESET}_compile.failed"
# 3. A short paper-preset MP1 run in bf16: demos, training, strict evaluation.
run $MP1 demos metaworld/button-press --episodes "$DEMOS" --jobs "$JOBS" --out-dir "$OUT/demos"
run $MP1 train policy=mp1 preset="$PRESET" task=metaworld/button-press demos="$DEMOS" data_dir="$OUT/demos" \
    device="$DEVICE" precision=bf16 batch_size="$TRAIN_BATCH" epochs="$EPOCHS" warmup_steps=50 eval_every=0 \
    final_eval_episodes="$EPISODES" eval_jobs="$JOBS" video=false run_dir="$OUT/train-mp1-$PRESET-bf16"
python - "$OUT" "$PRESET" <<'PY'
import json, sys
from pathlib import Path

from mp1.bench import format_report

out, preset = Path(sys.argv[1]), sys.argv[2]
for name in (f"latency_{preset}.json", f"latency_{preset}_compile.json"):
    if (out / name).exists() and (out / name).stat().st_size:
        print(format_report(json.loads((out / name).read_text())), "\n")
final = json.loads((out / f"train-mp1-{preset}-bf16" / "final.json").read_text())
strict = final["strict_protocol"]
print(f"{preset} MP1 bf16, {final['steps']} steps: strict {100 * strict['success_rate']:.0f}% over {strict['episodes']} "
      f"episodes, predict_action p50 {strict['latency_p50_ms']:.2f} ms on {strict['device']}")
PY

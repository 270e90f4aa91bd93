#!/usr/bin/env bash
# The GPU check (meant to finish in <= 8 minutes on one H100; never run on a GPU by this project yet):
#  1. predict_action latency at the paper preset, batch 1, of MP1 (and mp1-tuned, same network),
#     FlowPolicy and DP3: eager and CUDA-graph replayed, fp32 and bf16 weights, each checked
#     against fp32 eager; with the training-step cost (forward, backward, AdamW) at batch 128 in
#     fp32 and bf16;
#  2. the same with torch.compile, time-boxed (a slow compile must not cost the other numbers);
#  3. training throughput of real runs on 10 button-press demos: cpu preset MP1 in fp32 (60 epochs,
#     with a strict evaluation of EPISODES episodes), paper preset MP1 and DP3 in fp32 and bf16
#     (PAPER_EPOCHS epochs each); steps/s is steps over training wall-clock, evaluations excluded.
# Results go to $OUT (default benchmarks/results/gpu_check), summary.txt last.
#
#   bash benchmarks/gpu_check.sh                  # on a CUDA machine (needs a CUDA build of torch)
#   DEVICE=cpu PRESET=cpu CALLS=2 WARMUP=1 TRAIN_STEPS=1 TRAIN_BATCH=4 EPOCHS=1 PAPER_EPOCHS=1 PAPER_PRESET=cpu \
#       DEMOS=2 EPISODES=1 JOBS=2 COMPILE_TIMEOUT=60 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh   # CPU dry run
#       (tests/test_gpu_path.py runs a smaller one: TRAIN_ARGS there shrinks the networks)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}              # the latency benchmark's network
PAPER_PRESET=${PAPER_PRESET:-paper}  # the large network of the throughput runs (cpu in the dry run)
CALLS=${CALLS:-200}
WARMUP=${WARMUP:-20}
TRAIN_STEPS=${TRAIN_STEPS:-20}
TRAIN_BATCH=${TRAIN_BATCH:-128}
EPOCHS=${EPOCHS:-60}
PAPER_EPOCHS=${PAPER_EPOCHS:-4}
DEMOS=${DEMOS:-10}
EPISODES=${EPISODES:-50}
JOBS=${JOBS:-8}
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-150}
OUT=${OUT:-benchmarks/results/gpu_check}
MP1=${MP1:-mp1}  # the CLI; set MP1="python -m mp1" where mp1 is not installed as a command
TRAIN_ARGS=${TRAIN_ARGS:-}  # more `mp1 train` overrides for every run, e.g. a smaller network in the dry run
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }
SECONDS=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$OUT/device.txt"

run $MP1 bench latency --preset "$PRESET" --device "$DEVICE" --calls "$CALLS" --warmup "$WARMUP" \
    --modes eager,cuda_graph --precisions fp32,bf16 --train-batch "$TRAIN_BATCH" --train-steps "$TRAIN_STEPS" --json \
    | tail -n 1 > "$OUT/latency_$PRESET.json"
run timeout "$COMPILE_TIMEOUT" $MP1 bench latency --preset "$PRESET" --device "$DEVICE" --calls "$CALLS" --warmup "$WARMUP" \
    --modes compile --precisions fp32,bf16 --train-steps 0 --json | tail -n 1 > "$OUT/latency_${PRESET}_compile.json" \
    || echo "compile benchmark failed or timed out after ${COMPILE_TIMEOUT}s" | tee "$OUT/latency_${PRESET}_compile.failed"

run $MP1 demos metaworld/button-press --episodes "$DEMOS" --jobs "$JOBS" --out-dir "$OUT/demos"
train() {  # name, then key=value overrides
    local name=$1; shift
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of overrides
    run $MP1 train task=metaworld/button-press demos="$DEMOS" data_dir="$OUT/demos" device="$DEVICE" \
        batch_size="$TRAIN_BATCH" warmup_steps=50 eval_every=0 eval_jobs="$JOBS" video=false run_dir="$OUT/train/$name" "$@" $TRAIN_ARGS
}
train strict-mp1-cpu-fp32 policy=mp1 preset=cpu epochs="$EPOCHS" final_eval_episodes="$EPISODES"
for policy in mp1 dp3; do
    for precision in fp32 bf16; do
        train "$policy-$PAPER_PRESET-$precision" policy=$policy preset="$PAPER_PRESET" precision=$precision \
            epochs="$PAPER_EPOCHS" final_eval_episodes=0
    done
done

python - "$OUT" "$PRESET" "$SECONDS" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

from mp1.bench import format_report

out, preset, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for name in (f"latency_{preset}.json", f"latency_{preset}_compile.json"):
    if (out / name).exists() and (out / name).stat().st_size:
        print(format_report(json.loads((out / name).read_text())), "\n")
print("training run                 device  precision  steps  steps/s")
for final in sorted((out / "train").glob("*/final.json")):
    run = json.loads(final.read_text())
    print(f"{final.parent.name:<28} {run['device']:<7} {run['precision']:<9}  {run['steps']:>5}  {run['steps_per_second']:7.1f}")
    if "strict_protocol" in run:
        strict = run["strict_protocol"]
        print(f"  strict: {100 * strict['success_rate']:.0f}% over {strict['episodes']} episodes, "
              f"predict_action p50 {strict['latency_p50_ms']:.2f} ms on {strict['device']}")
print(f"\ngpu_check took {seconds} s")
PY

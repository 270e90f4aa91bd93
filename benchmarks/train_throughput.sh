#!/usr/bin/env bash
# Training throughput of real runs: steps per second of training wall-clock (evaluations excluded)
# for MP1 and DP3, cpu preset, 10 button-press demos, batch 128, no evaluation. Run it on a quiet
# machine and note the load average.
#   bash benchmarks/train_throughput.sh [OUT] [key=value...]   (e.g. device=cuda epochs=60)
set -euo pipefail
OUT=${1:-/tmp/train_throughput}
shift || true
MP1=${MP1:-mp1}
for policy in mp1 dp3; do
    $MP1 train policy=$policy preset=cpu task=metaworld/button-press demos=10 epochs=10 warmup_steps=10 eval_every=0 \
        final_eval_episodes=0 video=false run_dir="$OUT/$policy" "$@" >/dev/null 2>&1
    python - "$OUT/$policy/metrics.jsonl" "$policy" <<'PY'
import json, sys

last = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"][-1]
print(f"{sys.argv[2]:<4} {last['step']} steps in {last['train_seconds']:.1f} s: {last['step'] / last['train_seconds']:.2f} steps/s")
PY
done

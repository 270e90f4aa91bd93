#!/usr/bin/env bash
# MP1, FlowPolicy and DP3 on the three Adroit tasks (door, hammer, pen), 9 runs, 2 at a time
# with one thread each. Budget per run: cpu preset, 10 demos, 30 epochs at batch 64 (360-420
# steps, as many as the Meta-World same-budget runs had), no periodic evaluation,
# strict evaluation on 100 fixed-seed episodes of 200 steps. Resumable: run it again to
# continue. Extra key=value arguments are passed on (e.g. seed=0,1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
mp1 sweep policy=mp1,flowpolicy,dp3 task=adroit3 seed=0 preset=cpu demos=10 batch_size=64 epochs=30 \
    warmup_steps=30 eval_every=0 final_eval_episodes=100 video=false "$@" \
    --dir benchmarks/results/adroit3 --jobs 2

#!/usr/bin/env bash
# The cpu-suite: MP1, FlowPolicy and DP3 x 2 seeds on the `cpu-suite` task set (button-press,
# coffee-pull, assembly, stick-push, adroit/hammer: one task per Meta-World difficulty group
# plus one Adroit task), 30 runs, 2 at a time with one thread each. Budget per run: cpu preset,
# 10 demos, 15 epochs at batch 64, 3 periodic evaluations of 5 episodes, strict evaluation on
# 20 fixed-seed episodes. Resumable: run it again to continue. Extra key=value arguments are
# passed on (e.g. seed=0,1,2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
mp1 sweep policy=mp1,flowpolicy,dp3 task=cpu-suite seed=0,1 preset=cpu demos=10 batch_size=64 epochs=15 \
    warmup_steps=30 eval_every=5 eval_episodes=5 final_eval_episodes=20 video=false "$@" \
    --dir benchmarks/results/cpu-suite --jobs 2

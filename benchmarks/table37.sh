#!/usr/bin/env bash
# Issue #22's table: mp1-tuned against DP3 on all 37 tasks (Adroit 3 + Meta-World 34), seed 0,
# the same-budget protocol (cpu preset, 10 demos, 60 epochs at batch 128, warm-up 50 steps,
# periodic evaluation every 20 epochs on 10 episodes), strict success of the final EMA weights on
# 50 fixed-seed episodes. The grid runs task by task, so with --jobs 2 both policies of a task
# train side by side. 74 runs of 10-15 minutes on a 2-core CPU: hours; the sweep resumes where it
# stopped, and each run's policy file stays in its folder (not in git) for inference-knob studies.
#   bash benchmarks/table37.sh [key=value...]       # e.g. seed=1 task=metaworld/hammer,... for a second seed
# Results: benchmarks/results/table37/ (JOBS, DIR override the defaults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
mp1 sweep task=all37 policy=mp1-tuned,dp3 seed=0 preset=cpu demos=10 epochs=60 warmup_steps=50 \
    eval_every=20 eval_episodes=10 final_eval_episodes=50 video=false \
    "$@" --dir "${DIR:-benchmarks/results/table37}" --jobs "${JOBS:-2}"

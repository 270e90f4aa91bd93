#!/usr/bin/env bash
# Issue #12's longer-budget check: the one-step winner (mp1-tuned) against DP3 on six tasks that
# the same-budget study did not choose settings on, two seeds, >= 600 steps at batch 128.
# At 10 demos an epoch is 5-8 steps on these Meta-World tasks and more on Adroit, so the default
# 120 epochs give 600+ steps everywhere. Strict evaluation on 100 fixed-seed episodes.
#   bash benchmarks/onestep_suite.sh [key=value...]       # e.g. device=cuda epochs=500 (3000+ steps on a GPU)
# About 24 runs of 30-40 minutes each on a 2-core CPU (--jobs 2): a GPU machine's job.
# Results: benchmarks/results/onestep-suite/ (JOBS, DIR override the defaults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
mp1 sweep policy=mp1-tuned,dp3 seed=0,1 \
    task=metaworld/button-press,metaworld/coffee-pull,metaworld/assembly,metaworld/stick-push,adroit/door,adroit/hammer \
    preset=cpu demos=10 epochs=120 warmup_steps=50 eval_every=40 eval_episodes=10 final_eval_episodes=100 video=false \
    "$@" --dir "${DIR:-benchmarks/results/onestep-suite}" --jobs "${JOBS:-2}"

#!/usr/bin/env bash
# Issue #12's longer-budget check: the one-step winner (mp1-tuned) against DP3 on six tasks that
# the same-budget study did not choose settings on, two seeds, >= 600 steps at batch 128.
# `steps=600` gives every run the fewest whole epochs reaching 600 steps (an epoch is 6-8 steps on
# these tasks at 10 demos: a fixed epoch count would give them unequal budgets). Strict evaluation
# on 100 fixed-seed episodes.
# The grid runs seed by seed and task by task, so with --jobs 2 both policies of a task train side by side.
#   bash benchmarks/onestep_suite.sh [key=value...]       # e.g. device=cuda steps=3000 on a GPU
# 24 runs of 20-30 minutes each on a 2-core CPU (--jobs 2); a sweep resumes where it stopped.
# Results: benchmarks/results/onestep-suite/ (JOBS, DIR override the defaults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
mp1 sweep seed=0,1 \
    task=metaworld/button-press,adroit/door,metaworld/coffee-pull,adroit/hammer,metaworld/assembly,metaworld/stick-push \
    policy=mp1-tuned,dp3 preset=cpu demos=10 steps=600 warmup_steps=50 eval_every=40 eval_episodes=10 final_eval_episodes=100 video=false \
    "$@" --dir "${DIR:-benchmarks/results/onestep-suite}" --jobs "${JOBS:-2}"

#!/usr/bin/env bash
# The three policies on one Meta-World task with the quickstart's budget (cpu preset, 10 demos,
# 60 epochs = 360-420 steps at batch 128, periodic eval every 20 epochs on 10 episodes, strict
# eval on EPISODES fixed-seed episodes, default 100).
# Usage: bash benchmarks/cpu_same_budget.sh TASK [policy...]   e.g. TASK=metaworld/door-open
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
task=${1:?usage: cpu_same_budget.sh TASK [policy...]}
shift
policies=("$@")
[ ${#policies[@]} -gt 0 ] || policies=(mp1 flowpolicy dp3)
for policy in "${policies[@]}"; do
    mp1 train policy="$policy" task="$task" preset=cpu seed=0 demos=10 \
        epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes="${EPISODES:-100}" eval_jobs=2 \
        run_dir="runs/bench-${task#*/}/$policy"
done

#!/usr/bin/env bash
# The three policies on Meta-World button-press with the quickstart's budget (cpu preset,
# 10 demos, 60 epochs = 360 steps at batch 128, periodic eval every 20 epochs on 10 episodes,
# strict eval on 50 episodes). Usage: bash benchmarks/cpu_button_press.sh [policy...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
policies=("$@")
[ ${#policies[@]} -gt 0 ] || policies=(mp1 flowpolicy dp3)
for policy in "${policies[@]}"; do
    mp1 train policy="$policy" task=metaworld/button-press preset=cpu seed=0 demos=10 \
        epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes=50 eval_jobs=2 \
        run_dir="runs/bench-button-press/$policy"
done

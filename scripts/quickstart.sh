#!/usr/bin/env bash
# Installs what is needed (see setup.sh) and runs the main job: generates 10 expert demos of
# Meta-World button-press, trains mp1-tuned (MP1's one-step MeanFlow policy, re-tuned for short
# budgets: benchmarks/README.md) with the cpu preset, evaluates it (strict protocol, 50
# episodes), and writes a report with a learning curve and a rollout video. About 15 minutes
# on a 2-core CPU. Extra key=value arguments override the training config.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec mp1 train policy=mp1-tuned task=metaworld/button-press preset=cpu seed=0 demos=10 \
    epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes=50 eval_jobs=2 \
    run_dir=runs/quickstart "$@"

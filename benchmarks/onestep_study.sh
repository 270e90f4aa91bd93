#!/usr/bin/env bash
# The one-step policy at equal compute (the same-budget protocol of cpu_same_budget.sh: cpu
# preset, 10 demos, 60 epochs at batch 128 = 300-480 steps, periodic evaluation every 20 epochs
# on 10 episodes, strict evaluation on 100 fixed-seed episodes) on its four tasks, two seeds,
# one mp1 sweep per lever. Usage:
#   bash benchmarks/onestep_study.sh LEVER [extra key=value...]
# LEVER: winner (mp1-tuned beside DP3 and MP1), lr, dispersive, guidance, loss-space, prediction,
# warm-start, direction, adaptive-weight. Results: benchmarks/results/onestep-<LEVER>/. Choose
# settings on these four tasks only. (benchmarks/results/same-budget-2seeds/ holds the first
# mp1-tuned recipe, with prediction=u: today's `winner` with model.objective.prediction=u.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
lever=${1:?usage: onestep_study.sh LEVER [key=value...]}
shift
dir="benchmarks/results/onestep-$lever"
case "$lever" in
    winner)          axes=(policy=mp1-tuned,dp3,mp1) ;;
    lr)              axes=(policy=mp1,dp3 lr=1e-4,3e-4,1e-3) ;;
    dispersive)      axes=(policy=mp1 lr=3e-4 model.dispersive.weight=0,0.1,0.5) ;;
    guidance)        axes=(policy=mp1-tuned model.objective.guidance=none,self,cfg) ;;
    loss-space)      axes=(policy=mp1-tuned model.objective.loss_space=u,v) ;;
    prediction)      axes=(policy=mp1-tuned model.objective.prediction=u,x) ;;
    warm-start)      axes=(policy=mp1-tuned model.objective.warm_start_steps=0,100,200) ;;
    direction)       axes=(policy=mp1-tuned model.objective.direction_weight=0,0.1,0.5) ;;
    adaptive-weight) axes=(policy=mp1-tuned model.objective.adaptive_weight_power=0,0.5,1.0) ;;
    *) echo "unknown lever $lever" >&2; exit 2 ;;
esac
# Later settings win: the protocol first, then the lever's axes, then the caller's key=value.
mp1 sweep task=metaworld/button-press,metaworld/door-open,metaworld/plate-slide,metaworld/window-open seed=0,1 \
    preset=cpu demos=10 epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes=100 video=false \
    "${axes[@]}" "$@" --dir "$dir" --jobs 2

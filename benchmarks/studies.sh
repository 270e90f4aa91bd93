#!/usr/bin/env bash
# The studies, each one sweep (same budget as benchmarks/cpu_suite.sh). Usage:
#   bash benchmarks/studies.sh few-shot|dispersive|guidance|equal-times|jvp [TASKS] [extra key=value...]
# TASKS defaults to a two-task subset (button-press, door-open); any task name or set works.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
study=${1:?usage: studies.sh few-shot|dispersive|guidance|equal-times|jvp [TASKS] [key=value...]}
tasks=${2:-metaworld/button-press,metaworld/door-open}
shift $(( $# < 2 ? $# : 2 ))
case "$study" in
    few-shot)    axes=(policy=mp1,flowpolicy,dp3 demos=2,5,10,20) ;;
    dispersive)  axes=(policy=mp1 model.dispersive.weight=0,0.5) ;;
    guidance)    axes=(policy=mp1 model.objective.guidance=none,self,cfg) ;;
    equal-times) axes=(policy=mp1 model.objective.equal_times_fraction=0.25,0.5,0.75,1.0) ;;
    jvp)         axes=(policy=mp1 model.objective.jvp=forward,double_backward,finite_difference) ;;
    *) echo "unknown study $study" >&2; exit 2 ;;
esac
# Later settings win: the budget first, then the study's axes, then the caller's key=value.
mp1 sweep task="$tasks" seed=0,1 preset=cpu demos=10 batch_size=64 epochs=15 warmup_steps=30 \
    eval_every=5 eval_episodes=5 final_eval_episodes=20 video=false "${axes[@]}" "$@" \
    --dir "benchmarks/results/study-$study" --jobs 2

#!/usr/bin/env bash
# Issue #22's table: mp1-tuned against DP3 on all 37 tasks (Adroit 3 + Meta-World 34), seed 0,
# the same-budget protocol (cpu preset, 10 demos, 60 epochs at batch 128, warm-up 50 steps,
# periodic evaluation every 20 epochs on 10 episodes), strict success of the final EMA weights on
# 50 fixed-seed episodes. Task by task, both policies of a task train side by side (--jobs 2);
# then the inference knobs (benchmarks/table37_knobs.sh) are evaluated on that task's mp1-tuned
# run at once, so their results are in the folder before the policy file can leave with the
# machine. 74 runs of 15-25 minutes on a 2-core CPU: hours; it resumes where it stopped.
#   bash benchmarks/table37.sh [key=value...]
#   DIR=benchmarks/results/table37-seed1 TASKS="metaworld/hammer adroit/pen" bash benchmarks/table37.sh seed=1
#   DIR=benchmarks/results/table37-rerun POLICIES=mp1-tuned TASKS="..." bash benchmarks/table37.sh
#     (one policy again, e.g. to re-make policy files that left with a machine, for the knobs)
# Results: benchmarks/results/table37/ (TASKS, POLICIES, JOBS, DIR override the defaults).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
source "$ROOT/benchmarks/table37_protocol.sh"
cd "$ROOT"
export DIR=${DIR:-benchmarks/results/table37}
TASKS=${TASKS:-$(python -c "from mp1.envs import task_sets; print(' '.join(task_sets()['all37']))")}
failed=()
for task in $TASKS; do  # a task that fails is reported at the end; the others still run
    mp1 sweep task="$task" policy="${POLICIES:-mp1-tuned,dp3}" seed=0 "${PROTOCOL[@]}" "$@" --dir "$DIR" --jobs "${JOBS:-2}" \
        || failed+=("$task")
    bash "$ROOT/benchmarks/table37_knobs.sh" || failed+=("$task (knobs)")
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}" >&2
    exit 1
fi

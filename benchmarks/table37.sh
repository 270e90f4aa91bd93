#!/usr/bin/env bash
# Issue #22's table: mp1-tuned against DP3 on all 37 tasks (Adroit 3 + Meta-World 34), seed 0,
# the same-budget protocol (cpu preset, 10 demos, 60 epochs at batch 128, warm-up 50 steps,
# periodic evaluation every 20 epochs on 10 episodes), strict success of the final EMA weights on
# 50 fixed-seed episodes. Task by task, both policies of a task train side by side (--jobs 2; one
# policy alone: two tasks side by side); then the inference knobs (benchmarks/table37_knobs.sh)
# are evaluated on the new mp1-tuned runs at once, and a Meta-World task mp1-tuned loses by more
# than 15 points gets its loss analysis (benchmarks/table37_losses.py --lost-in), so their
# results are in the folder before the policy files can leave with the machine. 74 runs of 15-25
# minutes on a 2-core CPU: hours; it resumes where it stopped.
#   bash benchmarks/table37.sh [key=value...]
#   DIR=benchmarks/results/table37-seed1 TASKS="metaworld/hammer adroit/pen" bash benchmarks/table37.sh seed=1
#   DIR=benchmarks/results/table37-rerun POLICIES=mp1-tuned TASKS="..." bash benchmarks/table37.sh
#     (one policy again, e.g. to re-make policy files that left with a machine, for the knobs)
# Results: benchmarks/results/table37/ (TASKS, POLICIES, JOBS, DIR override the defaults; DEV, the
# development set the report marks, as in table37_plan.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
source "$ROOT/benchmarks/table37_protocol.sh"
cd "$ROOT"
export DIR=${DIR:-benchmarks/results/table37}
# TASKS unset: all 37; set but empty (e.g. no task owed a second seed): nothing to do.
TASKS=${TASKS-$(python -c "from mp1.envs import task_sets; print(' '.join(task_sets()['all37']))")}
POLICIES=${POLICIES-mp1-tuned,dp3}
if [ -z "$POLICIES" ]; then  # set but empty is a caller's mistake, not "both"
    echo "POLICIES is empty: name the policies to train (default: mp1-tuned,dp3)" >&2
    exit 2
fi
JOBS=${JOBS:-2}
# As many tasks per sweep as keep JOBS runs busy: one task of two policies, or two of one.
IFS=, read -r -a policies <<< "$POLICIES"
per_sweep=$(( JOBS / ${#policies[@]} > 1 ? JOBS / ${#policies[@]} : 1 ))
read -r -a tasks <<< "$TASKS"
failed=()
for ((i = 0; i < ${#tasks[@]}; i += per_sweep)); do  # a batch that fails is reported at the end; the others still run
    batch=$(IFS=,; echo "${tasks[*]:i:per_sweep}")
    mp1 sweep task="$batch" policy="$POLICIES" seed=0 "${PROTOCOL[@]}" "$@" --dir "$DIR" --jobs "$JOBS" \
        --dev-set "${DEV// /,}" \
        || failed+=("$batch")
    # the knobs and the loss analysis of this batch's tasks (a finished task's, skipped, name what is missing)
    for task in "${tasks[@]:i:per_sweep}"; do
        folder=$DIR/${task//\//_}
        [ -d "$folder" ] || continue
        DIR=$folder bash "$ROOT/benchmarks/table37_knobs.sh" || failed+=("$task (knobs)")
        python "$ROOT/benchmarks/table37_losses.py" --lost-in "$folder" || failed+=("$task (losses)")
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}" >&2
    exit 1
fi

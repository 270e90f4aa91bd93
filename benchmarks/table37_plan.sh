#!/usr/bin/env bash
# Issue #22's whole plan on one machine, in the order that settles the most soonest; every step
# skips what is finished, so after an interruption (or on a new machine, with the committed
# results) the same command goes on where it stopped:
#   1. the table, seed 0 (table37.sh);
#   2. a second seed (table37-seed1/) for the development set and for every task where the two
#      methods differ by more than 15 points (table37_gaps.py);
#   3. the training levers on the development set, seeds 0 and 1, task by task (table37_levers.sh),
#      their mp1-tuned variants also sampled with the inference knob the rule chose;
#   4. mp1-tuned again, same seed, on the tasks whose policy files left before their inference
#      knobs were evaluated (table37-rerun/): their knob columns, and a check that the same seed
#      gives the same strict success;
#   5. the choice, by the rule written down before the levers ran (table37_choose.py): each recipe
#      it changes trained once on all 37 tasks, seed 0 (table37-chosen/POLICY/), reported beside the
#      table's (table37-chosen/report.md: the table's runs with every knob column when no recipe
#      changes); the choice and the issue's targets on the held-out tasks written to table37-choice.md.
# Step 4 runs before step 3: it is a few hours, the levers are a day, and two of the development
# set's tasks (button-press, dial-turn) wait on it for their seed-0 knob columns, so with it the
# inference knobs can be chosen while the levers run.
# A step that fails stops the plan (the next ones read its results).
#   bash benchmarks/table37_plan.sh
#   RESULTS=/tmp/plan-dry DEV=... TASKS=... bash benchmarks/table37_plan.sh epochs=1 ...   (a dry run)
# STEPS="1 2" runs some steps only (default "1 2 4 3 5"); RESULTS (default benchmarks/results)
# holds the folders; DEV replaces the development set (DEV_SET in table37_protocol.sh); TASKS, the
# tasks of steps 1 and 5 (default: all 37). Settings (key=value) go to every run, so they need a
# RESULTS of their own: a run's folder does not name the settings it shares with the protocol, and
# the table would take a dry run's runs for its own.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
source "$ROOT/benchmarks/table37_protocol.sh"
cd "$ROOT"
if [ $# -gt 0 ] && [ -z "${RESULTS:-}" ]; then
    echo "settings ($*) change the protocol: give them a folder of their own, RESULTS=..." >&2
    exit 2
fi
RESULTS=${RESULTS:-benchmarks/results}
for step in ${STEPS:-1 2 4 3 5}; do
    echo "[plan] step $step"
    case "$step" in
        1) DIR=$RESULTS/table37 bash benchmarks/table37.sh "$@" ;;
        2) gaps=$(python benchmarks/table37_gaps.py "$RESULTS/table37")
           # a task named twice runs once: the second time it is finished
           DIR=$RESULTS/table37-seed1 TASKS="$DEV $gaps" bash benchmarks/table37.sh "$@" seed=1 ;;
        3) # the knob rule (a) chose from steps 2 and 4 (while it cannot decide, both candidates)
           knob=$(python benchmarks/table37_choose.py "$RESULTS" --dev-set "$DEV" --knob) \
               || { status=$?; [ "$status" -eq 3 ] || exit "$status"; knob="noise_scale0.5 steps2"; }
           # task by task, so that every lever has the tasks it can move before any has an easy one;
           # a lever that fails on a task is named at the end, the others still run
           failed=()
           for task in $DEV; do
               for lever in boundary time regression lr; do
                   DIR=$RESULTS/table37-lever-$lever DEV="$task" KNOB="$knob" bash benchmarks/table37_levers.sh "$lever" "$@" \
                       || failed+=("$lever on $task")
               done
           done
           if [ ${#failed[@]} -gt 0 ]; then
               printf '[plan] step 3 failed: %s\n' "${failed[@]}" >&2
               exit 1
           fi ;;
        4) # the table's tasks with no 2-step evaluation of mp1-tuned, neither in the table nor rerun
           knobless=$(python - "$RESULTS/table37" "$RESULTS/table37-rerun" <<'EOF'
import sys
from pathlib import Path

from mp1.report import collect_runs

rows = [row for root in sys.argv[1:] if Path(root).exists() for row in collect_runs(root)]
tasks = {r["task"] for r in rows if r["policy"] == "mp1-tuned"}
print(" ".join(sorted(tasks - {r["task"] for r in rows if r["policy"] == "mp1-tuned[steps=2]"})))
EOF
)
           if [ -n "$knobless" ]; then
               DIR=$RESULTS/table37-rerun POLICIES=mp1-tuned TASKS="$knobless" bash benchmarks/table37.sh "$@"
           fi ;;
        5) # An undecided choice prints no recipe (the choice below then names what is missing), nor
           # does one that changes none: then nothing trains. The chosen runs are evaluated with (a)'s
           # knob alone, the one (c) reads ("none" names no knob: the plain one step needs no other).
           knob=$(python benchmarks/table37_choose.py "$RESULTS" --dev-set "$DEV" --knob) \
               || { status=$?; [ "$status" -eq 3 ] || exit "$status"; knob=none; }
           while read -r policy settings; do
               [ -n "$policy" ] || continue
               # shellcheck disable=SC2086  # the settings are several key=value words
               DIR=$RESULTS/table37-chosen/$policy POLICIES=$policy ONLY=${knob:-none} \
                   bash benchmarks/table37.sh $settings "$@" < /dev/null
           done < <(python benchmarks/table37_choose.py "$RESULTS" --dev-set "$DEV" --recipes)
           # the chosen recipes beside the table's (the table's alone, with every task's knob
           # columns, when none changed), the headline outside the development set
           mp1 report "$RESULTS"/table37{,-rerun,-chosen} --out "$RESULTS/table37-chosen" --dev-set "${DEV// /,}"
           # the choice and the issue's targets, held out, for the recipe chosen
           python benchmarks/table37_choose.py "$RESULTS" --dev-set "$DEV" > "$RESULTS/table37-choice.md" ;;
        *) echo "unknown step $step (1-5)" >&2; exit 2 ;;
    esac
done

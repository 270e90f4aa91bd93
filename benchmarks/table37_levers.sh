#!/usr/bin/env bash
# Issue #22's training levers on the development set: one lever per call, seeds 0 and 1, the
# same-budget protocol of benchmarks/table37.sh (cpu preset, 10 demos, 60 epochs at batch 128,
# strict success on 50 fixed-seed episodes). The unchanged recipes' runs are the table's own
# (results/table37 for seed 0, results/table37-seed1 for seed 1), so only the variants train here.
# Choose on the development set alone; the chosen recipe then runs once on all 37 tasks.
#   bash benchmarks/table37_levers.sh LEVER [key=value...]
#   DEV="metaworld/dial-turn adroit/pen ..." bash benchmarks/table37_levers.sh LEVER   (another set than DEV_SET)
# LEVER:
#   boundary    mp1-tuned with a share of (r, t) = (0, 1), the pair one-step sampling uses: 0.25, 0.5
#   time        mp1-tuned with r and t drawn uniformly instead of logit-normal
#   lr          each method at the other's learning rate (mp1-tuned 1e-4, DP3 3e-4)
#   regression  the deterministic head on the same encoder and UNet (a diagnostic)
# KNOB (a suffix of table37_knobs.sh, e.g. steps2; the plan passes the one benchmarks/table37_choose.py
# chose) also evaluates each mp1-tuned variant with that knob, so that a lever is compared with the
# recipe as it will be sampled.
# Results: benchmarks/results/table37-lever-LEVER/ (DIR, JOBS override); `mp1 report` over them and the table's folders.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
source "$ROOT/benchmarks/table37_protocol.sh"
cd "$ROOT"
lever=${1:?usage: table37_levers.sh boundary|time|lr|regression [key=value...]}
shift
read -r -a dev_tasks <<< "$DEV"
if [ ${#dev_tasks[@]} -gt 8 ]; then
    echo "the development set holds at most 8 tasks, got ${#dev_tasks[@]}" >&2
    exit 2
fi
# Each variant "name|settings" trains into its own subfolder (a sweep names run folders by the
# settings it varies, so two single-valued variants would share one).
case "$lever" in
    boundary)   variants=("mp1-tuned|policy=mp1-tuned model.objective.boundary_fraction=0.25,0.5") ;;
    time)       variants=("mp1-tuned|policy=mp1-tuned model.objective.time_distribution=uniform") ;;
    lr)         variants=("mp1-tuned|policy=mp1-tuned model.train_lr=1e-4" "dp3|policy=dp3 model.train_lr=3e-4") ;;
    regression) variants=("regression|policy=regression") ;;
    *) echo "unknown lever $lever" >&2; exit 2 ;;
esac
DIR=${DIR:-benchmarks/results/table37-lever-$lever}
failed=()
for task in "${dev_tasks[@]}"; do  # a variant that fails is reported at the end; the others still run
    for variant in "${variants[@]}"; do
        # shellcheck disable=SC2086  # the settings are several key=value words
        mp1 sweep task="$task" seed=0,1 "${PROTOCOL[@]}" ${variant#*|} "$@" --dir "$DIR/${variant%%|*}" --jobs "${JOBS:-2}" \
            || failed+=("$task ${variant%%|*}")
        if [ -n "${KNOB:-}" ]; then
            DIR="$DIR/${variant%%|*}" ONLY="$KNOB" bash "$ROOT/benchmarks/table37_knobs.sh" || failed+=("$task ${variant%%|*} (knobs)")
        fi
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}" >&2
    exit 1
fi

#!/usr/bin/env bash
# Issue #22's inference knobs on the 37-task table, no retraining: every finished mp1-tuned run of
# benchmarks/table37.sh whose policy file is still on this machine is evaluated again on its
# strict evaluation's own episodes (the first seed and count its final.json records) with the
# initial noise scaled to 0 and to 0.5, and with 2-step sampling. `mp1 report
# benchmarks/results/table37` shows each as a column of its own (mp1-tuned[noise_scale=0.0], ...),
# compared with DP3 like any method. Policy files stay out of git and leave with the machine; the
# evaluations' JSON files are kept, so run this in the session that trained the runs. Finished
# evaluations are skipped; a run whose knobs are missing and whose policy file has gone is named.
#   bash benchmarks/table37_knobs.sh            (DIR, JOBS override the defaults; ONLY="steps2 ...",
#                                                 some knobs only, by their result suffix; ONLY=none, none)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
DIR=${DIR:-benchmarks/results/table37}
# The suffix `mp1 eval` gives its result file for each setting, and the setting.
KNOBS=("noise_scale0.0|--noise-scale 0" "noise_scale0.5|--noise-scale 0.5" "steps2|--steps 2")
# Every finished mp1-tuned run under DIR, at any depth (a sweep of one policy has no policy=
# folder; DIR/: into DIR even where it is a symbolic link); read on descriptor 3, so that mp1 eval
# cannot consume the list.
while IFS= read -r final <&3; do
    run=$(dirname "$final")
    grep -qx "policy: mp1-tuned" "$run/config.yaml" || continue
    read -r seed episodes < <(python -c "import json, sys; s = json.load(open(sys.argv[1]))['strict_protocol']
print(s['seed'], s['episodes'])" "$final")
    for knob in "${KNOBS[@]}"; do
        suffix=${knob%%|*}
        [[ -z "${ONLY:-}" || " $ONLY " == *" $suffix "* ]] || continue
        [ -e "$run/eval/eval_seed${seed}_${episodes}ep_${suffix}.json" ] && continue
        if [ ! -e "$run/policy_latest.pt" ]; then
            echo "[knobs] $run: no $suffix evaluation and no policy file (it left with a machine): rerun it" >&2
            continue
        fi
        # shellcheck disable=SC2086  # the setting is two words
        mp1 eval "$run" --episodes "$episodes" --seed "$seed" --jobs "${JOBS:-2}" ${knob#*|}
    done
done 3< <(find "$DIR/" -name final.json | sort)

#!/usr/bin/env bash
# Issue #22's plan (table37_plan.sh) in the background, from a frozen copy of the code: a git
# worktree of this checkout's HEAD (WORKTREE, default ../mp1-plan), so that editing and committing
# here does not change the code a study of many hours runs. The result folders, the demos and the
# environment stay this checkout's (symbolic links): results land where they are committed from,
# and starting again from a newer HEAD (after a change, or on a machine whose processes stopped)
# resumes the same runs from their checkpoints. A plan already running from WORKTREE is stopped first.
#   STEPS="3 5" bash benchmarks/table37_background.sh      (log: WORKTREE.log; STEPS as table37_plan.sh)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tree=$(realpath -m "${WORKTREE:-$root/../mp1-plan}")
if [ -f "$tree.pid" ]; then  # the plan runs in a process group of its own: stop all of it
    kill -- "-$(cat "$tree.pid")" 2>/dev/null || true
    sleep 2
fi
git -C "$root" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
git -C "$root" worktree prune
git -C "$root" worktree add --quiet --detach "$tree" HEAD
results=benchmarks/results
for name in table37 table37-seed1 table37-rerun table37-chosen \
            table37-lever-boundary table37-lever-time table37-lever-regression table37-lever-lr; do
    mkdir -p "$root/$results/$name"
    rm -rf "${tree:?}/$results/$name"
    ln -s "$root/$results/$name" "$tree/$results/$name"
done
ln -sf "$root/$results/table37-choice.md" "$tree/$results/table37-choice.md"  # written by step 5
mkdir -p "$root/data"
ln -s "$root/data" "$tree/data"
ln -s "$root/.venv" "$tree/.venv"
cd "$tree"
PYTHONPATH="$tree/src" STEPS="${STEPS:-1 2 4 3 5}" setsid nohup nice -n 10 bash benchmarks/table37_plan.sh \
    > "$tree.log" 2>&1 < /dev/null &
echo $! > "$tree.pid"
echo "plan started from $(git rev-parse --short HEAD) in $tree (process group $!); log: $tree.log"

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
case "$root/" in "$tree"/*)
    echo "WORKTREE=$tree holds this checkout: name a folder of its own" >&2; exit 2 ;;
esac
# The worktree's setup would reinstall mp1 from itself into the shared environment if the files
# that stamp an install differ from this checkout's: commit them, and install from here first.
if ! git -C "$root" diff --quiet HEAD -- pyproject.toml scripts/setup.sh; then
    echo "pyproject.toml or scripts/setup.sh differ from HEAD: commit them first" >&2; exit 2
fi
source "$root/scripts/setup.sh"

# The plan runs in a process group of its own, recorded in WORKTREE.pid: stop all of it, and wait
# until its runs have let go of their folders' locks.
if [ -f "$tree.pid" ]; then
    group=$(cat "$tree.pid")
    if [ "$(readlink "/proc/$group/cwd" 2>/dev/null)" = "$tree" ]; then
        kill -- "-$group" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 -- "-$group" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$group" 2>/dev/null || true
    fi
    rm -f "$tree.pid"
fi
if git -C "$root" worktree list --porcelain | grep -qx "worktree $tree"; then
    git -C "$root" worktree remove --force "$tree"  # removes the links, not what they point to
elif [ -e "$tree" ]; then
    echo "$tree exists and is not a worktree of this checkout: name another WORKTREE" >&2; exit 2
fi
git -C "$root" worktree prune
git -C "$root" worktree add --quiet --detach "$tree" HEAD
results=benchmarks/results
for name in table37 table37-seed1 table37-rerun table37-chosen \
            table37-lever-boundary table37-lever-time table37-lever-regression table37-lever-lr; do
    mkdir -p "$root/$results/$name"
    rm -rf "${tree:?}/$results/$name"  # the checkout's committed copy, replaced by the link
    ln -s "$root/$results/$name" "$tree/$results/$name"
done
ln -sf "$root/$results/table37-choice.md" "$tree/$results/table37-choice.md"  # written by step 5
mkdir -p "$root/data"
ln -s "$root/data" "$tree/data"
ln -s "$root/.venv" "$tree/.venv"
cd "$tree"
echo "[background] $(date -u +%FT%TZ) plan from $(git rev-parse --short HEAD), STEPS=${STEPS:-1 2 4 3 5}" >> "$tree.log"
PYTHONPATH="$tree/src" STEPS="${STEPS:-1 2 4 3 5}" setsid nohup nice -n 10 bash benchmarks/table37_plan.sh \
    >> "$tree.log" 2>&1 < /dev/null &
echo $! > "$tree.pid"
echo "plan started from $(git rev-parse --short HEAD) in $tree (process group $!); log: $tree.log"

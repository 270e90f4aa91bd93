#!/usr/bin/env bash
# Issue #23's stand-in recording target: Meta-World episodes as a robot's recordings (through the
# recording API, as a ROS 2 bag, as robomimic HDF5; benchmarks/standin.py), each trained with no
# simulator, then evaluated in the simulator with the strict protocol (100 fixed-seed episodes,
# the env making its clouds with the store's pipeline), beside the same policy, budget and seeds
# trained on the native store. Target: within 5 points of the native store's success.
#   bash benchmarks/standin.sh [key=value...]      (TASKS, SEEDS, STORES, DIR override the defaults)
# 2 tasks x 2 seeds x 4 stores = 16 runs of the same-budget protocol: hours on a 2-core CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$ROOT"
DIR=${DIR:-benchmarks/results/standin}
for task in ${TASKS:-metaworld/button-press metaworld/door-open}; do
    data="data/standin/${task#*/}"
    [ -e "$data/native.zarr" ] || mp1 demos "$task" --episodes 10 --images --out "$data/native.zarr"
    python benchmarks/standin.py "$data/native.zarr" --task "$task" --out "$data"
    for seed in ${SEEDS:-0 1}; do
        for store in ${STORES:-native recorded bag hdf5}; do
            run="$DIR/${task#*/}/$store/seed=$seed"
            [ -e "$run/final.json" ] || mp1 train policy=mp1-tuned data_path="$data/$store.zarr" demos=10 seed="$seed" \
                preset=cpu epochs=60 warmup_steps=50 eval_every=0 final_eval_episodes=0 video=false run_dir="$run" "$@"
            [ -e "$run/eval/eval_seed1000_100ep.json" ] || mp1 eval "$run" --task "$task" --episodes 100 --seed 1000
        done
    done
done

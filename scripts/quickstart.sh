#!/usr/bin/env bash
# Installs what is needed (see setup.sh) and runs the main job: trains MP1, plain flow
# matching, FlowPolicy and DP3 objectives on a 2-D conditional toy and plots their samples.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec mp1 toy --out outputs/toy.png "$@"

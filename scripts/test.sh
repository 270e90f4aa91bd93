#!/usr/bin/env bash
# Installs what is needed (see setup.sh) and runs the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec python -m pytest -n 2 "$@"

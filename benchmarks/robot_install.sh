#!/usr/bin/env bash
# Issue #24's robot-side installs, each into an empty venv: the client (`pip install mp1`: numpy,
# msgpack, websockets; no torch) and the runtime (`mp1[runtime]`: torch's CPU wheel first, then
# fpsample and omegaconf; no simulator, no training stack). Each is imported and checked for what
# it must not load; install time and size are printed and written to OUT/robot_install.json.
#   bash benchmarks/robot_install.sh [OUT]       (default benchmarks/results/robot_install)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benchmarks/results/robot_install}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

install() {  # NAME CHECK_CODE PIP_ARGS...: a fresh venv, timed install, size, import check
    local name=$1 check=$2
    shift 2
    "$PYTHON" -m venv "$WORK/$name"
    local start end
    start=$(date +%s.%N)
    "$WORK/$name/bin/pip" install -q --disable-pip-version-check "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; exit 1; }
    end=$(date +%s.%N)
    "$WORK/$name/bin/python" -c "$check"
    local size
    size=$(du -sm "$WORK/$name" | cut -f1)
    echo "{\"install\": \"$name\", \"seconds\": $(echo "$end - $start" | bc), \"venv_mb\": $size}"
}

client_check='
import sys
from mp1.serving import PolicyClient, StreamingClient
heavy = [m for m in ("torch", "mujoco", "metaworld", "zarr", "diffusers") if m in sys.modules]
assert not heavy, heavy
print("client imports without torch:", PolicyClient.__name__, StreamingClient.__name__)'
runtime_check='
import sys
from mp1.runtime import CloudMaker, PolicyRunner, load_policy
from mp1.serving import PolicyClient
heavy = [m for m in ("mujoco", "metaworld", "gymnasium", "zarr", "diffusers", "matplotlib") if m in sys.modules]
assert not heavy, heavy
print("runtime imports without simulators:", PolicyRunner.__name__)'

{
    echo "["
    install client "$client_check" "$ROOT"
    echo ","
    install runtime "$runtime_check" "torch==2.13.0" "$ROOT[runtime]"
    echo "]"
} | tee "$OUT/robot_install.json"

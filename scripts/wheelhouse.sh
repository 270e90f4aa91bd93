#!/usr/bin/env bash
# Gathers mp1 and every dependency except torch as wheels, for installing on a node with no
# package index that already has its own (CUDA) torch:
#
#   scripts/wheelhouse.sh OUT [PYTHON_VERSION PLATFORM]      # e.g. wheelhouse 3.12 manylinux_2_28_x86_64
#   # copy OUT to the node, then there:
#   pip install --no-index --find-links OUT 'mp1[all]'      # or mp1[train], mp1[runtime], mp1 (the client)
#
# Without PYTHON_VERSION and PLATFORM the wheels are for this machine's Python and platform.
# Packages published only as source (pure Python) are built into wheels here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: wheelhouse.sh OUT [PYTHON_VERSION PLATFORM]}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$ROOT"
# mp1's requirements with every extra (mp1[all], expanded), torch left out (the node brings its own).
mapfile -t requirements < <("$PYTHON" - "$ROOT/pyproject.toml" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]

def expand(requirements):
    for requirement in requirements:
        inner = re.fullmatch(r"mp1\[(.+)\]", requirement)
        yield from (expand(r for name in inner.group(1).split(",") for r in extras[name]) if inner else [requirement])

for requirement in dict.fromkeys(expand(project["dependencies"] + extras["all"])):
    if re.split(r"[<>=!~\[ ;]", requirement)[0].lower() != "torch":
        print(requirement)
PY
)
target=()
if [ $# -ge 3 ]; then
    target=(--python-version "$2" --platform "$3" --implementation cp)
fi
# Resolve and fetch binary wheels; a package that has none is built from source (pure Python).
if ! "$PYTHON" -m pip download --quiet --dest "$OUT" --only-binary=:all: "${target[@]}" "${requirements[@]}" 2>"$OUT/.download.log"; then
    missing=$(grep -oE "No matching distribution found for [^ ]+" "$OUT/.download.log" | awk '{print $NF}' | sort -u)
    [ -n "$missing" ] || { cat "$OUT/.download.log" >&2; exit 1; }
    for package in $missing; do
        echo "[wheelhouse] building $package from source (no binary wheel published)"
        "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$package"
    done
    "$PYTHON" -m pip download --quiet --dest "$OUT" --only-binary=:all: --find-links "$OUT" "${target[@]}" "${requirements[@]}"
fi
rm -f "$OUT/.download.log"
echo "[wheelhouse] $(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1)); install with:"
echo "  pip install --no-index --find-links $OUT 'mp1[all]'"

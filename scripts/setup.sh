#!/usr/bin/env bash
# Creates (or reuses) .venv in the checkout and installs what mp1 needs: the system GL
# libraries for offscreen MuJoCo rendering (when missing and we are root), torch's CPU wheel
# pinned to 2.13.0 first (so no requirement can pull a CUDA build), then mp1 itself.
# Sourced by quickstart.sh and test.sh; safe to run again (it skips finished steps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

# grep reads all of it: with pipefail, `grep -q` quitting early would fail the pipe (SIGPIPE)
have_lib() { ldconfig -p 2>/dev/null | grep "$1" >/dev/null; }
if ! have_lib libEGL.so.1 || ! have_lib libOSMesa.so; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing GL libraries for offscreen rendering (EGL, OSMesa)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 >/dev/null
    else
        echo "[setup] warning: libEGL/libOSMesa missing and not root; MuJoCo rendering may fail" >&2
    fi
fi

# pip's output goes to a log, shown only when it fails (this machine's pip.conf is chatty).
pip_install() {
    local log
    log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
        grep -v "is ignored" "$log" >&2
        echo "[setup] pip install $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
STAMP="$VENV/.mp1-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[setup] installing Python packages into $VENV"
    pip_install --upgrade pip
    pip_install "torch==2.13.0"
    pip_install -e "$ROOT[test]"
    "$VENV/bin/python" -c "import torch, mp1; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    echo "$WANT" > "$STAMP"
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
export PATH="$VENV/bin:$PATH"

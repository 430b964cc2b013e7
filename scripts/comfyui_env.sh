#!/usr/bin/env bash
# Set up a real ComfyUI OUTSIDE this repository for test tier c (tests/comfyui), then run the tier.
#
#   bash scripts/comfyui_env.sh setup [SRC]   # SRC: a ComfyUI git repository/URL to clone (v0.3.64+);
#                                             #   default: $COMFYUI_SRC, else https://github.com/comfyanonymous/ComfyUI
#   bash scripts/comfyui_env.sh test [pytest args]   # runs tests/comfyui with COMFYUI_DIR/COMFYUI_PYTHON set
#
# Where: $COMFYUI_DIR (default ../ComfyUI next to this repo) and its venv $COMFYUI_VENV (default
# $COMFYUI_DIR-venv). The venv gets ComfyUI's requirements (+ requests, which v0.3.64's list misses), this pack
# (editable), comfy-cli (for `comfy node validate`) and Playwright for Python (the FocusPicker browser test drives
# the system Chromium: `apt-get install chromium`; Playwright downloads no browser here). torch: CPU wheels are
# enough (ComfyUI runs with --cpu); pin with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.14.1 torchvision==0.29.1".
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
COMFYUI_DIR="${COMFYUI_DIR:-$(dirname "$REPO")/ComfyUI}"
COMFYUI_VENV="${COMFYUI_VENV:-${COMFYUI_DIR%/}-venv}"
PY="${PYTHON:-python3}"
cmd="${1:-test}"; shift || true
case "$cmd" in
  setup)
    src="${1:-${COMFYUI_SRC:-https://github.com/comfyanonymous/ComfyUI}}"
    [ -f "$COMFYUI_DIR/main.py" ] || git clone -q "$src" "$COMFYUI_DIR" \
      || [ -f "$COMFYUI_DIR/main.py" ] || { echo "clone of $src failed" >&2; exit 1; }
    [ -x "$COMFYUI_VENV/bin/python" ] || "$PY" -m venv "$COMFYUI_VENV"
    pip="$COMFYUI_VENV/bin/python -m pip install -q --disable-pip-version-check"
    $pip ${TORCH_SPEC:-torch torchvision}
    grep -v -E '^(torch|torchvision|torchaudio)\s*$' "$COMFYUI_DIR/requirements.txt" > "$COMFYUI_VENV/comfy-req.txt"
    $pip -r "$COMFYUI_VENV/comfy-req.txt" requests
    $pip -e "$REPO" comfy-cli playwright pytest
    "$COMFYUI_VENV/bin/python" -c "import torch, torchvision, aiohttp, diffcamera; print('ComfyUI env ready:', torch.__version__)"
    echo "export COMFYUI_DIR=$COMFYUI_DIR COMFYUI_PYTHON=$COMFYUI_VENV/bin/python"
    ;;
  test)
    export COMFYUI_DIR COMFYUI_PYTHON="${COMFYUI_PYTHON:-$COMFYUI_VENV/bin/python}"
    PYTEST="${PYTEST:-$( [ -x .venv/bin/pytest ] && echo .venv/bin/pytest || echo pytest )}"
    exec "$PYTEST" tests/comfyui -ra "$@"
    ;;
  *) echo "usage: $0 setup [SRC] | test [pytest args]" >&2; exit 2 ;;
esac

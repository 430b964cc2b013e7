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
# the system Chromium: `apt-get install chromium`; Playwright downloads no browser here).
#
# torch: CPU wheels are enough (the server runs with --cpu). By default torch and torchvision come from the CPU
# wheel index $TORCH_INDEX (default https://download.pytorch.org/whl/cpu, ~200 MB). Where that index cannot be
# reached (only PyPI is), setup says so and installs PyPI's default build instead (on Linux x86-64 a CUDA build,
# ~6.7 GB, which also runs with --cpu). TORCH_SPEC="torch==2.14.1 torchvision==0.29.1" pins an exact spec from
# the default index (no CPU index); a torch already in the venv is kept.
# The newer front end for the Nodes 2.0 browser tests: FRONTEND_SPEC (default comfyui-frontend-package==1.58.*)
# is installed with --target into $COMFYUI_VENV/frontend (not into the venv, so ComfyUI's pinned front end stays
# the default); `test` passes its static folder to the tests as DIFFCAMERA_FRONTEND_ROOT.
# pip's "... is ignored" warnings (unreachable extra index locations) are filtered out.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
COMFYUI_DIR="${COMFYUI_DIR:-$(dirname "$REPO")/ComfyUI}"
COMFYUI_VENV="${COMFYUI_VENV:-${COMFYUI_DIR%/}-venv}"
PY="${PYTHON:-python3}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
FRONTEND_SPEC="${FRONTEND_SPEC:-comfyui-frontend-package==1.58.*}"
FRONTEND_TARGET="${FRONTEND_TARGET:-${COMFYUI_VENV%/}/frontend}"

# pip install "$@" into the ComfyUI venv, quietly: its "... is ignored" warnings are dropped; on failure the rest
# of its output goes to stderr and the script stops.
pip_quiet() {
  local log status=0
  log="$(mktemp)"
  "$VPY" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  grep -v "is ignored" "$log" >&2 || true
  rm -f "$log"
  [ "$status" -eq 0 ] || { echo "comfyui_env.sh: pip install $* failed (exit $status)" >&2; exit "$status"; }
}

# Whether a pip index answers (HTTP, 10 s); the CPU wheel index is often unreachable behind a PyPI-only proxy.
index_reachable() {
  "$VPY" - "$1" <<'PYCODE' >/dev/null 2>&1
import sys, urllib.request
url = sys.argv[1].rstrip("/") + "/torch/"
with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - an index URL the user chose
    sys.exit(0 if r.status < 400 else 1)
PYCODE
}

install_torch() {
  if "$VPY" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "torch: keeping the one in $COMFYUI_VENV ($("$VPY" -c 'import torch; print(torch.__version__)'))"
  elif [ -n "${TORCH_SPEC:-}" ]; then
    echo "torch: installing TORCH_SPEC=$TORCH_SPEC from the default index"
    # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement specifiers
    pip_quiet $TORCH_SPEC
  elif index_reachable "$TORCH_INDEX"; then
    echo "torch: installing CPU wheels from $TORCH_INDEX"
    pip_quiet --index-url "$TORCH_INDEX" torch torchvision
  else
    echo "torch: the CPU wheel index $TORCH_INDEX cannot be reached; installing torch and torchvision from the" \
         "default index instead (on Linux x86-64 a CUDA build of ~6.7 GB; it runs with --cpu too)." \
         "Set TORCH_INDEX to a reachable CPU index, or TORCH_SPEC to pin a build, to choose." >&2
    pip_quiet torch torchvision
  fi
}
cmd="${1:-test}"; shift || true
case "$cmd" in
  setup)
    src="${1:-${COMFYUI_SRC:-https://github.com/comfyanonymous/ComfyUI}}"
    [ -f "$COMFYUI_DIR/main.py" ] || git clone -q "$src" "$COMFYUI_DIR" \
      || [ -f "$COMFYUI_DIR/main.py" ] || { echo "clone of $src failed" >&2; exit 1; }
    [ -x "$COMFYUI_VENV/bin/python" ] || "$PY" -m venv "$COMFYUI_VENV"
    VPY="$COMFYUI_VENV/bin/python"
    install_torch
    grep -v -E '^(torch|torchvision|torchaudio)\s*$' "$COMFYUI_DIR/requirements.txt" > "$COMFYUI_VENV/comfy-req.txt"
    pip_quiet -r "$COMFYUI_VENV/comfy-req.txt" requests
    pip_quiet -e "$REPO" comfy-cli playwright pytest
    pip_quiet --target "$FRONTEND_TARGET" --upgrade --no-deps "$FRONTEND_SPEC"
    "$VPY" -c "import torch, torchvision, aiohttp, diffcamera; print('ComfyUI env ready:', torch.__version__)"
    echo "export COMFYUI_DIR=$COMFYUI_DIR COMFYUI_PYTHON=$VPY DIFFCAMERA_FRONTEND_ROOT=$FRONTEND_TARGET/comfyui_frontend_package/static"
    ;;
  test)
    export COMFYUI_DIR COMFYUI_PYTHON="${COMFYUI_PYTHON:-$COMFYUI_VENV/bin/python}"
    fe="$FRONTEND_TARGET/comfyui_frontend_package/static"
    [ -n "${DIFFCAMERA_FRONTEND_ROOT:-}" ] || { [ -f "$fe/index.html" ] && export DIFFCAMERA_FRONTEND_ROOT="$fe"; } || true
    PYTEST="${PYTEST:-$( [ -x .venv/bin/pytest ] && echo .venv/bin/pytest || echo pytest )}"
    exec "$PYTEST" tests/comfyui -ra "$@"
    ;;
  *) echo "usage: $0 setup [SRC] | test [pytest args]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# One-stop set-up and run on a fresh machine: creates .venv, installs CPU torch 2.13.0 and the pack
# (editable, with test extras), then runs what you ask:
#   bash scripts/dev.sh demo      # the main job on the built-in scene (no download)
#   bash scripts/dev.sh test      # every test tier (tier c runs only with COMFYUI_DIR set)
#   bash scripts/dev.sh bench     # the benchmark scripts
#   bash scripts/dev.sh <cmd> ... # any command inside the venv (e.g. diffcamera --help)
#   bash scripts/dev.sh --help    # this text (makes no venv)
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  cat <<'TEXT'
usage: bash scripts/dev.sh [test|demo|bench|<command in .venv/bin>] [args...]

Creates .venv on first use (CPU torch 2.13.0 + this pack, editable, with test extras), then runs:
  test [pytest args]   every test tier (the real-ComfyUI tier only with COMFYUI_DIR set); the default
  demo [args]          the main job on the built-in scene (diffcamera demo), no download
  bench [args]         every benchmarks/bench_*.py
  <cmd> [args]         any program installed in the venv, e.g. diffcamera --help, python, pytest
  -h, --help, help     this text
Environment: DIFFCAMERA_VENV (venv folder, default .venv), PYTHON (interpreter that makes it, default python3).
TEXT
}
case "${1:-}" in
  -h|--help|help) usage; exit 0 ;;
  -*) echo "dev.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
VENV="${DIFFCAMERA_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch is the user's (ComfyUI's) in real installs; here we pin the CPU build that lies on local disk.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, diffusers, peft, kornia, transformers, diffcamera" \
  || { echo "dev.sh: installation failed" >&2; exit 1; }
cmd="${1:-test}"
shift || true
case "$cmd" in
  test)  exec "$VENV/bin/pytest" "$@" ;;
  demo)  exec "$VENV/bin/diffcamera" demo "$@" ;;
  bench) for b in benchmarks/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done ;;
  *)     [ -x "$VENV/bin/$cmd" ] || { echo "dev.sh: no command '$cmd' in $VENV/bin" >&2; usage >&2; exit 2; }
         exec "$VENV/bin/$cmd" "$@" ;;
esac

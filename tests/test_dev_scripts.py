"""The newcomer's two shell entry points: ``scripts/dev.sh`` and ``scripts/comfyui_env.sh``.

``comfyui_env.sh setup`` is run for real against a stand-in venv whose ``bin/python`` is a small shell script:
it records every ``pip install`` it is asked for (and prints the "... is ignored" warnings an unreachable
extra index makes pip print), runs the index probe with the real interpreter, and answers the import checks.
So the test sees which torch the script installs, from which index, and what the user sees, without
installing anything.
"""
from __future__ import annotations

import http.server
import os
import shutil
import stat
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _run(args, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC", "TORCH_INDEX", "COMFYUI_DIR",
                                                                 "COMFYUI_VENV", "DIFFCAMERA_VENV")}
    full_env.update(env or {})
    return subprocess.run([BASH, *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_dev_sh_help_prints_usage_and_makes_no_venv(tmp_path, flag):
    venv = tmp_path / "venv"
    out = _run(["scripts/dev.sh", flag], env={"DIFFCAMERA_VENV": str(venv)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: bash scripts/dev.sh")
    for word in ("test", "demo", "bench"):
        assert f"  {word}" in out.stdout
    assert not venv.exists(), "--help must not create the venv"


def test_dev_sh_unknown_option_is_refused_with_usage(tmp_path):
    venv = tmp_path / "venv"
    out = _run(["scripts/dev.sh", "--frobnicate"], env={"DIFFCAMERA_VENV": str(venv)})
    assert out.returncode == 2
    assert "unknown option --frobnicate" in out.stderr and "usage:" in out.stderr
    assert not venv.exists()


STUB = r"""#!/usr/bin/env bash
# stand-in for the ComfyUI venv's python (tests/test_dev_scripts.py)
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then
  shift 3
  echo "$*" >> "$here/pip.log"
  for i in $(seq 40); do
    echo "WARNING: Location 'file:///opt/pypi/simple/pkg$i/' is ignored: it is neither a file nor a directory." >&2
  done
  case " $* " in *" torch"*) touch "$here/torch_installed" ;; esac
  exit 0
fi
if [ "$1" = "-" ]; then exec "REAL_PYTHON" "$@"; fi
if [ "$1" = "-c" ]; then
  case "$2" in
    "import torch, torchvision") [ -f "$here/torch_installed" ] ;;
    *) echo "2.14.1+stub"; exit 0 ;;
  esac
  exit $?
fi
exit 0
"""


@pytest.fixture
def stub_env(tmp_path):
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text("# stand-in\n")
    (comfy / "requirements.txt").write_text("torch\ntorchvision\naiohttp\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB.replace("REAL_PYTHON", sys.executable))
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return {"COMFYUI_DIR": str(comfy), "COMFYUI_VENV": str(venv)}, venv


def _pip_calls(venv):
    return (venv / "bin" / "pip.log").read_text().splitlines()


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path.rstrip("/").endswith("/torch") else 404)
        self.end_headers()
        self.wfile.write(b"<html></html>")

    def log_message(self, *args):
        pass


@pytest.fixture
def local_index():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu"
    server.shutdown()
    server.server_close()


def test_setup_installs_cpu_wheels_from_the_cpu_index_and_hides_pip_warnings(stub_env, local_index):
    env, venv = stub_env
    out = _run(["scripts/comfyui_env.sh", "setup"], env={**env, "TORCH_INDEX": local_index})
    assert out.returncode == 0, out.stderr
    calls = _pip_calls(venv)
    torch_calls = [c for c in calls if " torch" in f" {c}"]
    assert torch_calls[0].split() == ["-q", "--disable-pip-version-check", "--index-url", local_index, "torch",
                                      "torchvision"]
    assert len(torch_calls) == 1, "torch is installed once, from the CPU index"
    assert "is ignored" not in out.stdout + out.stderr
    assert f"installing CPU wheels from {local_index}" in out.stdout
    # ComfyUI's own requirements without torch, then the pack, then the newer front end into a --target folder
    assert (venv / "comfy-req.txt").read_text().split() == ["aiohttp"]
    assert any(c.endswith("-r " + str(venv / "comfy-req.txt") + " requests") for c in calls), calls
    assert any(c.endswith(f"-e {ROOT} comfy-cli playwright pytest") for c in calls), calls
    assert any(f"--target {venv}/frontend" in c and c.endswith("comfyui-frontend-package==1.58.*") for c in calls)
    assert f"DIFFCAMERA_FRONTEND_ROOT={venv}/frontend/comfyui_frontend_package/static" in out.stdout


def test_setup_says_so_when_the_cpu_index_is_unreachable(stub_env):
    env, venv = stub_env
    with __import__("socket").socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu"
    out = _run(["scripts/comfyui_env.sh", "setup"], env={**env, "TORCH_INDEX": dead})
    assert out.returncode == 0, out.stderr
    assert f"the CPU wheel index {dead} cannot be reached" in out.stderr
    assert "CUDA build" in out.stderr and "TORCH_SPEC" in out.stderr
    torch_calls = [c for c in _pip_calls(venv) if " torch" in f" {c}"]
    assert torch_calls == ["-q --disable-pip-version-check torch torchvision"]
    assert "is ignored" not in out.stdout + out.stderr


def test_setup_honours_torch_spec_and_keeps_an_installed_torch(stub_env, local_index):
    env, venv = stub_env
    spec = "torch==2.14.1 torchvision==0.29.1"
    out = _run(["scripts/comfyui_env.sh", "setup"], env={**env, "TORCH_SPEC": spec, "TORCH_INDEX": local_index})
    assert out.returncode == 0, out.stderr
    assert [c for c in _pip_calls(venv) if " torch" in f" {c}"] == [f"-q --disable-pip-version-check {spec}"]
    # a second setup keeps the torch that is there
    (venv / "bin" / "pip.log").unlink()
    out = _run(["scripts/comfyui_env.sh", "setup"], env={**env, "TORCH_INDEX": local_index})
    assert out.returncode == 0, out.stderr
    assert "torch: keeping the one in" in out.stdout
    assert not [c for c in _pip_calls(venv) if " torch" in f" {c}"]


def test_setup_stops_when_pip_fails(stub_env):
    env, venv = stub_env
    python = venv / "bin" / "python"
    python.write_text(python.read_text().replace('  exit 0\nfi\nif [ "$1" = "-" ]',
                                                 '  echo "ERROR: No matching distribution" >&2; exit 1\nfi\n'
                                                 'if [ "$1" = "-" ]'))
    out = _run(["scripts/comfyui_env.sh", "setup"], env={**env, "TORCH_SPEC": "torch==0.0.1"})
    assert out.returncode == 1
    assert "No matching distribution" in out.stderr and "pip install torch==0.0.1 failed" in out.stderr
    assert "is ignored" not in out.stderr

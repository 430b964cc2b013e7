"""Tier c: a real ComfyUI in a subprocess (opt-in).

Set ``COMFYUI_DIR`` to a ComfyUI checkout (v0.3.64 or newer) whose requirements are installed, and
``COMFYUI_PYTHON`` to that environment's interpreter when it is not the one running pytest. Without
``COMFYUI_DIR`` every test here is skipped with a reason that says what to set; with it set but broken
(no ``main.py``, an interpreter that cannot import ComfyUI's requirements) the tests fail loudly, since
the run asked for this tier.

The session fixture :func:`comfy_server` lays out a temporary ComfyUI world (input/output/temp/user
folders, model folders filled with tiny random models made by ``tests/workflow_world.py``, and a
``custom_nodes`` folder holding a symlink ``diffcamera`` -> this repository, named in an
extra-model-paths yaml), starts ``main.py --cpu`` on a free loopback port (with
``DIFFCAMERA_MEMORY_LIMIT_MB=3000``, so the pack's memory refusals do not depend on the machine), waits until it
answers, and stops it by its PID at the end. Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import comfy_client  # noqa: E402  (tests/comfyui/comfy_client.py)

ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP_REASON = ("tier c needs a real ComfyUI: set COMFYUI_DIR=/path/to/ComfyUI (a checkout, v0.3.64+, with its "
               "requirements.txt installed) and, if that environment is not this interpreter, "
               "COMFYUI_PYTHON=/path/to/its/bin/python (set-up: tests/comfyui/README.md)")


def comfyui_dir():
    return os.environ.get("COMFYUI_DIR") or None


def comfyui_python():
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if str(item.fspath).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.comfyui)
            if not comfyui_dir():
                item.add_marker(skip)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def comfy_env():
    """``(comfyui_dir, python)`` after checking the checkout and its interpreter (fails if broken)."""
    root = comfyui_dir()
    if not root:
        pytest.skip(SKIP_REASON)
    assert os.path.isfile(os.path.join(root, "main.py")), f"COMFYUI_DIR={root} has no main.py: not a ComfyUI checkout"
    python = comfyui_python()
    probe = subprocess.run([python, "-c", "import torch, torchvision, aiohttp, yaml, safetensors, diffusers, kornia"],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, (
        f"{python} cannot import ComfyUI's requirements and the pack's dependencies "
        f"(pip install -r {root}/requirements.txt requests && pip install -e {ROOT}):\n{probe.stderr[-2000:]}")
    return root, python


@pytest.fixture(scope="session")
def comfy_world(tmp_path_factory, comfy_env):
    """The temporary ComfyUI folders with tiny models and input images (``tests/workflow_world.py``),
    a ``custom_nodes/diffcamera`` symlink to this repository and the yaml that names them all."""
    import workflow_world

    base = str(tmp_path_factory.mktemp("comfyui_world"))
    workflow_world.build(base)
    # a random whole toy model in models/diffcamera: runs the refocus graph before the trained toy is bundled
    workflow_world.save_random_toy(os.path.join(base, "models", "diffcamera", "toy_standin"))
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.symlink(ROOT, os.path.join(base, "custom_nodes", "diffcamera"))
    lines = ["diffcamera_tests:", f"  base_path: {base}", "  custom_nodes: custom_nodes"]
    lines += [f"  {name}: models/{name}" for name in workflow_world.MODEL_FOLDERS]
    with open(os.path.join(base, "extra_model_paths.yaml"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return base


def _serve(comfy_env, base, extra_args=(), tag="default"):
    """Start ``main.py --cpu`` on a free loopback port over the world in ``base``; yield a client; stop it."""
    root, python = comfy_env
    port = _free_port()
    log_path = os.path.join(base, f"server-{tag}.log")
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", os.path.join(base, "extra_model_paths.yaml"),
           "--input-directory", os.path.join(base, "input"),
           "--output-directory", os.path.join(base, "output"),
           "--database-url", "sqlite:///:memory:",
           "--disable-auto-launch", "--disable-api-nodes", *extra_args]
    if "--temp-directory" not in extra_args:
        cmd += ["--temp-directory", os.path.join(base, "temp")]
    if "--user-directory" not in extra_args:
        cmd += ["--user-directory", os.path.join(base, "user")]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # never let the fake ComfyUI shadow the real one
    env["DO_NOT_TRACK"] = "1"
    # the pack's up-front memory checks compare with at most 3000 MiB free, on any machine: the memory rows of
    # test_security_real.py are refused the same way everywhere (the other tests' work is far smaller)
    env["DIFFCAMERA_MEMORY_LIMIT_MB"] = "3000"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    client = comfy_client.Client(f"http://127.0.0.1:{port}", log_path=log_path, base=base)
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited with {proc.returncode}:\n{client.log_tail()}")
            if client.ready():
                break
            if time.time() > deadline:
                raise AssertionError(f"ComfyUI did not answer within 240 s:\n{client.log_tail()}")
            time.sleep(1.0)
        yield client
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        log.close()
        if os.environ.get("DIFFCAMERA_KEEP_COMFY_LOG"):
            shutil.copy(log_path, os.environ["DIFFCAMERA_KEEP_COMFY_LOG"] + ("" if tag == "default" else f".{tag}"))


@pytest.fixture(scope="session")
def comfy_server(comfy_env, comfy_world):
    """A running ComfyUI (``main.py --cpu``) with the pack loaded and its own front end; yields a
    :class:`comfy_client.Client`."""
    yield from _serve(comfy_env, comfy_world)


#: The newer front end (``comfyui-frontend-package``, installed outside ComfyUI's venv with ``pip install
#: --target``) that tier c also drives: its ``static`` folder (or the package / --target folder holding it).
FRONTEND_ROOT_ENV = "DIFFCAMERA_FRONTEND_ROOT"
FRONTEND_HINT = (f"set {FRONTEND_ROOT_ENV} to the static folder of a newer ComfyUI front end, e.g. "
                 "pip install --target /opt/fe comfyui-frontend-package==1.58.* and "
                 f"{FRONTEND_ROOT_ENV}=/opt/fe/comfyui_frontend_package/static "
                 "(scripts/comfyui_env.sh setup does this)")


def newer_frontend_root():
    """``(static folder, version)`` of the newer front end named by ``$DIFFCAMERA_FRONTEND_ROOT``, or
    ``(None, reason)``."""
    given = os.environ.get(FRONTEND_ROOT_ENV)
    if not given:
        return None, f"no newer front end: {FRONTEND_HINT}"
    for candidate in (given, os.path.join(given, "static"), os.path.join(given, "comfyui_frontend_package", "static")):
        if os.path.isfile(os.path.join(candidate, "index.html")):
            static = os.path.abspath(candidate)
            break
    else:
        return None, f"{FRONTEND_ROOT_ENV}={given} holds no front end (no index.html): {FRONTEND_HINT}"
    package = os.path.dirname(static)
    version = "unknown"
    parent = os.path.dirname(package)
    for name in sorted(os.listdir(parent)):
        if name.startswith("comfyui_frontend_package-") and name.endswith(".dist-info"):
            version = name[len("comfyui_frontend_package-"):-len(".dist-info")]
    return static, version


@pytest.fixture(scope="session")
def comfy_server_newer_frontend(comfy_env, comfy_world):
    """A second ComfyUI over the same world, serving the newer front end (``--front-end-root``), with its own
    temp and user folders (settings such as ``Comfy.VueNodes.Enabled`` stay apart from the default run).
    Skipped, saying what to install, when ``$DIFFCAMERA_FRONTEND_ROOT`` is not set."""
    static, version = newer_frontend_root()
    if static is None:
        pytest.skip(version)
    base = comfy_world
    for sub in ("temp-newer-fe", "user-newer-fe"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    gen = _serve(comfy_env, base, ["--front-end-root", static,
                                   "--temp-directory", os.path.join(base, "temp-newer-fe"),
                                   "--user-directory", os.path.join(base, "user-newer-fe")], tag="newer-fe")
    client = next(gen)
    client.frontend_version = version
    try:
        yield client
    finally:
        gen.close()


INPROC = os.path.join(HERE, "inproc")


@pytest.fixture(scope="session")
def comfy_run(comfy_env):
    """Run ``tests/comfyui/inproc/<script>`` with ComfyUI's interpreter and ComfyUI imported in-process
    (never in pytest's own process, which holds the fake); returns what the script ``emit``-ted."""
    import json

    root, python = comfy_env

    def run(script: str, *args: str, timeout: float = 600):
        env = dict(os.environ, COMFYUI_DIR=root, PYTHONPATH=INPROC)
        out = subprocess.run([python, os.path.join(INPROC, script), *map(str, args)], cwd=INPROC, env=env,
                             capture_output=True, text=True, timeout=timeout)
        marker = "@@RESULT@@"
        if out.returncode != 0 or marker not in out.stdout:
            raise AssertionError(f"{script} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
        return json.loads(out.stdout.rsplit(marker, 1)[1].strip().splitlines()[0])

    return run

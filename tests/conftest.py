"""Test set-up shared by the three tiers.

Tier a (``tests/core``, ``tests/evaluation``): pure torch. Tier b (node layer): the fake ComfyUI in
``tests/fake_comfy`` is put first on ``sys.path`` *before anything imports the pack*, so
``diffcamera.comfy_adapter`` finds ComfyUI (the fake) and ``diffcamera.runtime`` takes it as its host. Tier c
(``tests/comfyui``): a real ComfyUI in a subprocess, only when ``COMFYUI_DIR`` is set. The no-ComfyUI fallback
(``comfy_fallback``) is tested in subprocesses and by setting ``runtime.host``.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_comfy")
if FAKE not in sys.path:
    sys.path.insert(0, FAKE)
sys.path.insert(0, HERE)  # for `import fake_executor` and the shared helpers in tests/

# Spinning OpenMP waits make torch 5-10x slower when the 2 cores are shared (CI, parallel sessions); sleeping
# waits cost little. Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def comfy_models_dir(tmp_path):
    """A fresh fake-ComfyUI base folder (models/, output/, temp/) for one test."""
    import folder_paths

    folder_paths.set_base(str(tmp_path))
    for name in ("depth_anything", "diffcamera"):
        folder_paths.folder_names_and_paths.pop(name, None)
    return tmp_path / "models"

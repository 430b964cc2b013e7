"""Tier c: the registry's own check, ``comfy node validate`` (comfy-cli from PyPI, installed into the
ComfyUI environment: ``pip install comfy-cli``), passes on this repository. It reads pyproject's
``[project]``/``[tool.comfy]`` and runs ruff's security checks; it works offline."""
from __future__ import annotations

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_comfy_node_validate_passes(comfy_env, tmp_path):
    _, python = comfy_env
    comfy = os.path.join(os.path.dirname(python), "comfy")
    if not os.path.exists(comfy):
        pytest.skip(f"comfy-cli is not installed next to {python}: {python} -m pip install comfy-cli")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "DO_NOT_TRACK": "1"}
    out = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "All validation checks passed" in text, text
    assert "warning" not in text.lower(), text

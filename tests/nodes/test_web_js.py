"""Runs the FocusPicker front-end unit tests (tests/web/*.mjs) with node, when node is installed."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEB_TESTS = ["test_focus_math.mjs", "test_focus_picker_wiring.mjs"]


@pytest.mark.parametrize("name", WEB_TESTS)
def test_web_js(name):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    path = os.path.join(ROOT, "tests", "web", name)
    proc = subprocess.run([node, path], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout


def test_extension_files_are_where_comfyui_serves_them():
    """WEB_DIRECTORY is ./web/js: every .js there is loaded as an ES module by the ComfyUI front end."""
    web = os.path.join(ROOT, "web", "js")
    picker = open(os.path.join(web, "focus_picker.js"), encoding="utf-8").read()
    assert 'import { app } from "../../scripts/app.js"' in picker
    assert 'name: "diffcamera.FocusPicker"' in picker and "DiffCamera_FocusPicker" in picker
    assert 'from "./focus_math.js"' in picker and os.path.isfile(os.path.join(web, "focus_math.js"))

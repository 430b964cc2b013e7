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


def test_extension_imports_only_what_the_front_end_supports():
    """The front end's supported surface for extensions is scripts/app.js and scripts/api.js (shims of its
    public API); scripts/ui.js and extensions/core/* are internals that newer front ends change or drop."""
    import re

    web = os.path.join(ROOT, "web", "js")
    for name in sorted(os.listdir(web)):
        if not name.endswith(".js"):
            continue
        source = open(os.path.join(web, name), encoding="utf-8").read()
        imports = re.findall(r"^\s*import\s[^;]*?from\s+[\"']([^\"']+)[\"']", source, flags=re.M)
        imports += re.findall(r"import\(\s*[\"']([^\"']+)[\"']", source)
        allowed = {"../../scripts/app.js", "../../scripts/api.js", "./focus_math.js"}
        assert set(imports) <= allowed, f"{name} imports {sorted(set(imports) - allowed)}"
        assert "extensions/core" not in source and "scripts/ui.js" not in source, name


def test_ui_keys_agree_between_node_and_extension():
    from diffcamera.nodes import focus

    source = open(os.path.join(ROOT, "web", "js", "focus_picker.js"), encoding="utf-8").read()
    assert f'PREVIEW_UI_KEY = "{focus.PREVIEW_UI_KEY}"' in source
    assert f'FOCUS_UI_KEY = "{focus.FOCUS_UI_KEY}"' in source
    assert focus.PREVIEW_UI_KEY != "images"

"""The pack itself: import cost, the two ways in, the CLI, and schema rules every node follows."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_plain(code: str) -> str:
    """Run ``code`` in a fresh interpreter without the fake ComfyUI on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_is_cheap_and_touches_nothing():
    out = _run_plain(
        "import sys, time; t = time.perf_counter(); import diffcamera; dt = time.perf_counter() - t;"
        "import json; print(json.dumps({'dt': dt, 'torch': 'torch' in sys.modules,"
        " 'mods': sorted(m for m in sys.modules if m.startswith(('comfy', 'folder_paths', 'server')))}))")
    info = json.loads(out)
    assert info["dt"] < 1.0
    assert not info["torch"], "importing the pack must not import torch"
    assert info["mods"] == []


def test_plain_python_uses_fallbacks():
    out = _run_plain(
        "import json, diffcamera.nodes, diffcamera.core, diffcamera.training, diffcamera.runtime as a;"
        "p = a.Progress(3, enable_tqdm=False); p(1); p(3); p.close();"
        "a.request_interrupt();\n"
        "try:\n    a.check_interrupt(); r = 'no'\nexcept a.Interrupted:\n    r = 'yes'\n"
        "print(json.dumps({'has': a.HAS_COMFY, 'dev': str(a.intermediate_device()), 'interrupt': r}))")
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"has": False, "dev": "cpu", "interrupt": "yes"}


def test_fake_comfy_branch_is_taken_in_tests():
    from diffcamera import comfy_adapter, runtime
    assert comfy_adapter.HAS_COMFY and runtime.host is comfy_adapter


def test_comfy_entrypoint_lists_nodes_and_web_directory():
    import asyncio

    import diffcamera
    ext = asyncio.run(diffcamera.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    from diffcamera.nodes import all_nodes
    assert [n.define_schema().node_id for n in nodes] == [n.define_schema().node_id for n in all_nodes()]
    assert os.path.isdir(os.path.join(ROOT, diffcamera.WEB_DIRECTORY))


def test_every_node_follows_the_schema_rules():
    from diffcamera.nodes import all_nodes
    seen = set()
    for node in all_nodes():
        s = node.define_schema()
        assert s.node_id.startswith("DiffCamera_"), s.node_id
        assert s.node_id not in seen
        seen.add(s.node_id)
        assert s.category.startswith("DiffCamera"), s.node_id
        assert s.description and len(s.description) > 20, s.node_id
        assert s.display_name, s.node_id
        for i in s.inputs:
            assert i.tooltip, f"{s.node_id}.{i.id} has no tooltip"
        assert s.outputs or s.is_output_node, s.node_id


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in
                                                  ("demo", "bokeh", "depth", "refocus", "simulate", "train",
                                                   "bench")])
def test_cli_help(argv):
    from diffcamera.cli import SUBCOMMANDS
    out = subprocess.run([sys.executable, "-m", "diffcamera", *argv], capture_output=True, text=True, cwd="/",
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "usage: diffcamera" in out.stdout
    assert set(SUBCOMMANDS) == {"demo", "bokeh", "depth", "refocus", "simulate", "train", "bench"}


def test_the_missions_nodes_are_all_there():
    from diffcamera.nodes import all_nodes
    names = {n.define_schema().node_id: n.define_schema().display_name for n in all_nodes()}
    expected = {"DiffCamera_DepthEstimate": "DepthEstimate", "DiffCamera_FocusPicker": "FocusPicker",
                "DiffCamera_BokehSimulate": "BokehSimulate", "DiffCamera_Refocus": "DiffCameraRefocus"}
    for node_id, display in expected.items():
        assert names.get(node_id) == display, node_id
    for loader in ("DiffCamera_DepthModelLoader", "DiffCamera_ModelLoader", "DiffCamera_SimulateDataset",
                   "DiffCamera_TrainRefocusLoRA"):
        assert loader in names

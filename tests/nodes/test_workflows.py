"""Tier b: every example workflow validates and runs against our node classes (fake ComfyUI).

The API copies in ``tests/workflows/*.json`` use our nodes plus three stock ComfyUI nodes (LoadImage,
SaveImage, PreviewImage), which tier b takes from ``tests/fake_comfy/stock_nodes.py`` (fakes that behave
like the real ones for these graphs); tier c runs the same files on a real ComfyUI. The files the graphs
name (an input image and its depth map, a Depth Anything folder, ...) are laid out by
``tests/workflow_world.py`` with tiny stand-ins. Also checked here: each UI workflow in ``workflows/``
converts back to the same graph as its API copy (``scripts/workflow_ui.py``), and each states the
licence of the models it expects.
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_DIR = os.path.join(ROOT, "tests", "workflows")
UI_DIR = os.path.join(ROOT, "workflows")


def _workflow_ui():
    spec = importlib.util.spec_from_file_location("workflow_ui", os.path.join(ROOT, "scripts", "workflow_ui.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: stock nodes whose files a workflow run is checked by
SAVERS = ("SaveImage", "PreviewImage", "SaveAnimatedWEBP")


def _api_files():
    return sorted(f for f in os.listdir(API_DIR) if f.endswith(".json") and not f.endswith(".meta.json"))


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _meta(fname):
    path = os.path.join(API_DIR, fname[:-5] + ".meta.json")
    return _load(path) if os.path.exists(path) else {}


def apply_test_overrides(prompt, meta):
    """Shrink a workflow for tests (``test_overrides`` of its meta file: fewer scenes, fewer steps)."""
    for node_id, values in (meta.get("test_overrides") or {}).items():
        prompt[node_id]["inputs"].update(values)
    return prompt


def _node_classes():
    import stock_nodes
    from diffcamera.nodes import all_nodes

    classes = {cls.define_schema().node_id: cls for cls in all_nodes()}
    classes.update(stock_nodes.NODE_CLASS_MAPPINGS)
    return classes


@pytest.fixture
def world(comfy_models_dir, monkeypatch):
    """The workflow files; while the trained toy model is not bundled, a random one stands in for it."""
    import workflow_world
    from diffcamera.core.dit import loading

    base = os.path.dirname(str(comfy_models_dir))
    if not workflow_world.toy_bundle_present():
        toy = workflow_world.save_random_toy(os.path.join(base, "toy_standin"))
        monkeypatch.setattr(loading, "toy_bundle_file", lambda path=None: toy)
    return workflow_world.build(base)


def test_there_are_workflows():
    assert _api_files(), "tests/workflows/ holds no API workflow"


def _params():
    """Workflow files; those that sample a model or train are marked slow (> 10 s on 2 cores)."""
    return [pytest.param(f, marks=pytest.mark.slow) if f.startswith(("refocus", "train")) else f for f in _api_files()]


@pytest.mark.parametrize("fname", _params())
def test_workflow_runs_on_our_nodes(fname, world):
    import fake_executor
    import folder_paths
    import workflow_world

    prompt = _load(os.path.join(API_DIR, fname))
    meta = _meta(fname)
    apply_test_overrides(prompt, meta)
    classes = _node_classes()
    unknown = {n["class_type"] for n in prompt.values()} - set(classes)
    assert not unknown, f"{fname} uses nodes that neither the pack nor the stock fakes have: {unknown}"
    results = fake_executor.run_prompt(prompt, classes)
    size = meta.get("output_size", list(workflow_world.SCENE_SIZE))
    h, w = size if size else (None, None)
    saved = 0
    for node_id, out in results.items():
        for value in out.args:
            if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-1] == 3:
                assert size is None or tuple(value.shape[1:3]) == (h, w), f"{fname} node {node_id}: {tuple(value.shape)}"
                assert torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1
        ui = out.ui.as_dict() if hasattr(out.ui, "as_dict") else (out.ui or {})
        kind = prompt[node_id]["class_type"]
        for image in ui.get("images", []) if kind in SAVERS else []:
            folder = folder_paths.get_output_directory() if image["type"] == "output" else folder_paths.get_temp_directory()
            from PIL import Image

            with Image.open(os.path.join(folder, image["subfolder"], image["filename"])) as im:
                assert size is None or im.size == (w, h)
                if kind == "SaveAnimatedWEBP":  # one file holding every frame of its input batch
                    src, slot = prompt[node_id]["inputs"]["images"]
                    frames = results[src].args[slot].shape[0]
                    assert frames > 1 and im.n_frames == frames, (im.n_frames, frames)
            saved += 1
    assert saved, f"{fname}: no {'/'.join(SAVERS)} wrote an image"


def test_ui_workflows_convert_to_their_api_copies():
    wui = _workflow_ui()
    schemas = wui.load_schemas()
    problems = wui.check(schemas)
    assert problems == [], ("\n".join(problems) + "\nA node schema changed? Update the API copies in tests/workflows/ "
                            "(and scripts/workflow_sources/), then run: python scripts/workflow_ui.py build")
    names = {name for name, _, _ in wui.sources()}
    ui_files = {f[:-5] for f in os.listdir(UI_DIR) if f.endswith(".json")}
    assert ui_files == names, "workflows/ and its sources differ (run: python scripts/workflow_ui.py build)"


def test_ui_workflows_are_what_the_converter_builds():
    """The committed UI files are exactly the converter's output (rebuild after editing a source)."""
    wui = _workflow_ui()
    schemas = wui.load_schemas()
    for name, api_path, meta_path in wui.sources():
        built = wui.api_to_ui(_load(api_path), schemas, _load(meta_path) if meta_path else None)
        assert _load(os.path.join(UI_DIR, name + ".json")) == json.loads(json.dumps(built)), \
            f"workflows/{name}.json is stale: run python scripts/workflow_ui.py build"


def test_every_ui_workflow_states_model_licences():
    for fname in sorted(os.listdir(UI_DIR)):
        if not fname.endswith(".json"):
            continue
        wf = _load(os.path.join(UI_DIR, fname))
        assert wf.get("version") == 0.4 and {"last_node_id", "last_link_id", "nodes", "links"} <= set(wf)
        notes = [n for n in wf["nodes"] if n["type"] == "Note"]
        assert notes and any("Licence" in n["widgets_values"][0] for n in notes), f"{fname}: no licence note"
        assert "licences" in wf["extra"].get("diffcamera", {}), f"{fname}: extra.diffcamera.licences missing"


def test_fake_rejects_a_value_above_max():
    """Schema rejections in tier b look like ComfyUI's (tier c checks the real answer)."""
    import fake_executor

    prompt = _load(os.path.join(API_DIR, _api_files()[0]))
    node_id, node = next((k, v) for k, v in prompt.items() if v["class_type"].startswith("DiffCamera_")
                         and any(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v["inputs"].values()))
    cls = _node_classes()[node["class_type"]]
    spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
    name = next(k for k, v in node["inputs"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and "max" in spec[k][1])
    bad = json.loads(json.dumps(prompt))
    bad[node_id]["inputs"][name] = spec[name][1]["max"] * 2 + 1
    with pytest.raises(fake_executor.PromptError) as err:
        fake_executor.validate_prompt(bad, _node_classes())
    assert err.value.errors[node_id][0]["type"] == "value_bigger_than_max"

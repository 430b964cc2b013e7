"""Tier c: every ``tests/workflows/*.json`` runs on a real ComfyUI, and bad values are rejected as the
fake executor says they are (HTTP 400 with ComfyUI's ``node_errors``)."""
from __future__ import annotations

import importlib.util
import io as _io
import json
import os

import pytest

from comfy_client import PromptRejected

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_DIR = os.path.join(ROOT, "tests", "workflows")


def _api_files():
    return sorted(f for f in os.listdir(API_DIR) if f.endswith(".json") and not f.endswith(".meta.json"))


def _load(fname):
    with open(os.path.join(API_DIR, fname), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("fname", _api_files())
def test_workflow_runs_on_real_comfyui(comfy_server, fname):
    import workflow_world
    from PIL import Image

    prompt = _load(fname)
    if any(v == "toy (bundled)" for node in prompt.values() for v in node["inputs"].values()) \
            and not workflow_world.toy_bundle_present():
        pytest.skip("the trained toy model is not bundled yet (assets/toy_refocus/model.safetensors); "
                    "tier b runs this graph with a random stand-in")
    meta_path = os.path.join(API_DIR, fname[:-5] + ".meta.json")
    meta = json.load(open(meta_path, encoding="utf-8")) if os.path.exists(meta_path) else {}
    for node_id, values in (meta.get("test_overrides") or {}).items():
        prompt[node_id]["inputs"].update(values)
    entry = comfy_server.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success"
    size = meta.get("output_size", list(workflow_world.SCENE_SIZE))
    outputs = entry["outputs"]
    expected = [k for k, v in prompt.items() if v["class_type"] in ("SaveImage", "PreviewImage", "SaveAnimatedWEBP")]
    assert expected and set(expected) <= set(outputs), f"outputs of {expected} missing: {list(outputs)}"
    racks = [v["inputs"]["frames"] for v in prompt.values() if v["class_type"] == "DiffCamera_RackFocus"]
    for node_id in expected:
        images = outputs[node_id]["images"]
        assert images, f"{fname}: node {node_id} saved nothing"
        for image in images:
            with Image.open(_io.BytesIO(comfy_server.view(image))) as im:
                assert size is None or im.size == (size[1], size[0]), f"{fname}: node {node_id} wrote {im.size}"
                if prompt[node_id]["class_type"] == "SaveAnimatedWEBP":  # the whole clip in one file
                    assert im.format == "WEBP" and racks and im.n_frames == racks[0], (im.format, im.n_frames, racks)


def _numeric_input_with_max(prompt):
    from diffcamera.nodes import all_nodes

    classes = {c.define_schema().node_id: c for c in all_nodes()}
    for node_id, node in prompt.items():
        cls = classes.get(node["class_type"])
        if cls is None:
            continue
        spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
        for name, val in node["inputs"].items():
            if isinstance(val, (int, float)) and not isinstance(val, bool) and "max" in spec[name][1]:
                return node_id, name, spec[name][1]
    raise AssertionError("no numeric widget with a max in the workflows")


@pytest.mark.parametrize("kind", ["value_bigger_than_max", "value_smaller_than_min", "required_input_missing"])
def test_rejections_match_the_fake(comfy_server, kind):
    """The same bad prompt is refused by the real server (HTTP 400) and by tier b's fake executor, with
    the same error type on the same node."""
    import fake_executor
    import stock_nodes
    from diffcamera.nodes import all_nodes

    prompt = _load(_api_files()[0])
    node_id, name, extra = _numeric_input_with_max(prompt)
    bad = json.loads(json.dumps(prompt))
    if kind == "value_bigger_than_max":
        bad[node_id]["inputs"][name] = extra["max"] * 2 + 1
    elif kind == "value_smaller_than_min":
        bad[node_id]["inputs"][name] = extra.get("min", 0) - 1
    elif kind == "required_input_missing":
        del bad[node_id]["inputs"][name]
    with pytest.raises(PromptRejected) as real:
        comfy_server.queue(bad)
    assert real.value.status == 400
    real_errors = real.value.body["node_errors"][node_id]["errors"]
    assert real_errors[0]["type"] == kind, real_errors

    classes = {c.define_schema().node_id: c for c in all_nodes()}
    classes.update(stock_nodes.NODE_CLASS_MAPPINGS)
    import folder_paths
    import workflow_world

    folder_paths.set_base(comfy_server.base)  # the fake sees the same input/model folders
    for folder in ("depth_anything", "diffcamera"):
        folder_paths.folder_names_and_paths.pop(folder, None)
    with pytest.raises(fake_executor.PromptError) as fake:
        fake_executor.validate_prompt(bad, classes)
    assert fake.value.errors[node_id][0]["type"] == kind
    assert workflow_world.SCENE_IMAGE  # the world the server uses is the one the fake reads


def test_stock_node_table_matches_real_object_info(comfy_server):
    """``scripts/stock_nodes.json`` (widget order of the stock nodes for the UI converter) is what the
    real server lists."""
    spec = importlib.util.spec_from_file_location("workflow_ui", os.path.join(ROOT, "scripts", "workflow_ui.py"))
    wui = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wui)
    with open(wui.STOCK_FILE, encoding="utf-8") as f:
        table = json.load(f)["nodes"]
    for name, want in table.items():
        info = comfy_server.object_info(name)[name]
        got = wui.schema_from_v1(info["input"], info["output"], info["output_name"], info["display_name"])
        for a, b in zip(want["inputs"], got["inputs"]):  # combo defaults list files: compare the rest
            if a["type"] == "COMBO" and a["default"] is None:
                b = {**b, "default": None}
            assert a == b, f"{name}: {a} != {b}"
        assert len(want["inputs"]) == len(got["inputs"]) and want["outputs"] == got["outputs"], name


def test_unknown_combo_value_fails_in_the_node(comfy_server):
    """ComfyUI v0.3.64 checks combo values only for V1 list combos: a V3 ``io.Combo`` value outside its
    options passes validation (the fake executor is stricter on purpose and refuses it). So each node
    must refuse an unknown option itself, with a message naming the input: checked here on the first
    DiffCamera combo of the first workflow."""
    prompt = _load(_api_files()[0])
    node_id, name = next((k, n) for k, v in prompt.items() if v["class_type"].startswith("DiffCamera_")
                         for n, x in v["inputs"].items()
                         if isinstance(x, str) and n not in ("path", "focus_point", "filename_prefix"))
    bad = json.loads(json.dumps(prompt))
    bad[node_id]["inputs"][name] = "no such option"
    entry = comfy_server.wait(comfy_server.queue(bad), timeout=300)  # accepted: no HTTP 400
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == node_id
    assert name in errors[0]["exception_message"], errors[0]["exception_message"]


def test_refocus_graph_with_a_model_from_models_diffcamera(comfy_server):
    """The refocus workflow with its base switched to a (random) whole toy model in ``models/diffcamera``:
    ModelLoader -> ComfyUI's model management -> DiffCameraRefocus on the real server, bundle or not."""
    import workflow_world
    from PIL import Image

    prompt = _load("refocus_toy.json")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "DiffCamera_ModelLoader")
    prompt[loader]["inputs"]["base"] = "diffcamera/toy_standin/model.safetensors"
    entry = comfy_server.run(prompt, timeout=600)
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    (image,) = entry["outputs"][save]["images"]
    with Image.open(_io.BytesIO(comfy_server.view(image))) as im:
        assert im.size == workflow_world.SCENE_SIZE[::-1]


def test_cancel_stops_training_and_keeps_a_checkpoint(comfy_server):
    """ComfyUI's Cancel (``POST /interrupt``) during TrainRefocusLoRA ends the prompt as interrupted within
    seconds, after the training wrote a checkpoint it can resume from."""
    import glob
    import time

    prompt = _load("train_toy_lora.json")
    ds = next(k for k, v in prompt.items() if v["class_type"] == "DiffCamera_SimulateDataset")
    tr = next(k for k, v in prompt.items() if v["class_type"] == "DiffCamera_TrainRefocusLoRA")
    prompt[ds]["inputs"].update(num_scenes=2, variants=1, size=32, name="interrupt_pairs")
    prompt[tr]["inputs"].update(steps=100000, batch_size=1, checkpoint_every=0, run_name="interrupt_test")
    prompt_id = comfy_server.queue(prompt)
    log = os.path.join(comfy_server.base, "output", "diffcamera_train", "interrupt_test", "loss.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(log) and sum(1 for _ in open(log, encoding="utf-8")) >= 3):
        assert time.time() < deadline, f"training never started:\n{comfy_server.log_tail()}"
        time.sleep(0.5)
    _, stopped_after = comfy_server.cancel(prompt_id)
    assert stopped_after < 30, stopped_after
    ckpts = glob.glob(os.path.join(os.path.dirname(log), "checkpoints", "step_*", "trainable.safetensors"))
    assert ckpts, os.listdir(os.path.dirname(log))


def test_cancel_stops_a_physics_refocus_within_two_seconds(comfy_server):
    """ComfyUI's Cancel during DiffCameraRefocus (physics: the ``refocus_photo`` workflow on a 1536² photo, so the
    solve runs for tens of seconds on a CPU) ends the prompt as interrupted within 2 s."""
    import time

    import workflow_world
    from diffcamera.evaluation.scenes import make_scene

    scene = make_scene(seed=3, size=1536, kind="mixed")
    workflow_world._save_png(scene.image[0], os.path.join(comfy_server.base, "input", "cancel_photo.png"))
    prompt = _load("refocus_photo.json")
    prompt["1"]["inputs"]["image"] = "cancel_photo.png"
    assert prompt["6"]["class_type"] == "DiffCamera_Refocus"
    prompt["6"]["inputs"].update(bokeh_level=40.0, input_level=40.0)
    prompt_id = comfy_server.queue(prompt)
    time.sleep(20.0)  # loading and focus take seconds; the solve runs for much longer at this size
    interrupted, stopped_after = comfy_server.cancel(prompt_id)
    assert interrupted.get("node_id") == "6", interrupted  # inside DiffCameraRefocus, not between nodes
    assert stopped_after < 2.0, stopped_after


def test_fake_stock_nodes_match_the_real_ones(comfy_server):
    """tests/fake_comfy/stock_nodes.py (LoadImage, SaveImage, PreviewImage for tier b) has the real nodes'
    input names, order, sections and types, outputs and output-node flag."""
    import stock_nodes

    for name, cls in stock_nodes.NODE_CLASS_MAPPINGS.items():
        real = comfy_server.object_info(name)[name]
        fake = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            r = {k: ("COMBO" if isinstance(v[0], list) else v[0]) for k, v in (real["input"].get(section) or {}).items()}
            f = {k: v[0] for k, v in (fake.get(section) or {}).items()}
            assert list(r.items()) == list(f.items()), (name, section, r, f)
        assert list(cls.RETURN_TYPES) == real["output"], name
        assert bool(cls.OUTPUT_NODE) == real["output_node"], name

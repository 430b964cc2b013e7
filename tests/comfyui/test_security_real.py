"""Tier c: issue 14's matrix posted to a real ComfyUI's ``/prompt`` (the same cases as tier b's
``tests/nodes/test_security.py``).

For every crafted prompt: the server stays alive, the prompt fails with an error from our checks that names the
input (never an IndexError/RecursionError/SafetensorError traceback), and nothing outside the test's world is
read or written. A *decoy* folder outside every ComfyUI folder holds what the prompts try to reach — a valid depth
model, a valid toy refocus model, photos with depth maps, a JSON config — through absolute paths, ``..`` and
symlinks placed inside the world; each decoy would make its prompt *succeed* if it were loaded, so a policy hole
fails the prompt assertion. After the module, the decoy's files (names, sizes, mtimes) are unchanged, the folder
the prompts try to write into is empty, and no file the pack wrote into the world's output folder mentions the
decoy's path. Cancel (``POST /interrupt``) is timed for SimulateDataset at 1024 px and DiffCameraRefocus on a
2048² image. The server runs with ``DIFFCAMERA_MEMORY_LIMIT_MB=3000`` (see ``conftest.py``), so the memory rows are
refused the same way on any machine.
"""
from __future__ import annotations

import json
import math
import os
import time

import pytest

from comfy_client import PromptRejected

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENE = "diffcamera_scene.png"
SCENE_DEPTH = "diffcamera_scene_depth.png"
BIG = "diffcamera_security_2048.png"
MID = "diffcamera_security_1536.png"
HUGE = "diffcamera_security_8192.png"
OUR_ERRORS = ("InputError", "PathRefused", "NotEnoughMemory", "InsufficientMemoryError", "ValueError", "DepthModelError")
RAW_ERRORS = ("IndexError", "RecursionError", "SafetensorError", "TypeError", "KeyError", "AttributeError",
              "RuntimeError", "FileNotFoundError")


def _snapshot(folder):
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(comfy_server, tmp_path_factory):
    """The decoy outside the world, links to it inside the world; checks the file system at the end."""
    import torch
    from PIL import Image

    import workflow_world
    from tiny_depth import save_tiny_depth_anything

    base = comfy_server.base
    decoy = str(tmp_path_factory.mktemp("decoy_outside_comfyui"))
    save_tiny_depth_anything(os.path.join(decoy, "depth_model"))
    workflow_world.save_random_toy(os.path.join(decoy, "toy"))
    toy = os.path.join(decoy, "toy", "model.safetensors")
    photos = os.path.join(decoy, "photos")
    os.makedirs(photos)
    for i in range(2):
        Image.new("RGB", (48, 32), (201, 7, 99)).save(os.path.join(photos, f"p{i}.png"))
        Image.fromarray((torch.linspace(0, 255, 48).byte().view(1, 48).expand(32, 48)).numpy()).save(
            os.path.join(photos, f"p{i}_depth.png"))
    with open(os.path.join(decoy, "config.json"), "w") as f:
        json.dump({"model_kind": "toy", "size": 32, "steps": 1}, f)
    write_here = os.path.join(decoy, "write_here")
    os.makedirs(write_here)
    links = {os.path.join(base, "input", "decoy_photos"): photos,
             os.path.join(base, "models", "depth_anything", "decoy_link"): os.path.join(decoy, "depth_model"),
             os.path.join(base, "models", "loras", "decoy_link.safetensors"): toy,
             os.path.join(base, "output", "diffcamera_datasets", "decoy_out"): write_here,
             os.path.join(base, "output", "diffcamera_train", "decoy_out"): write_here}
    for link, target in links.items():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, link)
    users = os.path.join(base, "output", "diffcamera_datasets", "users_folder")
    os.makedirs(users)
    with open(os.path.join(users, "manifest.json"), "w") as f:
        f.write("the user's own notes")
    # big inputs for the Cancel and memory rows (smooth, so the PNGs stay small)
    ramp = torch.linspace(0, 1, 2048)
    img = torch.stack([ramp.view(1, -1).expand(2048, -1), ramp.view(-1, 1).expand(-1, 2048),
                       (ramp.view(1, -1) * ramp.view(-1, 1))], -1)
    Image.fromarray((img * 255).round().byte().numpy()).save(os.path.join(base, "input", BIG))
    Image.fromarray((img[:1536, :1536] * 255).round().byte().numpy()).save(os.path.join(base, "input", MID))
    Image.new("RGB", (8192, 8192), (90, 120, 150)).save(os.path.join(base, "input", HUGE))
    before = _snapshot(decoy)
    info = {"base": base, "decoy": decoy, "toy": toy, "photos": photos, "write_here": write_here,
            "depth_model": os.path.join(decoy, "depth_model"), "config": os.path.join(decoy, "config.json")}
    yield info
    for link in links:
        os.remove(link)
    assert comfy_server.ready(), "the server died"
    assert os.listdir(write_here) == [], f"written outside ComfyUI's folders: {os.listdir(write_here)}"
    assert _snapshot(decoy) == before, "the decoy outside ComfyUI's folders changed"
    with open(os.path.join(users, "manifest.json")) as f:
        assert f.read() == "the user's own notes"
    for sub in ("diffcamera_datasets", "diffcamera_train"):
        for dirpath, _, files in os.walk(os.path.join(base, "output", sub)):
            for name in files:
                if name.endswith((".json", ".jsonl")):
                    with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as f:
                        assert decoy not in f.read(), f"{name} refers to the decoy: it was read"


def _error(comfy_server, prompt, node_id, *needles, timeout=600):
    """Queue ``prompt``: it must fail in node ``node_id`` with one of our errors containing every needle."""
    entry = comfy_server.wait(comfy_server.queue(prompt), timeout=timeout)
    status = entry["status"]
    errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
    assert status.get("status_str") == "error" and errors, f"the prompt did not fail: {json.dumps(status)[:2000]}"
    err = errors[0]
    assert err["node_id"] == node_id, err
    assert err["exception_type"].endswith(OUR_ERRORS) and not err["exception_type"].endswith(RAW_ERRORS), err
    for needle in needles:
        assert needle in err["exception_message"], (needle, err["exception_message"])
    assert comfy_server.ready()
    return err["exception_message"]


def _depth(loader=None, estimate=None, image=SCENE):
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
         "2": {"class_type": "DiffCamera_DepthModelLoader",
               "inputs": {"model_name": "Depth-Anything-V2-Small-hf", "path": "", "dtype": "auto", "device": "auto"}},
         "3": {"class_type": "DiffCamera_DepthEstimate",
               "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "process_res": 518, "batch_size": 4}},
         "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}
    p["2"]["inputs"].update(loader or {})
    p["3"]["inputs"].update(estimate or {})
    return p


def _refocus(loader=None, refocus=None, focus=None, image=SCENE, depth_image=SCENE_DEPTH):
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
         "2": {"class_type": "LoadImage", "inputs": {"image": depth_image}},
         "3": {"class_type": "DiffCamera_DepthFromImage",
               "inputs": {"convention": "disparity (near bright)", "depth_image": ["2", 0], "image": ["1", 0],
                          "normalise": True, "near": 0.0, "far": 0.0}},
         "4": {"class_type": "DiffCamera_FocusPicker",
               "inputs": {"image": ["1", 0], "depth": ["3", 0], "focus_point": '{"x": 0.3, "y": 0.6}',
                          "bokeh_level": 20.0, "window": 0, "focus_disparity_override": -1.0}},
         "5": {"class_type": "DiffCamera_ModelLoader",
               "inputs": {"base": "toy (bundled)", "vae": "auto (from the base folder)", "lora": "none",
                          "family": "auto", "dtype": "auto", "weight_storage": "default", "offload": "none"}},
         "6": {"class_type": "DiffCamera_Refocus",
               "inputs": {"diffcamera_model": ["5", 0], "image": ["1", 0], "depth": ["3", 0], "focus": ["4", 0],
                          "bokeh_level": 20.0, "steps": 2, "seed": 0, "guidance": 2.5, "denoise": 1.0,
                          "tiling": "auto", "tile_size": 0}},
         "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}
    p["4"]["inputs"].update(focus or {})
    p["5"]["inputs"].update(loader or {})
    p["6"]["inputs"].update(refocus or {})
    return p


def _simulate(**inputs):
    sim = {"source": "procedural", "num_scenes": 1, "variants": 1, "size": 32, "level_min": 8.0, "level_max": 16.0,
           "seed": 0, "name": "security_pairs", "image_folder": "", "min_sharpness": 0.0}
    sim.update(inputs)
    return {"1": {"class_type": "DiffCamera_SimulateDataset", "inputs": sim},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}


def _train(sim=None, **inputs):
    p = _simulate(**(sim or {}))
    tr = {"dataset": ["1", 0], "config": "toy", "steps": 1, "batch_size": 1, "learning_rate": 0.001,
          "lambda_stack": 1.0, "depth_dropout": 0.0, "seed": 0, "run_name": "security_run", "checkpoint_every": 0,
          "base_path": "", "vae_path": ""}
    tr.update(inputs)
    p["2"] = {"class_type": "DiffCamera_TrainRefocusLoRA", "inputs": tr}
    p["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}}
    return p


def _bokeh(image=SCENE, **inputs):
    b = {"image": ["1", 0], "bokeh_level": 20.0, "mode": "layered", "depth_image": ["2", 0],
         "convention": "disparity (near bright)", "focus_disparity": 0.5, "focus_range": 0.0, "blades": 0,
         "blade_rotation": 0.0, "blade_curvature": 0.0, "highlight_threshold": 0.9, "highlight_gain": 0.0,
         "catseye": 0.0, "chromatic_aberration": 0.0, "gamma": 4.0, "temporal_smoothing": 0}
    b.update(inputs)
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "LoadImage", "inputs": {"image": image if image != SCENE else SCENE_DEPTH}},
            "3": {"class_type": "DiffCamera_BokehSimulate", "inputs": b},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


# ------------------------------------------------------------------------- models read from anywhere
def test_depth_model_paths(comfy_server, world):
    for name in ("../../x", world["depth_model"]):
        _error(comfy_server, _depth({"model_name": name}), "2", "model_name", "is not one of the choices")
    _error(comfy_server, _depth({"model_name": "decoy_link"}), "2", "model_name", "link that leads outside")
    a = _error(comfy_server, _depth({"path": world["depth_model"]}), "2", "path", "is outside",
               "DIFFCAMERA_ALLOW_EXTERNAL_MODELS=1")
    b = _error(comfy_server, _depth({"path": world["depth_model"] + "_missing"}), "2", "path", "is outside")
    assert a.replace(world["depth_model"], "P") == b.replace(world["depth_model"] + "_missing", "P")
    _error(comfy_server, _depth({"path": "../../" + os.path.basename(world["decoy"])}), "2", "path", "'..'")


def test_refocus_model_paths(comfy_server, world):
    for base in ("diffcamera//" + world["toy"], "diffcamera/../../x", world["toy"]):
        _error(comfy_server, _refocus({"base": base}), "5", "base", "is not one of the choices")
    _error(comfy_server, _refocus({"lora": "loras/decoy_link.safetensors"}), "5", "lora", "link that leads outside")


def test_training_config_and_paths(comfy_server, world):
    for config in (world["config"], "../../config", "/etc/passwd"):
        _error(comfy_server, _train(config=config), "2", "config", "is not one of the choices")
    _error(comfy_server, _train(config="flux_kontext_lora", base_path=world["toy"]), "2", "base_path", "is outside")
    _error(comfy_server, _train(config="flux_kontext_lora", base_path="../../x"), "2", "base_path", "'..'")


# ------------------------------------------------------------------------- images read, writes, overwrites
def test_image_folder_and_names(comfy_server, world):
    _error(comfy_server, _simulate(source="image_folder", image_folder=world["photos"]), "1", "image_folder",
           "is outside", "DIFFCAMERA_ALLOW_EXTERNAL_IMAGE_FOLDERS=1")
    _error(comfy_server, _simulate(source="image_folder", image_folder="decoy_photos"), "1", "image_folder",
           "link that leads outside")
    _error(comfy_server, _simulate(source="image_folder", image_folder="../../x"), "1", "image_folder", "'..'")
    _error(comfy_server, _simulate(name="decoy_out"), "1", "name", "link that leads outside")
    _error(comfy_server, _train(run_name="decoy_out"), "2", "run_name", "link that leads outside")
    _error(comfy_server, _simulate(name="users_folder"), "1", "name: ", "users_folder", "nothing was overwritten")
    for name in ("a\x00b", "x" * 300, "../up"):
        _error(comfy_server, _simulate(name=name), "1", "name")


def test_a_dict_is_not_a_dataset(comfy_server, world):
    p = _train()
    p["2"]["inputs"]["dataset"] = {"folder": world["photos"], "size": 32, "groups": 2}
    _error(comfy_server, {"2": p["2"], "3": p["3"]}, "2", "dataset", "expected a DIFFCAMERA_DATASET")


# ------------------------------------------------------------------------- dropdowns, NaN, raw errors
def test_unknown_dropdown_values(comfy_server, world):
    _error(comfy_server, _refocus(refocus={"tiling": "foo"}), "6", "tiling", "'foo' is not one of the choices")
    _error(comfy_server, _depth({"dtype": "float64"}), "2", "dtype", "'float64'")
    _error(comfy_server, _depth({"device": "cuda:0"}), "2", "device", "'cuda:0'")
    _error(comfy_server, _refocus({"vae": "vae/ae.safetensors"}), "5", "vae", "not one of the choices")
    _error(comfy_server, _simulate(source="C"), "1", "source", "'C' is not one of the choices")


def test_nan_is_refused(comfy_server, world):
    nan = math.nan
    _error(comfy_server, _refocus(refocus={"bokeh_level": nan}), "6", "bokeh_level", "finite")
    _error(comfy_server, _refocus(focus={"bokeh_level": nan}), "4", "bokeh_level", "finite")
    _error(comfy_server, _refocus(focus={"focus_disparity_override": nan}), "4", "focus_disparity_override")
    _error(comfy_server, _bokeh(blade_rotation=nan), "3", "blade_rotation", "finite")
    _error(comfy_server, _train(lambda_stack=nan), "2", "lambda_stack", "finite")


def test_raw_errors_are_named(comfy_server, world):
    p = _refocus()
    p["8"] = {"class_type": "CropMask", "inputs": {"mask": ["2", 1], "x": 0, "y": 16384, "width": 8, "height": 8}}
    p["9"] = {"class_type": "DiffCamera_DepthFromImage",
              "inputs": {"convention": "disparity (near bright)", "depth_mask": ["8", 0], "normalise": True,
                         "near": 0.0, "far": 0.0}}
    p["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 1]}}
    _error(comfy_server, {k: p[k] for k in ("2", "8", "9", "10")}, "9", "depth_mask", "empty")
    _error(comfy_server, _refocus(refocus={"conditioning": "a cat"}), "6", "conditioning", "expected CONDITIONING")
    deep = "[" * 100000 + "]" * 100000
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(_refocus(focus={"focus_point": deep}))
    body = json.dumps(rejected.value.body)
    assert rejected.value.status == 400 and "focus_point" in body and "RecursionError" not in body
    assert comfy_server.ready()


# ------------------------------------------------------------------------- memory refused up front
def test_memory_refused_before_work(comfy_server, world):
    _error(comfy_server, _bokeh(image=HUGE), "3", "BokehSimulate (1 frame(s) 8192x8192", "use a smaller image")
    p = _depth(estimate={"process_res": 4102, "batch_size": 4})
    p["5"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 4}}
    p["3"]["inputs"]["image"] = ["5", 0]
    _error(comfy_server, p, "3", "process_res 4102", "lower process_res or batch_size")
    _error(comfy_server, _simulate(size=2048, num_scenes=160, variants=4, name="security_big"), "1",
           "SimulateRefocusDataset at size 2048", "lower size")
    _error(comfy_server, _train(sim={"size": 512, "name": "security_512"}, batch_size=32), "2",
           "training the toy model at 512 px, batch 32", "To fit, set")
    _error(comfy_server, _refocus(image=BIG, depth_image=BIG), "6",
           "DiffCameraRefocus (physics) on 1 image(s) of 2048×2048", "smaller image")
    assert not os.path.exists(os.path.join(world["base"], "output", "diffcamera_train", "security_run"))


# ------------------------------------------------------------------------- Cancel within 2 s
def _interrupt_and_time(comfy_server, prompt, node_type, wait_s):
    prompt_id = comfy_server.queue(prompt)
    deadline = time.time() + 300
    while not comfy_server.get("/queue").get("queue_running"):
        assert time.time() < deadline, "the prompt never started"
        time.sleep(0.1)
    time.sleep(wait_s)  # now inside the long node (upstream nodes are cached or fast)
    interrupted, stopped_after = comfy_server.cancel(prompt_id)
    assert interrupted["node_type"] == node_type, interrupted
    assert comfy_server.ready()
    return stopped_after


def test_cancel_simulation_within_seconds(comfy_server, world):
    took = _interrupt_and_time(comfy_server, _simulate(size=1024, level_min=1024.0, level_max=1024.0,
                                                       name="security_cancel"),
                               "DiffCamera_SimulateDataset", 3.0)
    print(f"SimulateDataset stopped {took:.2f} s after /interrupt (load {os.getloadavg()[0]:.1f})")
    assert took < 6.0, f"SimulateDataset took {took:.1f} s to stop"  # 2 s target, margin for a loaded machine


def test_cancel_refocus_within_seconds(comfy_server, world):
    # 1536²: a 2048² physics solve needs more than the server's 3000 MiB limit (refused: the memory test)
    warm = _refocus(image=MID, depth_image=MID)
    warm = {k: warm[k] for k in ("1", "2", "3", "4")}  # FocusPicker is an output node: upstream gets cached
    comfy_server.run(warm, timeout=300)
    prompt = _refocus(image=MID, depth_image=MID, refocus={"steps": 50})
    took = _interrupt_and_time(comfy_server, prompt, "DiffCamera_Refocus", 4.0)
    print(f"DiffCameraRefocus stopped {took:.2f} s after /interrupt (load {os.getloadavg()[0]:.1f})")
    assert took < 6.0, f"DiffCameraRefocus took {took:.1f} s to stop"

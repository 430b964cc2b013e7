"""Issue 14's matrix in tier b (the fake ComfyUI): every node input is untrusted.

Each test names the row of the issue's table it closes. A *decoy* folder outside every ComfyUI folder holds
things a crafted prompt would like to read (a valid depth model, a valid toy refocus model, photos with depth
maps) and an empty folder it would like to write into: a test fails if a decoy is loaded (the node would then
succeed) or anything appears in the write decoy. The same cases run against a real ComfyUI in
``tests/comfyui/test_security_real.py``.
"""
import json
import math
import os

import pytest
import torch

import comfy.model_management as mm
from tiny_depth import save_tiny_depth_anything
from tiny_dit import save_toy_model

from diffcamera import comfy_fallback, runtime as rt
from diffcamera.core import safe_paths
from diffcamera.core.values import DepthMap, Focus, SimulatedDataset
from diffcamera.nodes import all_nodes
from diffcamera.nodes import bokeh as NB
from diffcamera.nodes import depth as ND
from diffcamera.nodes import focus as NF
from diffcamera.nodes import refocus as NR
from diffcamera.nodes import training as NT
from diffcamera.nodes.validation import InputError, NotEnoughMemory, check_node_inputs

ALL = all_nodes()
TINY_TOY = {"model_kind": "toy", "size": 32, "lr": 0.001, "warmup_steps": 1, "batch_size": 1,
            "model": {"transformer": {"patch_size": 1, "in_channels": 192, "num_layers": 1, "num_single_layers": 1,
                                      "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 16,
                                      "pooled_projection_dim": 16, "guidance_embeds": False,
                                      "axes_dims_rope": [4, 6, 6]}, "camera_hidden": 16}}


def _png(path, tensor):
    from PIL import Image
    arr = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def _photos(folder, n=2, size=32):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        _png(os.path.join(folder, f"p{i}.png"), torch.rand(3, size, size))
        _png(os.path.join(folder, f"p{i}_depth.png"), torch.linspace(0, 1, size).view(1, 1, size).expand(1, size, size))


@pytest.fixture
def world(comfy_models_dir, tmp_path_factory):
    """ComfyUI's folders (fake) + a decoy folder outside them; yields a dict of paths."""
    base = comfy_models_dir.parent
    decoy = tmp_path_factory.mktemp("decoy")
    save_tiny_depth_anything(decoy / "depth_model")
    save_toy_model(str(decoy / "toy.safetensors"))
    _photos(str(decoy / "photos"))
    (decoy / "config.json").write_text(json.dumps(TINY_TOY))
    (decoy / "write_here").mkdir()
    for sub in ("input", "output"):
        (base / sub).mkdir(exist_ok=True)
    (comfy_models_dir / "depth_anything").mkdir(parents=True, exist_ok=True)
    yield {"base": base, "models": comfy_models_dir, "input": base / "input", "output": base / "output",
           "decoy": decoy}
    assert os.listdir(decoy / "write_here") == [], "something was written outside ComfyUI's folders"


def _msg(exc_info):
    return str(exc_info.value)


@pytest.fixture
def toy_handle(world):
    save_toy_model(str(world["models"] / "diffcamera" / "toy_test.safetensors"))
    return NR.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]


# ------------------------------------------------------------------------- models read from anywhere
@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "Depth-Anything-V2-Small-hf/../../../x"])
def test_depth_loader_model_name_only_among_its_choices(world, name):
    with pytest.raises(InputError, match=r"^model_name: .* is not one of the choices \("):
        ND.DepthModelLoader.execute(model_name=name)


def test_depth_loader_path_stays_in_the_model_folders(world, monkeypatch):
    monkeypatch.delenv(safe_paths.ALLOW_EXTERNAL_MODELS, raising=False)
    decoy = world["decoy"]
    good = save_tiny_depth_anything(world["models"] / "depth_anything" / "Mine")
    os.symlink(decoy / "depth_model", world["models"] / "depth_anything" / "linked")
    none = ND.NONE_FOUND if ND._model_choices() == [ND.NONE_FOUND] else ND._model_choices()[0]
    # inside: by name and by full path
    assert ND.DepthModelLoader.execute(model_name=none, path="Mine").result[0].model is not None
    assert ND.DepthModelLoader.execute(model_name=none, path=str(good)).result[0].model is not None

    def refused(path, match):
        with pytest.raises(safe_paths.PathRefused, match=match) as err:
            ND.DepthModelLoader.execute(model_name=none, path=path)
        return _msg(err).replace(path, "P")

    hint = safe_paths.ALLOW_EXTERNAL_MODELS + "=1"
    a = refused(str(decoy / "depth_model"), "^path: .* is outside .*" + hint)
    b = refused(str(decoy / "no_such_model"), "^path: .* is outside")
    assert a == b  # the message does not tell whether the folder exists
    refused("../../" + decoy.name, "^path: .*'\\.\\.'")
    refused("linked", "^path: 'linked' is a link that leads outside")
    # a listed folder that is a link out is refused too
    assert "linked" in ND._model_choices()
    with pytest.raises(safe_paths.PathRefused, match="^model_name: 'linked' is a link that leads outside"):
        ND.DepthModelLoader.execute(model_name="linked")
    # the opt-in lets a local user load from anywhere
    monkeypatch.setenv(safe_paths.ALLOW_EXTERNAL_MODELS, "1")
    assert ND.DepthModelLoader.execute(model_name=none, path=str(decoy / "depth_model")).result[0].model is not None
    assert ND.DepthModelLoader.execute(model_name="linked").result[0].model is not None


def test_depth_model_folder_with_a_weight_file_linked_out_is_refused(world):
    folder = save_tiny_depth_anything(world["models"] / "depth_anything" / "Half")
    os.remove(os.path.join(folder, "model.safetensors"))
    os.symlink(world["decoy"] / "depth_model" / "model.safetensors", os.path.join(folder, "model.safetensors"))
    with pytest.raises(safe_paths.PathRefused, match="^model_name: 'model.safetensors' in the model folder is a link"):
        ND.DepthModelLoader.execute(model_name="Half")


def test_model_loader_accepts_only_its_choices_resolved_inside(world, monkeypatch):
    from diffcamera.core.dit import loading
    decoy = world["decoy"]
    (world["models"] / "diffcamera").mkdir(exist_ok=True)
    (world["models"] / "loras").mkdir(exist_ok=True)
    os.symlink(decoy / "toy.safetensors", world["models"] / "diffcamera" / "evil.safetensors")
    os.symlink(decoy / "toy.safetensors", world["models"] / "loras" / "evil.safetensors")
    for base in ("diffcamera//" + str(decoy / "toy.safetensors"), "diffcamera/../../x", str(decoy / "toy.safetensors"),
                 "diffusion_models/../../" + decoy.name + "/toy.safetensors"):
        with pytest.raises(InputError, match="^base: .* is not one of the choices"):
            NR.ModelLoader.execute(base)
    opened = []
    real = loading.is_diffcamera_model
    monkeypatch.setattr(loading, "is_diffcamera_model", lambda p: opened.append(os.path.realpath(p)) or real(p))
    schema = NR.ModelLoader.INPUT_TYPES()["required"]
    assert os.path.realpath(decoy / "toy.safetensors") not in opened  # listing never opens a file outside
    loras = schema["lora"][1]["options"]
    assert "diffcamera/evil.safetensors" in loras and "loras/evil.safetensors" in loras
    for lora in ("diffcamera/evil.safetensors", "loras/evil.safetensors"):
        with pytest.raises(safe_paths.PathRefused, match="^lora: 'evil.safetensors' is a link that leads outside"):
            NR.ModelLoader.execute(NR.TOY, lora=lora)


def test_unknown_dropdown_values_named(world, toy_handle):
    """Row 'unknown dropdown values': refused naming the input and listing the choices."""
    with pytest.raises(InputError, match=r"^dtype: 'float64' is not one of the choices \('auto', 'float32'"):
        ND.DepthModelLoader.execute(model_name=ND._model_choices()[0], dtype="float64")
    with pytest.raises(InputError, match=r"^device: 'cuda:0' is not one of the choices \('auto', 'cpu'\)"):
        ND.DepthModelLoader.execute(model_name=ND._model_choices()[0], device="cuda:0")
    with pytest.raises(InputError, match=r"^vae: 'vae/ae.safetensors' is not one of the choices"):
        NR.ModelLoader.execute(NR.TOY, vae="vae/ae.safetensors")
    with pytest.raises(InputError, match=r"^source: 'C' is not one of the choices \('procedural', 'image_folder'\)"):
        NT.SimulateDataset.execute(source="C", num_scenes=1, variants=1, size=32, level_min=1.0, level_max=2.0,
                                   seed=0, name="x")
    with pytest.raises(InputError, match="^tiling: 'foo' is not one of the choices"):
        NR.Refocus.execute(toy_handle, _img(), _depth(), _focus(), tiling="foo")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.define_schema().node_id)
def test_every_combo_every_float_every_string_is_checked(cls, world):
    """The one checker on every node's own schema: unknown COMBO values, NaN/inf FLOATs, non-integral INTs,
    NUL characters and over-long STRINGs are refused, naming the input."""
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    kinds = {t for t, _ in inputs.values()}
    assert kinds & {"COMBO", "FLOAT", "STRING", "INT"}, "a node without widgets?"
    for name, (io_type, info) in inputs.items():
        bad = {"COMBO": ["no such option", 3, None if name in spec["required"] else "x\x00"],
               "FLOAT": [math.nan, math.inf, -math.inf, "1.0", True],
               "INT": [1.5, "3", True, math.nan],
               "STRING": ["a\x00b", "x" * 20000, 5],
               "BOOLEAN": [1, "true"]}.get(io_type, [])
        if io_type == "FLOAT" and "max" in info:
            bad.append(info["max"] * 2 + 1)
        for value in bad:
            if value is None:
                continue
            with pytest.raises(InputError, match=f"^{name}: "):
                check_node_inputs(cls, {name: value})


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.define_schema().node_id)
def test_custom_types_are_checked_for_their_real_type(cls, world):
    spec = cls.INPUT_TYPES()
    for name, (io_type, _) in {**spec["required"], **spec.get("optional", {})}.items():
        if io_type in ("DEPTH", "FOCUS", "DIFFCAMERA_DATASET", "DEPTH_MODEL", "DIFFCAMERA_MODEL", "MODEL", "IMAGE",
                       "MASK", "CONDITIONING"):
            for value in ({"folder": "/etc", "size": 64, "groups": 1}, "a string", [1, 2], 3.0):
                with pytest.raises(InputError, match=f"^{name}: (expected |entry 0 is not)"):
                    check_node_inputs(cls, {name: value})


# ------------------------------------------------------------------------- NaN and raw errors
def _img(h=16, w=16):
    return torch.rand(1, h, w, 3)


def _depth(h=16, w=16):
    return DepthMap(torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w).contiguous(), "test")


def _focus():
    return Focus(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.4]), ["point"])


def test_nan_is_refused_where_it_used_to_slip_through(world, toy_handle):
    with pytest.raises(InputError, match="^blade_rotation: must be a finite number between -360 and 360, got nan"):
        NB.BokehSimulate.execute(_img(), depth=_depth(), blade_rotation=math.nan)
    with pytest.raises(InputError, match="^bokeh_level: must be a finite number"):
        NF.FocusPicker.execute(_img(), _depth(), bokeh_level=math.nan)
    with pytest.raises(InputError, match="^focus_disparity_override: must be a finite number"):
        NF.FocusPicker.execute(_img(), _depth(), focus_disparity_override=math.nan)
    with pytest.raises(InputError, match="^bokeh_level: must be a finite number"):
        NR.Refocus.execute(toy_handle, _img(), _depth(), _focus(), bokeh_level=math.nan)
    with pytest.raises(InputError, match="^lambda_stack: must be a finite number"):
        NT.TrainRefocusLoRA.execute(SimulatedDataset("x", 32, 1), "toy", 1, 1, 1e-3, math.nan, 0.0, 0, "r", 0)


def test_raw_errors_are_now_named(world, toy_handle):
    with pytest.raises(InputError, match=r"^depth_mask: the mask is empty \(shape \(1, 0, 0\)\)"):
        ND.DepthFromImage.execute(depth_mask=torch.zeros(1, 0, 0))
    with pytest.raises(InputError, match="^image: the image is empty"):
        NB.BokehSimulate.execute(torch.zeros(1, 0, 8, 3), depth=_depth())
    with pytest.raises(InputError, match="^conditioning: expected CONDITIONING"):
        NR.Refocus.execute(toy_handle, _img(), _depth(), _focus(), conditioning="a cat")
    with pytest.raises(InputError, match="^conditioning: entry 0 is not"):
        NR.Refocus.execute(toy_handle, _img(), _depth(), _focus(), conditioning=[["a", {}]])
    with pytest.raises(InputError, match="^diffcamera_model: expected a DIFFCAMERA_MODEL"):
        NR.Refocus.execute({"model": 1}, _img(), _depth(), _focus())
    with pytest.raises(InputError, match="^depth: expected a DEPTH"):
        NF.FocusPicker.execute(_img(), {"disparity": [[0.5]]})
    with pytest.raises(InputError, match="^image: the image contains NaN"):
        NB.BokehSimulate.execute(torch.full((1, 4, 4, 3), math.nan), depth=_depth(4, 4))
    for name in ("a\x00b", "x" * 300, "../up", "a/b"):
        with pytest.raises(ValueError, match="^name: "):
            NT.SimulateDataset.execute("procedural", 1, 1, 32, 1.0, 2.0, 0, name)


def test_deeply_nested_focus_json_is_a_clear_error(world):
    deep = "[" * 100000 + "]" * 100000
    msg = NF.FocusPicker.validate_inputs(focus_point=deep)
    assert isinstance(msg, str) and msg.startswith("focus_point: ")
    nested = "[" * 50 + "]" * 50  # short enough for the STRING limit: the nesting bound answers
    assert "nested more than" in NF.FocusPicker.validate_inputs(focus_point=nested)
    with pytest.raises(ValueError, match="^focus_point: .*too long"):
        NF.FocusPicker.execute(_img(), _depth(), focus_point=deep)
    with pytest.raises(ValueError, match="^focus_point: lists/objects nested more than"):
        NF.FocusPicker.execute(_img(), _depth(), focus_point=nested)


# ------------------------------------------------------------------------- images read from anywhere
def _simulate(**kw):
    args = dict(source="image_folder", num_scenes=1, variants=1, size=32, level_min=8.0, level_max=16.0, seed=0,
                name="pairs", image_folder="")
    args.update(kw)
    return NT.SimulateDataset.execute(**args)


def test_image_folder_only_inside_input(world, monkeypatch):
    monkeypatch.delenv(safe_paths.ALLOW_EXTERNAL_IMAGE_FOLDERS, raising=False)
    decoy = world["decoy"]
    hint = safe_paths.ALLOW_EXTERNAL_IMAGE_FOLDERS + "=1"
    with pytest.raises(safe_paths.PathRefused, match="^image_folder: .* is outside .*input.*" + hint):
        _simulate(image_folder=str(decoy / "photos"))
    with pytest.raises(safe_paths.PathRefused, match="^image_folder: .*'\\.\\.'"):
        _simulate(image_folder="../../" + decoy.name + "/photos")
    os.symlink(decoy / "photos", world["input"] / "linked")
    with pytest.raises(safe_paths.PathRefused, match="^image_folder: 'linked' is a link that leads outside"):
        _simulate(image_folder="linked")
    assert not (world["output"] / "diffcamera_datasets").exists()  # refused before any folder was made
    _photos(str(world["input"] / "photos"))
    ds = _simulate(image_folder="photos").result[0]
    assert isinstance(ds, SimulatedDataset) and ds.groups == 2
    monkeypatch.setenv(safe_paths.ALLOW_EXTERNAL_IMAGE_FOLDERS, "1")
    assert _simulate(image_folder=str(decoy / "photos"), name="external").result[0].groups == 2


def test_linked_files_inside_the_image_folder_are_not_read(world):
    folder = world["input"] / "photos"
    _photos(str(folder), n=1)
    os.symlink(world["decoy"] / "photos" / "p0.png", folder / "stolen.png")
    out = _simulate(image_folder="photos")
    ds, summary = out.result
    assert ds.groups == 1 and "link leading outside" in summary
    meta = json.loads((world["output"] / "diffcamera_datasets" / "pairs" / "shard_00000.json").read_text())
    assert {os.path.basename(g["source"]) for g in meta["groups"]} == {"p0.png"}


def test_a_depth_map_linked_out_is_not_read(world):
    folder = world["input"] / "photos"
    folder.mkdir()
    _png(str(folder / "q.png"), torch.rand(3, 16, 16))
    os.symlink(world["decoy"] / "photos" / "p1_depth.png", folder / "q_depth.png")
    with pytest.raises(ValueError, match=r"1 image\(s\) have no depth map beside them \(q.png\)"):
        _simulate(image_folder="photos")


def test_missing_depth_error_lists_names_inside_the_folder_only(world):
    folder = world["input"] / "photos"
    folder.mkdir()
    _png(str(folder / "a.png"), torch.rand(3, 16, 16))
    with pytest.raises(ValueError) as err:
        _simulate(image_folder="photos")
    assert "a.png" in _msg(err) and str(world["input"]) not in _msg(err)


# ------------------------------------------------------------------------- writes outside output/
def test_dataset_name_and_run_name_links_are_refused(world, monkeypatch):
    from diffcamera.training import config as cfg_mod
    out = world["output"]
    (out / "diffcamera_datasets").mkdir(parents=True)
    (out / "diffcamera_train").mkdir(parents=True)
    os.symlink(world["decoy"] / "write_here", out / "diffcamera_datasets" / "evil")
    os.symlink(world["decoy"] / "write_here", out / "diffcamera_train" / "evil")
    with pytest.raises(safe_paths.PathRefused, match="^name: 'diffcamera_datasets/evil' is a link that leads outside"):
        NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "evil")
    ds = NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "fine").result[0]
    d = world["base"] / "configs"
    d.mkdir()
    (d / "tiny.json").write_text(json.dumps(TINY_TOY))
    monkeypatch.setattr(cfg_mod, "CONFIG_DIR", str(d))
    with pytest.raises(safe_paths.PathRefused, match="^run_name: 'diffcamera_train/evil' is a link that leads outside"):
        NT.TrainRefocusLoRA.execute(ds, "tiny", 1, 1, 1e-3, 1.0, 0.0, 0, "evil", 0)


# ------------------------------------------------------------------------- a user's files overwritten
def test_foreign_dataset_and_run_folders_are_never_overwritten(world, monkeypatch):
    from diffcamera.training import config as cfg_mod
    out = world["output"]
    mine = out / "diffcamera_datasets" / "mine"
    mine.mkdir(parents=True)
    (mine / "manifest.json").write_text("my own notes")
    with pytest.raises(ValueError, match="^name: .*not a dataset made by the simulator; nothing was overwritten"):
        NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "mine")
    assert (mine / "manifest.json").read_text() == "my own notes" and os.listdir(mine) == ["manifest.json"]
    NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "ds")
    with pytest.raises(ValueError, match="^name: .*other arguments"):
        NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 1, "ds")  # another seed
    ds = NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "ds").result[0]  # same: resumes
    d = world["base"] / "configs"
    d.mkdir()
    (d / "tiny.json").write_text(json.dumps(TINY_TOY))
    monkeypatch.setattr(cfg_mod, "CONFIG_DIR", str(d))
    run = out / "diffcamera_train" / "myrun"
    run.mkdir(parents=True)
    (run / "refocus_model.safetensors").write_bytes(b"the user's model")
    with pytest.raises(ValueError, match="^run_name: .*not a training run with this config; nothing was overwritten"):
        NT.TrainRefocusLoRA.execute(ds, "tiny", 1, 1, 1e-3, 1.0, 0.0, 0, "myrun", 0)
    assert os.listdir(run) == ["refocus_model.safetensors"]
    assert (run / "refocus_model.safetensors").read_bytes() == b"the user's model"
    first = NT.TrainRefocusLoRA.execute(ds, "tiny", 1, 1, 1e-3, 1.0, 0.0, 0, "r", 0).result[0]
    before = (out / "diffcamera_train" / "r" / "config.json").read_text()
    with pytest.raises(ValueError, match="^run_name: .*another config .*lr"):
        NT.TrainRefocusLoRA.execute(ds, "tiny", 1, 1, 5e-3, 1.0, 0.0, 0, "r", 0)
    assert (out / "diffcamera_train" / "r" / "config.json").read_text() == before
    # the published copy never replaces a file in models/diffcamera
    (world["models"] / "diffcamera" / "r_2.json").write_text("user's")
    again = NT.TrainRefocusLoRA.execute(ds, "tiny", 2, 1, 1e-3, 1.0, 0.0, 0, "r", 0).result[0]
    assert os.path.basename(again) == "r_3.safetensors" and os.path.isfile(first)
    assert (world["models"] / "diffcamera" / "r_2.json").read_text() == "user's"


def test_a_dict_is_not_a_dataset(world):
    with pytest.raises(InputError, match="^dataset: expected a DIFFCAMERA_DATASET"):
        NT.TrainRefocusLoRA.execute({"folder": str(world["decoy"]), "size": 32, "groups": 1}, "toy", 1, 1, 1e-3,
                                    1.0, 0.0, 0, "r", 0)
    (world["decoy"] / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="^dataset: not a finished dataset in output/diffcamera_datasets"):
        NT.TrainRefocusLoRA.execute(SimulatedDataset(str(world["decoy"]), 32, 1), "toy", 1, 1, 1e-3, 1.0, 0.0, 0,
                                    "r", 0)
    os.remove(world["decoy"] / "manifest.json")


def test_training_config_and_model_paths(world, monkeypatch):
    from diffcamera.training import config as cfg_mod
    monkeypatch.delenv(safe_paths.ALLOW_EXTERNAL_MODELS, raising=False)
    ds = NT.SimulateDataset.execute("procedural", 1, 1, 32, 8.0, 16.0, 0, "ds").result[0]
    for config in (str(world["decoy"] / "config.json"), "../../config", "/etc/passwd"):
        with pytest.raises(InputError, match="^config: .* is not one of the choices"):
            NT.TrainRefocusLoRA.execute(ds, config, 1, 1, 1e-3, 1.0, 0.0, 0, "r", 0)
    d = world["base"] / "configs"
    d.mkdir()
    (d / "flux.json").write_text(json.dumps({"model_kind": "flux", "size": 32}))
    (d / "init.json").write_text(json.dumps(dict(TINY_TOY, init_lora=str(world["decoy"] / "toy.safetensors"))))
    monkeypatch.setattr(cfg_mod, "CONFIG_DIR", str(d))
    with pytest.raises(safe_paths.PathRefused, match="^base_path: .* is outside .*models/diffusion_models"):
        NT.TrainRefocusLoRA.execute(ds, "flux", 1, 1, 1e-3, 1.0, 0.0, 0, "r", 0,
                                    base_path=str(world["decoy"] / "toy.safetensors"))
    with pytest.raises(safe_paths.PathRefused, match="^vae_path: .*'\\.\\.'"):
        NT.TrainRefocusLoRA.execute(ds, "flux", 1, 1, 1e-3, 1.0, 0.0, 0, "r", 0, vae_path="../x")
    with pytest.raises(safe_paths.PathRefused, match="^config init: init_lora: .* is outside"):
        NT.TrainRefocusLoRA.execute(ds, "init", 1, 1, 1e-3, 1.0, 0.0, 0, "r", 0)
    assert not (world["output"] / "diffcamera_train" / "r").exists()


# ------------------------------------------------------------------------- Cancel inside long loops
def test_simulation_cancel_acts_inside_a_render(world, monkeypatch):
    """Cancel is checked inside a group's renders (the renderer's callback), not only per shard."""
    from diffcamera.core import bokeh
    state = {"in_render": 0, "inside_checks": 0}
    real_render = bokeh.render_bokeh

    def render(*a, **k):
        state["in_render"] += 1
        try:
            return real_render(*a, **k)
        finally:
            state["in_render"] -= 1

    def check():
        if state["in_render"]:
            state["inside_checks"] += 1
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(bokeh, "render_bokeh", render)
    monkeypatch.setattr(rt, "check_interrupt", check)
    with pytest.raises(mm.InterruptProcessingException):
        NT.SimulateDataset.execute("procedural", 2, 2, 32, 64.0, 128.0, 0, "cancelled")
    assert state["inside_checks"] == 1
    assert not [f for f in os.listdir(world["output"] / "diffcamera_datasets" / "cancelled") if f.startswith("shard")]


def test_refocus_cancel_acts_inside_one_model_call(world, toy_handle, monkeypatch):
    """One huge tile (tiling off): Cancel is checked before every transformer block."""
    handle = toy_handle
    blocks = list(handle.model.transformer.transformer_blocks) + list(handle.model.transformer.single_transformer_blocks)
    ran = []
    for i, b in enumerate(blocks):
        b.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if ran:  # the first block has run: the user presses Cancel
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(rt, "check_interrupt", check)
    with pytest.raises(mm.InterruptProcessingException):
        NR.Refocus.execute(handle, _img(32, 48), _depth(32, 48), _focus(), steps=3, tiling="off")
    assert ran == [0] and len(blocks) > 1


def test_depth_cancel_per_chunk(world, monkeypatch):
    save_tiny_depth_anything(world["models"] / "depth_anything" / "Tiny")
    handle = ND.DepthModelLoader.execute(model_name="Tiny").result[0]
    forwards = []
    handle.model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    checks = {"n": 0}

    def check():
        checks["n"] += 1
        if forwards:
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(rt, "check_interrupt", check)
    with pytest.raises(mm.InterruptProcessingException):
        ND.DepthEstimate.execute(handle, torch.rand(3, 28, 28, 3), process_res=28, batch_size=1)
    assert len(forwards) == 1


# ------------------------------------------------------------------------- memory refused up front
@pytest.fixture
def little_memory(monkeypatch):
    def set_free(n):
        monkeypatch.setattr(mm, "free_memory_bytes", int(n))
    return set_free


def test_bokeh_refused_before_rendering(world, little_memory, monkeypatch):
    from diffcamera.core import video
    rendered = []
    real = video.render_bokeh
    monkeypatch.setattr(video, "render_bokeh", lambda *a, **k: rendered.append(a[0].shape) or real(*a, **k))
    little_memory(1 << 20)
    with pytest.raises(NotEnoughMemory, match=r"^BokehSimulate \(1 frame\(s\) 256x256, mode layered.* needs about "
                                              r".* but only 1.0 MiB is free; use a smaller image"):
        NB.BokehSimulate.execute(torch.rand(1, 256, 256, 3), depth=_depth(256, 256))
    assert rendered == []  # nothing rendered, not even a check on a crop
    little_memory(1 << 34)
    assert NB.BokehSimulate.execute(torch.rand(1, 16, 16, 3), depth=_depth()).result[0].shape == (1, 16, 16, 3)
    assert rendered == [(1, 3, 16, 16)]  # the one frame, once


def test_depth_estimate_refused_before_running(world, little_memory):
    save_tiny_depth_anything(world["models"] / "depth_anything" / "Tiny")
    handle = ND.DepthModelLoader.execute(model_name="Tiny").result[0]
    little_memory(8 << 20)
    with pytest.raises(NotEnoughMemory, match="process_res 1036, batch_size 4.*lower process_res or batch_size"):
        ND.DepthEstimate.execute(handle, torch.rand(4, 64, 64, 3), process_res=1036, batch_size=4)


def test_simulation_refused_before_writing(world, little_memory):
    little_memory(1 << 30)
    with pytest.raises(NotEnoughMemory, match="^SimulateRefocusDataset at size 2048 needs about .*; lower size"):
        NT.SimulateDataset.execute("procedural", 160, 4, 2048, 32.0, 1024.0, 0, "big")
    assert not (world["output"] / "diffcamera_datasets" / "big").exists()


def test_training_512_batch_32_refused_before_it_starts(world, little_memory):
    """A 512-px batch-32 toy training is refused up front when the trainer's memory plan exceeds the free memory
    (``benchmarks/bench_memory.py`` compares the plan with measured toy steps)."""
    from diffcamera.training.config import TrainConfig
    from diffcamera.training.memory import plan
    folder = world["output"] / "diffcamera_datasets" / "big"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"size": 512, "groups": 64, "shards": []}))
    need = plan(TrainConfig.load("toy", {"size": 512, "batch_size": 32}), "cpu").total
    little_memory(need - 1)
    with pytest.raises(ValueError, match=r"training the toy model at 512 px, batch 32, needs about .* GiB .* but only "
                                         r".* GiB are free\. To fit, set "):
        NT.TrainRefocusLoRA.execute(SimulatedDataset(str(folder), 512, 64), "toy", 10, 32, 1e-3, 1.0, 0.0, 0,
                                    "big", 0)
    assert not (world["output"] / "diffcamera_train" / "big").exists()  # refused before the run folder exists


def test_free_memory_outside_comfyui(monkeypatch):
    monkeypatch.setattr(rt, "host", comfy_fallback)
    monkeypatch.delenv(rt.MEMORY_LIMIT, raising=False)
    with open("/proc/meminfo") as fh:
        avail = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("MemAvailable:"))
    got = rt.free_memory(torch.device("cpu"))
    assert abs(got - avail) < 0.2 * avail
    assert rt.free_memory(torch.device("meta")) is None  # unknown: the checks let work run
    monkeypatch.setenv(rt.MEMORY_LIMIT, "512")
    assert rt.free_memory(torch.device("cpu")) == 512 * 2 ** 20
    assert rt.free_memory(torch.device("meta")) == 512 * 2 ** 20
    monkeypatch.setenv(rt.MEMORY_LIMIT, "lots")
    with pytest.raises(ValueError, match="DIFFCAMERA_MEMORY_LIMIT_MB"):
        rt.free_memory(torch.device("cpu"))

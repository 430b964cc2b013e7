"""Hostile and odd inputs fed straight to the nodes' ``execute`` (tier b, the fake ComfyUI).

ComfyUI does not check V3 dropdown values or custom-type inputs before a node runs, so every node input is
untrusted. Each probe asserts what a user wants: the node works sensibly (the right shape, finite values), or it
raises an exception whose message names the offending input. Probes that could hang (a depth map far outside
0..1 once made the renderer run for minutes) run in a subprocess under a watchdog.
Complements ``test_security.py`` (paths, dropdowns, NaN widgets, the schema-wide checker).
"""
import fractions
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from diffcamera import runtime as rt
from diffcamera.core.pipeline import PhysicsOnly
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import bokeh as NB
from diffcamera.nodes import depth as ND
from diffcamera.nodes import focus as NF
from diffcamera.nodes import refocus as NR
from diffcamera.nodes import training as NT
from diffcamera.nodes import video as NV
from diffcamera.nodes.validation import InputError, NotEnoughMemory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(REPO, "tests")


# ------------------------------------------------------------------------------------------ helpers
def _img(h=16, w=16, b=1, c=3):
    return torch.rand(b, h, w, c)


def _depth(h=16, w=16, b=1):
    return DepthMap(torch.linspace(0, 1, w).view(1, 1, 1, w).expand(b, 1, h, w).contiguous(), "test")


def _focus(d=0.4, b=1):
    return Focus(torch.full((b,), 0.5), torch.full((b,), 0.5), torch.full((b,), d), ["point"] * b)


def _out(node_output):
    return node_output.result


def _sane_image(t, shape):
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert tuple(t.shape) == tuple(shape)
    assert bool(torch.isfinite(t).all())
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def _works_or_names(fn, name):
    """Run ``fn``: a ValueError must name ``name`` first; otherwise its result is returned for the caller's checks."""
    try:
        return fn()
    except ValueError as exc:
        assert str(exc).startswith(f"{name}"), f"error does not name {name!r}: {exc}"
        return None


@pytest.fixture
def world(comfy_models_dir):
    base = comfy_models_dir.parent
    for sub in ("input", "output"):
        (base / sub).mkdir(exist_ok=True)
    return {"base": base, "models": comfy_models_dir, "input": base / "input", "output": base / "output"}


@pytest.fixture
def toy(world):
    from tiny_dit import save_toy_model
    save_toy_model(str(world["models"] / "diffcamera" / "toy_test.safetensors"))
    return NR.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]


@pytest.fixture
def depth_handle(world):
    from tiny_depth import save_tiny_depth_anything
    save_tiny_depth_anything(world["models"] / "depth_anything" / "Tiny")
    return ND.DepthModelLoader.execute(model_name="Tiny").result[0]


PRELUDE = """
import faulthandler, os, sys
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
sys.path[:0] = [{fake!r}, {tests!r}]
import torch
torch.set_num_threads(1)
import folder_paths
folder_paths.set_base({base!r})
from diffcamera.core.pipeline import PhysicsOnly
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import bokeh as NB, refocus as NR
def report(fn):
    faulthandler.dump_traceback_later({watchdog}, exit=True)  # a C watchdog: ends the process even inside torch
    try:
        out = fn().result
    except Exception as exc:
        print("RESULT EXC", type(exc).__name__, isinstance(exc, ValueError), str(exc).replace(chr(10), " "))
        return
    finally:
        faulthandler.cancel_dump_traceback_later()
    print("RESULT OK", all(bool(torch.isfinite(t).all()) for t in out if isinstance(t, torch.Tensor)))
"""


def _isolated(body: str, base, watchdog: float = 5.0) -> str:
    """Run ``body`` (which calls ``report(lambda: ...)``) in a fresh Python with the fake ComfyUI (folders under
    ``base``); the call is killed after ``watchdog`` seconds (it normally takes well under 0.1 s). Returns the RESULT line, or a line saying it was killed."""
    code = PRELUDE.format(fake=os.path.join(TESTS, "fake_comfy"), tests=TESTS, base=str(base), watchdog=watchdog) + textwrap.dedent(body)
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:  # pragma: no cover - the watchdog ends it first
        return "KILLED (outer timeout)"
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if lines:
        return lines[-1]
    return "KILLED " + ("(watchdog: it hung)" if "Timeout (" in proc.stderr else proc.stderr[-500:])


def _assert_sensible(result: str, name: str):
    """An isolated call either worked with finite outputs, or raised a ValueError naming ``name``."""
    assert result == "RESULT OK True" or result.startswith("RESULT EXC") and f" True {name}" in result, result


# ================================================================================ IMAGE: shapes, dtypes, values
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 1, 32, 3), (1, 32, 1, 3), (1, 16, 16, 4), (1, 16, 16, 1)])
def test_bokeh_odd_image_shapes_work(world, shape):
    _, h, w, _ = shape
    image, coc = _out(NB.BokehSimulate.execute(torch.rand(*shape), depth=_depth(h, w)))
    _sane_image(image, (1, h, w, 3))
    _sane_image(coc, (1, h, w))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_bokeh_float_dtypes_give_float32(world, dtype):
    image, _ = _out(NB.BokehSimulate.execute(_img().to(dtype), depth=_depth()))
    _sane_image(image, (1, 16, 16, 3))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool, torch.complex64])
def test_non_float_images_refused_naming_the_input(world, dtype):
    bad = torch.ones(1, 8, 8, 3, dtype=dtype)
    with pytest.raises(InputError, match=r"^image: expected an IMAGE \(a float tensor"):
        NB.BokehSimulate.execute(bad, depth=_depth(8, 8))
    with pytest.raises(InputError, match=r"^depth_image: expected an IMAGE"):
        ND.DepthFromImage.execute(depth_image=bad)


@pytest.mark.parametrize("value", [1e6, -5.0, 3e38])
@pytest.mark.parametrize("mode", ["layered", "classical"])
def test_bokeh_image_values_outside_0_1_stay_finite(world, value, mode):
    image, _ = _out(NB.BokehSimulate.execute(torch.full((1, 8, 8, 3), value), depth=_depth(8, 8), mode=mode,
                                             highlight_gain=50.0, gamma=0.1 if value < 0 else 10.0))
    _sane_image(image, (1, 8, 8, 3))


def test_non_contiguous_and_expanded_tensors(world):
    out = _out(NB.BokehSimulate.execute(torch.rand(1, 16, 16, 3).transpose(1, 2), depth=_depth()))[0]
    _sane_image(out, (1, 16, 16, 3))
    out = _out(NB.BokehSimulate.execute(torch.rand(1, 1, 1, 3).expand(2, 16, 16, 3), depth=_depth()))[0]
    _sane_image(out, (2, 16, 16, 3))
    stride0 = DepthMap(torch.rand(1, 1, 1, 1).expand(2, 1, 16, 16), "test")
    out = _out(NB.BokehSimulate.execute(_img(b=2), depth=stride0))[0]
    _sane_image(out, (2, 16, 16, 3))
    focus, preview = _out(NF.FocusPicker.execute(_img(b=2), stride0, mask=torch.ones(1, 1, 1).expand(2, 16, 16)))
    assert focus.batch == 2 and 0 <= float(focus.disparity.min()) <= float(focus.disparity.max()) <= 1
    out = _out(NR.Refocus.execute(PhysicsOnly(), torch.rand(1, 1, 1, 3).expand(2, 16, 16, 3), stride0, _focus()))
    _sane_image(out[0], (2, 16, 16, 3))


@pytest.mark.parametrize("shape", [(0, 16, 16, 3), (2, 16, 0, 3)])
def test_empty_images_refused(world, shape):
    with pytest.raises(InputError, match=r"^image: the image is empty"):
        NF.FocusPicker.execute(torch.zeros(shape), _depth())
    with pytest.raises(InputError, match=r"^image: the image is empty"):
        NR.Refocus.execute(PhysicsOnly(), torch.zeros(shape), _depth(), _focus())


@pytest.mark.parametrize("shape", [(16, 16, 3), (1, 1, 16, 16, 3), (1, 16, 16, 2), (1, 16, 16, 5)])
def test_wrong_rank_or_channels_refused(world, shape):
    with pytest.raises(InputError, match=r"^image: expected an IMAGE"):
        NF.FocusPicker.execute(torch.rand(*shape), _depth())


def test_huge_batch_of_tiny_frames_runs_linearly(world):
    """256 focus frames on a 1x1 image: one output frame each, finite, no blow-up."""
    image, coc = _out(NB.BokehSimulate.execute(_img(1, 1), depth=_depth(1, 1), focus=_focus(b=256)))
    _sane_image(image, (256, 1, 1, 3))
    focus, preview = _out(NF.FocusPicker.execute(_img(1, 1, b=512), _depth(1, 1)))
    assert focus.batch == 512 and preview.shape == (512, 1, 1, 3)


def test_batch_mismatches_are_named(world):
    with pytest.raises(ValueError, match=r"frame counts differ \(image 2, depth 3, focus 1\)"):
        NB.BokehSimulate.execute(_img(b=2), depth=_depth(b=3))
    with pytest.raises(ValueError, match=r"^depth: 2 depth maps for 3 images"):
        NF.FocusPicker.execute(_img(b=3), _depth(b=2))
    with pytest.raises(ValueError, match=r"^focus disparity: 3 values for 2 images"):
        NR.Refocus.execute(PhysicsOnly(), _img(b=2), _depth(), _focus(b=3))
    with pytest.raises(ValueError, match=r"^input focus disparity: 3 values for 1 images"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), input_focus=_focus(b=3))
    with pytest.raises(ValueError, match=r"^depth_mask: 3 depth maps for 2 images"):
        ND.DepthFromImage.execute(depth_mask=torch.rand(3, 8, 8), image=_img(b=2))


# ============================================================================= custom types of the wrong kind
@pytest.mark.parametrize("value", [None, torch.rand(1, 1, 16, 16), [[0.5]], "depth.png", {"disparity": 0.5}])
def test_depth_of_the_wrong_type(world, value):
    match = "^depth: required" if value is None else "^depth: expected a DEPTH"
    with pytest.raises(InputError, match=match):
        NF.FocusPicker.execute(_img(), value)
    with pytest.raises(InputError, match=match):
        NV.RackFocus.execute(value)


@pytest.mark.parametrize("value", [torch.tensor([0.5]), 0.5, [0.5], {"disparity": 0.5}])
def test_focus_of_the_wrong_type(world, value):
    with pytest.raises(InputError, match="^focus: expected a FOCUS"):
        NB.BokehSimulate.execute(_img(), depth=_depth(), focus=value)
    with pytest.raises(InputError, match="^input_focus: expected a FOCUS"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), input_focus=value)


@pytest.mark.parametrize("d", [1.5, -0.1, math.nan, math.inf])
def test_focus_disparity_out_of_range(world, d):
    with pytest.raises(InputError, match="^focus: the focus disparity must be finite values in 0..1"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(d))


@pytest.mark.parametrize("value", [None, "physics (no model)", PhysicsOnly, torch.nn.Linear(2, 2), ["model"]])
def test_diffcamera_model_of_the_wrong_type(world, value):
    match = "^diffcamera_model: required" if value is None else "^diffcamera_model: expected a DIFFCAMERA_MODEL"
    with pytest.raises(InputError, match=match):
        NR.Refocus.execute(value, _img(), _depth(), _focus())


def test_depth_model_of_the_wrong_type(world, depth_handle):
    for value in (depth_handle.model, "Tiny", {"model": "x"}, None):
        match = "^depth_model: required" if value is None else "^depth_model: expected a DEPTH_MODEL"
        with pytest.raises(InputError, match=match):
            ND.DepthEstimate.execute(value, _img(), process_res=14)


def test_depth_model_handle_around_a_non_depth_module(world):
    handle = rt.wrap_model(torch.nn.Linear(3, 3))  # e.g. another pack's "DEPTH_MODEL" type
    with pytest.raises(ValueError, match="^depth_model: "):
        ND.DepthEstimate.execute(handle, _img(), process_res=14)


# ================================================================================ DEPTH values out of range
@pytest.mark.parametrize("case", [
    "NB.BokehSimulate.execute(torch.rand(1, 16, 16, 3), depth=d)",
    "NR.Refocus.execute(PhysicsOnly(), torch.rand(1, 16, 16, 3), d, Focus(torch.tensor([.5]), torch.tensor([.5]), "
    "torch.tensor([.4]), ['point']))",
], ids=["bokeh", "refocus"])
@pytest.mark.parametrize("top", ["1e6", "1e30"])
def test_depth_outside_0_1_neither_hangs_nor_crashes(tmp_path, case, top):
    body = f"""
    d = DepthMap(torch.linspace(0, {top}, 256).view(1, 1, 16, 16), "test")
    report(lambda: {case})
    """
    _assert_sensible(_isolated(body, tmp_path), "depth")


def test_focus_picker_on_depth_outside_0_1(world):
    out = _works_or_names(lambda: NF.FocusPicker.execute(_img(), DepthMap(torch.full((1, 1, 16, 16), 5.0), "t")),
                          "depth")
    if out is not None:
        focus = out.result[0]
        assert 0.0 <= float(focus.disparity.min()) and float(focus.disparity.max()) <= 1.0, focus


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64, torch.bool])
def test_depth_of_other_dtypes_works(world, dtype):
    d = DepthMap(torch.ones(1, 1, 16, 16).to(dtype), "test")
    _sane_image(_out(NB.BokehSimulate.execute(_img(), depth=d))[0], (1, 16, 16, 3))
    focus = _out(NF.FocusPicker.execute(_img(), d))[0]
    assert 0.0 <= float(focus.disparity[0]) <= 1.0


def test_depth_of_another_size_is_resized_or_refused_by_name(world):
    _sane_image(_out(NB.BokehSimulate.execute(_img(1, 1), depth=_depth(64, 64)))[0], (1, 1, 1, 3))
    _sane_image(_out(NB.BokehSimulate.execute(_img(64, 64), depth=_depth(1, 1)))[0], (1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"^depth is 8×8 px but the image is 16×16"):
        NF.FocusPicker.execute(_img(), _depth(8, 8))
    with pytest.raises(ValueError, match=r"^depth is 8×8 px but the image is 16×16"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(8, 8), _focus())


# ================================================================================ FOCUS fields
@pytest.mark.parametrize("x", [torch.tensor([math.nan]), torch.full((3,), 0.5), None], ids=["nan", "len3", "none"])
def test_refocus_focus_with_bad_point(world, toy, x):
    focus = Focus(x, torch.tensor([0.5]), torch.tensor([0.5]), ["point"])
    out = _works_or_names(lambda: NR.Refocus.execute(toy, _img(), _depth(), focus, steps=1), "focus")
    if out is not None:
        _sane_image(out.result[0], (1, 16, 16, 3))


def test_bokeh_ignores_focus_method_and_tensor_rank(world):
    """BokehSimulate works with an empty method list and 0-d tensors; a NaN focus point is refused naming focus."""
    for focus in (Focus(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.5]), []),
                  Focus(torch.tensor(0.5), torch.tensor(0.5), torch.tensor(0.5), ["point"])):
        _sane_image(_out(NB.BokehSimulate.execute(_img(), depth=_depth(), focus=focus))[0], (1, 16, 16, 3))
    nan_point = Focus(torch.tensor([math.nan]), torch.tensor([math.nan]), torch.tensor([0.5]), ["point"])
    with pytest.raises(InputError, match="^focus: the focus point's x must be finite values in 0..1"):
        NB.BokehSimulate.execute(_img(), depth=_depth(), focus=nan_point)


# ================================================================================ masks
@pytest.mark.parametrize("node,name", [
    (lambda m: NB.BokehSimulate.execute(_img(), depth_mask=m), "depth_mask"),
    (lambda m: NF.FocusPicker.execute(_img(), _depth(), mask=m), "mask"),
    (lambda m: NV.RackFocus.execute(_depth(), start_mask=m), "start_mask"),
    (lambda m: ND.DepthFromImage.execute(depth_mask=m), "depth_mask"),
], ids=["bokeh", "focus", "rack", "from_image"])
@pytest.mark.parametrize("mask", [torch.ones(1, 1, 16, 16), torch.ones(16), torch.ones(1, 16, 16, dtype=torch.int32),
                                  torch.full((1, 16, 16), math.inf)], ids=["4d", "1d", "int", "inf"])
def test_masks_of_wrong_shape_type_or_values(world, node, name, mask):
    with pytest.raises(InputError, match=f"^{name}: "):
        node(mask)


def test_focus_mask_errors(world):
    with pytest.raises(ValueError, match=r"^mask is 8×8 px but the image is 16×16"):
        NF.FocusPicker.execute(_img(), _depth(), mask=torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match=r"^mask: 3 masks for 2 images"):
        NF.FocusPicker.execute(_img(b=2), _depth(), mask=torch.ones(3, 16, 16))
    for m in (torch.zeros(1, 16, 16), torch.full((1, 16, 16), -1.0)):
        with pytest.raises(ValueError, match=r"^mask: the mask is empty"):
            NF.FocusPicker.execute(_img(), _depth(), mask=m)
    for m in (torch.ones(16, 16), torch.full((1, 16, 16), 1e6), torch.ones(1, 16, 16).half()):
        focus = _out(NF.FocusPicker.execute(_img(), _depth(), mask=m))[0]
        assert 0.0 <= float(focus.disparity[0]) <= 1.0


@pytest.mark.parametrize("kw,name", [({"start_mask": torch.ones(1, 8, 8)}, "start_mask"),
                                     ({"end_mask": torch.zeros(1, 16, 16)}, "end_mask"),
                                     ({"start_mask": torch.ones(3, 16, 16)}, "start_mask")],
                         ids=["size", "empty", "batch"])
def test_rack_focus_mask_errors_name_the_input(world, kw, name):
    with pytest.raises(ValueError, match=f"^{name}[: ]"):
        NV.RackFocus.execute(_depth(), **kw)


# ================================================================================ focus_point JSON
@pytest.mark.parametrize("text", ['{"x": NaN, "y": 0.5}', '{"x": -Infinity, "y": 0.5}', '{"x": 1e400, "y": 0.5}',
                                  '{"x": "0.5", "y": "nan"}', '{"x": null, "y": 0.5}', '{"x": 0.5}', '0.5', '"hi"',
                                  '[true, false]', '[null]', '[]', '{"x":0.5,"y":0.5} xx', '{"x":0.5,"y":0.5,"x":7}',
                                  "[" * 5 + "]" * 5, json.dumps([[0.5, 0.5]] * 1000)])
def test_bad_focus_point_json_is_named(world, text):
    with pytest.raises(ValueError, match="^focus_point: "):
        NF.FocusPicker.execute(_img(), _depth(), focus_point=text)
    if not text.startswith("[[0.5"):  # a point count that does not fit the batch is only known at run time
        assert str(NF.FocusPicker.validate_inputs(focus_point=text)).startswith("focus_point: ")


@pytest.mark.parametrize("text", ['\n{"x": 0.5,\t"y": 0.5}\r\n', '{"x": 0.5, "y": 0.5, "z": [[1]]}',
                                  '{"x": 0.5, "y": 0.5, "\\u0000": 1}', '{"x": 0.5, "y": 0.5, "\\ud800": 1}',
                                  '[1, 0]', '{"x": 0, "y": 1}'])
def test_odd_but_valid_focus_point_json_works(world, text):
    focus, preview = _out(NF.FocusPicker.execute(_img(), _depth(), focus_point=text))
    assert focus.batch == 1 and 0.0 <= float(focus.disparity[0]) <= 1.0
    _sane_image(preview, (1, 16, 16, 3))


@pytest.mark.parametrize("node", ["focus", "rack"])
def test_huge_integer_coordinate_is_named(world, node):
    text = '{"x": 1' + "0" * 400 + ', "y": 0.5}'
    if node == "focus":
        assert str(NF.FocusPicker.validate_inputs(focus_point=text)).startswith("focus_point: ")
        with pytest.raises(ValueError, match="^focus_point: "):
            NF.FocusPicker.execute(_img(), _depth(), focus_point=text)
    else:
        assert str(NV.RackFocus.validate_inputs(start_point=text)).startswith("start_point: ")
        with pytest.raises(ValueError, match="^start_point: "):
            NV.RackFocus.execute(_depth(), start_point=text)


def test_integer_over_python_digit_limit_is_named(world):
    text = '{"x": 1' + "0" * 5000 + ', "y": 0.5}'
    assert str(NF.FocusPicker.validate_inputs(focus_point=text)).startswith("focus_point: ")
    with pytest.raises(ValueError, match="^focus_point: "):
        NF.FocusPicker.execute(_img(), _depth(), focus_point=text)


# ================================================================================ STRING widgets
@pytest.mark.parametrize("which", ["path", "name", "image_folder", "run_name"])
def test_lone_surrogate_in_a_string_is_named(world, which):
    bad = "a\ud800b"
    if which == "run_name":
        ds = NT.SimulateDataset.execute("procedural", 1, 1, 16, 1.0, 2.0, 0, "ds").result[0]
    with pytest.raises(ValueError, match=f"^{which}: "):
        if which == "path":
            ND.DepthModelLoader.execute(model_name=ND._model_choices()[0], path=bad)
        elif which == "name":
            NT.SimulateDataset.execute("procedural", 1, 1, 16, 1.0, 2.0, 0, bad)
        elif which == "image_folder":
            NT.SimulateDataset.execute("image_folder", 1, 1, 16, 1.0, 2.0, 0, "x", image_folder=bad)
        else:
            NT.TrainRefocusLoRA.execute(ds, "toy", 1, 1, 1e-3, 1.0, 0.0, 0, bad, 0)


@pytest.mark.parametrize("path,match", [("~", "is outside"), ("/", "is outside"), (".", "names no file"),
                                        ("Ti\nny", "control character"), ("a" * 16000, "too long"),
                                        ("b" * 300, "a part of"), ("..\\..\\etc", "contains '..'")])
def test_depth_loader_odd_paths_named(world, path, match):
    with pytest.raises(ValueError, match=f"^path: .*{match}"):
        ND.DepthModelLoader.execute(model_name=ND._model_choices()[0], path=path)


@pytest.mark.parametrize("name,match", [("   ", "give a plain folder name"), ("a\nb", "control character"),
                                        ("n" * 255, "too long"), ("a:b", "give a plain folder name")])
def test_dataset_odd_names_named(world, name, match):
    with pytest.raises(ValueError, match=f"^name: .*{match}"):
        NT.SimulateDataset.execute("procedural", 1, 1, 16, 1.0, 2.0, 0, name)


# ================================================================================ FLOAT / INT extremes
@pytest.mark.parametrize("value", [1e308, -1e308, math.inf, -math.inf, math.nan, 10 ** 20])
def test_extreme_floats_refused_naming_the_input(world, value):
    with pytest.raises(InputError, match="^bokeh_level: "):
        NB.BokehSimulate.execute(_img(), depth=_depth(), bokeh_level=value)
    with pytest.raises(InputError, match="^input_level: "):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), input_level=value)


@pytest.mark.parametrize("value", [2 ** 64, -1, 10 ** 30, 1.0, "7"])
def test_extreme_ints_refused_naming_the_input(world, value):
    with pytest.raises(InputError, match="^seed: "):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), seed=value)
    with pytest.raises(InputError, match="^frames: "):
        NV.RackFocus.execute(_depth(), frames=value)


def test_numeric_edge_values_work(world, toy):
    _sane_image(_out(NB.BokehSimulate.execute(_img(), depth=_depth(), bokeh_level=5e-324))[0], (1, 16, 16, 3))
    _sane_image(_out(NB.BokehSimulate.execute(_img(), depth=_depth(), bokeh_level=np.float32(10),
                                              blades=np.int64(5)))[0], (1, 16, 16, 3))
    _sane_image(_out(NR.Refocus.execute(toy, _img(), _depth(), _focus(), steps=1, seed=2 ** 64 - 1))[0],
                (1, 16, 16, 3))
    with pytest.raises(InputError, match="^bokeh_level: expected a finite number"):
        import decimal
        NB.BokehSimulate.execute(_img(), depth=_depth(), bokeh_level=decimal.Decimal("1.5"))


def test_fraction_float_widget(world):
    out = _works_or_names(lambda: NB.BokehSimulate.execute(_img(), depth=_depth(),
                                                           bokeh_level=fractions.Fraction(1, 3)), "bokeh_level")
    if out is not None:
        _sane_image(out.result[0], (1, 16, 16, 3))


# ================================================================================ per node
@pytest.mark.parametrize("shape,res", [((1, 1, 1, 3), 14), ((1, 1, 64, 3), 14), ((1, 64, 1, 3), 28),
                                       ((1, 8, 8, 4), 14), ((1, 8, 8, 1), 15), ((3, 1, 1, 3), 14)])
def test_depth_estimate_odd_images(world, depth_handle, shape, res):
    b, h, w, _ = shape
    depth, preview = _out(ND.DepthEstimate.execute(depth_handle, torch.rand(*shape), process_res=res, batch_size=2))
    assert tuple(depth.disparity.shape) == (b, 1, h, w)
    assert 0.0 <= float(depth.disparity.min()) and float(depth.disparity.max()) <= 1.0
    _sane_image(preview, (b, h, w, 3))


@pytest.mark.parametrize("value", [1e6, -1e6, 3e38])
def test_depth_estimate_image_values_outside_0_1(world, depth_handle, value):
    depth, _ = _out(ND.DepthEstimate.execute(depth_handle, torch.full((1, 8, 8, 3), value), process_res=14))
    d = depth.disparity
    assert bool(torch.isfinite(d).all()) and 0.0 <= float(d.min()) and float(d.max()) <= 1.0


def test_depth_estimate_thin_image_at_huge_resolution_refused_up_front(world, depth_handle):
    """A 64x1 image at process_res 4102 would run the network at 262528x4102 px: refused before running."""
    with pytest.raises(NotEnoughMemory, match=r"process_res 4102.*lower process_res or batch_size"):
        ND.DepthEstimate.execute(depth_handle, _img(1, 64), process_res=4102)


@pytest.mark.parametrize("kw", [dict(depth_mask=torch.rand(1, 1, 1), image=_img(64, 64)),
                                dict(depth_mask=torch.rand(1, 64, 64), image=_img(1, 1)),
                                dict(depth_mask=torch.rand(1, 1, 64), image=_img(64, 1)),
                                dict(depth_image=torch.rand(1, 8, 8, 4)),
                                dict(depth_image=torch.rand(1, 8, 8, 3).half()),
                                dict(depth_mask=torch.rand(1, 8, 8).double(), convention="metric depth"),
                                dict(depth_image=torch.linspace(0, 1e6, 192).view(1, 8, 8, 3), normalise=False),
                                dict(depth_mask=torch.full((1, 8, 8), 3e38), convention="metric depth"),
                                dict(depth_mask=torch.rand(4000, 1, 1))],
                         ids=["1x1->64", "64->1x1", "1xW->Hx1", "4ch", "f16", "f64-metric", "1e6-raw", "3e38-metric",
                              "4000x1x1"])
def test_depth_from_image_odd_inputs(world, kw):
    depth, preview = _out(ND.DepthFromImage.execute(**kw))
    d = depth.disparity
    assert bool(torch.isfinite(d).all()) and 0.0 <= float(d.min()) and float(d.max()) <= 1.0
    ref = kw.get("image", kw.get("depth_image"))
    if ref is not None:
        assert tuple(d.shape[-2:]) == tuple(ref.shape[1:3])


def test_depth_from_image_bad_metric_range_named(world):
    m = torch.linspace(1, 5, 64).view(1, 8, 8)
    for near, far in ((10.0, 1.0), (3.0, 3.0), (1e-300, 1e-310)):
        with pytest.raises(ValueError, match=r"^depth_mask: need 0 < near < far"):
            ND.DepthFromImage.execute(convention="metric depth", depth_mask=m, near=near, far=far)
    with pytest.raises(ValueError, match=r"^near / far: set both"):
        ND.DepthFromImage.execute(convention="metric depth", depth_mask=m, near=1e6)
    with pytest.raises(ValueError, match=r"^depth_mask: metric depth must be > 0"):
        ND.DepthFromImage.execute(convention="metric depth", depth_mask=-m)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 1, 40, 3), (1, 40, 1, 3), (1, 16, 16, 4), (1, 16, 16, 1)])
def test_refocus_physics_odd_shapes(world, shape):
    _, h, w, _ = shape
    image, aif = _out(NR.Refocus.execute(PhysicsOnly(), torch.rand(*shape), _depth(h, w), _focus()))
    _sane_image(image, (1, h, w, 3))
    _sane_image(aif, (1, h, w, 3))


@pytest.mark.parametrize("value", [1e6, -1e6, 3e38])
def test_refocus_values_outside_0_1(world, toy, value):
    for model, kw in ((PhysicsOnly(), {}), (toy, {"steps": 1})):
        image, aif = _out(NR.Refocus.execute(model, torch.full((1, 16, 16, 3), value), _depth(), _focus(), **kw))
        _sane_image(image, (1, 16, 16, 3))
        _sane_image(aif, (1, 16, 16, 3))


def test_refocus_toy_odd_inputs(world, toy):
    for h, w in ((1, 1), (1, 40), (40, 1)):
        with pytest.raises(ValueError, match=r"^image is \d+×\d+ px, smaller than one latent token"):
            NR.Refocus.execute(toy, _img(h, w), _depth(h, w), _focus(), steps=1)
    for tiling, tile in (("on", 1), ("on", 4096), ("off", 0)):
        _sane_image(_out(NR.Refocus.execute(toy, _img(32, 32), _depth(32, 32), _focus(), steps=1, tiling=tiling,
                                            tile_size=tile))[0], (1, 32, 32, 3))
    _sane_image(_out(NR.Refocus.execute(toy, _img(16, 16, c=4).half(), _depth(), _focus(), steps=1))[0],
                (1, 16, 16, 3))


def test_refocus_conditioning_and_flux_model(world, toy):
    with pytest.raises(ValueError, match="^conditioning: no pooled_output"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), conditioning=[[torch.zeros(1, 4, 16), {}]])
    with pytest.raises(ValueError, match="^prompt embedding sizes 7/3 do not match the model"):
        NR.Refocus.execute(toy, _img(), _depth(), _focus(), steps=1,
                           conditioning=[[torch.zeros(1, 4, 7), {"pooled_output": torch.zeros(1, 3)}]])
    with pytest.raises(ValueError, match="^flux_model: the physics refocus uses no model"):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(), flux_model=toy)
    with pytest.raises(InputError, match="^flux_model: expected a MODEL"):
        NR.Refocus.execute(toy, _img(), _depth(), _focus(), flux_model={"model": 1})


@pytest.mark.parametrize("pooled", ["x", [0.1, 0.2], 3])
def test_refocus_pooled_output_not_a_tensor(world, pooled):
    with pytest.raises(ValueError, match="^conditioning: "):
        NR.Refocus.execute(PhysicsOnly(), _img(), _depth(), _focus(),
                           conditioning=[[torch.zeros(1, 4, 16), {"pooled_output": pooled}]])


def test_rack_focus_odd_inputs(world):
    focus = _out(NV.RackFocus.execute(_depth(1, 1), frames=3, hold_start=0, hold_end=0, window=255))[0]
    assert focus.batch == 3
    focus = _out(NV.RackFocus.execute(_depth(1, 1, b=1024), frames=1024))[0]
    assert focus.batch == 1024 and bool(torch.isfinite(focus.disparity).all())
    with pytest.raises(ValueError, match=r"^hold_start \+ hold_end: 4096 \+ 4096 frames held do not fit"):
        NV.RackFocus.execute(_depth(), frames=4096, hold_start=4096, hold_end=4096)
    with pytest.raises(ValueError, match=r"^start_point: expected one point, got a list of 2"):
        NV.RackFocus.execute(_depth(), start_point='[{"x": 0, "y": 0}, {"x": 1, "y": 1}]')
    with pytest.raises(InputError, match=r"^easing: 'bounce' is not one of the choices"):
        NV.RackFocus.execute(_depth(), easing="bounce")


# ================================================================================ simulator sources
def _png(path, arr):
    from PIL import Image
    Image.fromarray(arr).save(path)


def _good_pair(folder, stem="b"):
    _png(os.path.join(folder, f"{stem}.png"), np.random.randint(0, 255, (16, 16, 3), dtype=np.uint8))
    _png(os.path.join(folder, f"{stem}_depth.png"), np.arange(256, dtype=np.uint8).reshape(16, 16))


def _png_bomb(path, side=30000):
    """A 100-byte PNG whose header claims ``side`` x ``side`` pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _npy_huge_header(path):
    """A tiny .npy whose header claims 100000 x 100000 float32 (37 GiB)."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }"
    header += b" " * (118 - 10 - len(header) - 1) + b"\n"
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)


@pytest.mark.parametrize("evil", ["bomb_image", "bomb_depth", "npy_pickle", "npy_huge_header", "npy_4d", "npy_inf"])
def test_crafted_files_in_the_image_folder_are_skipped(world, evil):
    """An uploaded file in input/ must be skipped (and listed) without loading a pickle or allocating absurd memory;
    the good image beside it still makes a dataset."""
    folder = world["input"] / "photos"
    folder.mkdir()
    _good_pair(str(folder))
    a = str(folder / "a.png")
    if evil == "bomb_image":
        _png_bomb(a)
        _png(str(folder / "a_depth.png"), np.zeros((16, 16), np.uint8))
    else:
        _png(a, np.zeros((16, 16, 3), np.uint8))
        if evil == "bomb_depth":
            _png_bomb(str(folder / "a_depth.png"))
        elif evil == "npy_pickle":
            np.save(str(folder / "a_depth.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
        elif evil == "npy_huge_header":
            _npy_huge_header(str(folder / "a_depth.npy"))
        elif evil == "npy_4d":
            np.save(str(folder / "a_depth.npy"), np.ones((2, 16, 16, 2), np.float32))
        else:
            np.save(str(folder / "a_depth.npy"), np.full((16, 16), 1e39))
    ds, summary = _out(NT.SimulateDataset.execute("image_folder", 1, 1, 16, 1.0, 2.0, 0, "pairs",
                                                  image_folder="photos"))
    assert ds.groups == 1 and "a.png" in summary


def test_dataset_with_no_usable_source_is_refused(world):
    folder = world["input"] / "photos"
    folder.mkdir()
    _png(str(folder / "a.png"), np.zeros((16, 16, 3), np.uint8))
    np.save(str(folder / "a_depth.npy"), np.full((16, 16), 1e39))
    with pytest.raises(ValueError, match="(?i)image[ _]folder"):
        NT.SimulateDataset.execute("image_folder", 1, 1, 16, 1.0, 2.0, 0, "pairs", image_folder="photos")


def test_float_widget_given_a_huge_integer(world):
    with pytest.raises(InputError, match="^bokeh_level: "):
        NB.BokehSimulate.execute(_img(), depth=_depth(), bokeh_level=10 ** 400)

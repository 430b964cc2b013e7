"""Depth nodes in the fake ComfyUI: real loading + inference on the tiny random Depth Anything V2."""
import os

import pytest
import torch

import comfy.model_management as mm
import comfy.utils
from fake_executor import PromptError, run_prompt, validate_prompt
from tiny_depth import save_tiny_depth_anything

from diffcamera import comfy_fallback, runtime as rt
from diffcamera.runtime import io
from diffcamera.core.values import DepthMap
from diffcamera.nodes import depth as N

TENSORS = {}


class _Tensor(io.ComfyNode):
    """Test source: outputs ``TENSORS[key]`` as IMAGE and MASK."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_Tensor", display_name="T", category="test", description="d",
                         inputs=[io.String.Input("key", tooltip="t")],
                         outputs=[io.Image.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, key):
        t = TENSORS[key]
        return io.NodeOutput(t, t[..., 0] if t.dim() == 4 else t)


CLASSES = {c.define_schema().node_id: c for c in N.NODES + [_Tensor]}


@pytest.fixture
def model_dir(comfy_models_dir):
    return save_tiny_depth_anything(comfy_models_dir / "depth_anything" / "Depth-Anything-V2-Tiny-hf")


def _image(b=2, h=40, w=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 6, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def _prompt(image_key="img", **estimate):
    inputs = {"depth_model": ["1", 0], "image": ["2", 0], "process_res": 42, "batch_size": 1}
    inputs.update(estimate)
    return {
        "1": {"class_type": "DiffCamera_DepthModelLoader",
              "inputs": {"model_name": "Depth-Anything-V2-Tiny-hf", "dtype": "auto", "device": "auto"}},
        "2": {"class_type": "T_Tensor", "inputs": {"key": image_key}},
        "3": {"class_type": "DiffCamera_DepthEstimate", "inputs": inputs},
    }


def test_loader_lists_folders_and_estimate_runs_through_model_management(model_dir):
    spec = N.DepthModelLoader.INPUT_TYPES()["required"]["model_name"][1]
    assert spec["options"] == ["Depth-Anything-V2-Tiny-hf"]
    TENSORS["img"] = _image(3, 40, 60)
    mm.load_calls.clear()
    comfy.utils.updates.clear()
    out = run_prompt(_prompt(), CLASSES)
    handle = out["1"].result[0]
    assert isinstance(handle, comfy.model_patcher.ModelPatcher)       # wrapped for model management
    assert mm.load_calls and mm.load_calls[-1] == [handle]            # loaded through load_models_gpu
    depth, preview = out["3"].result
    assert isinstance(depth, DepthMap) and depth.source == "depth_anything_v2:Depth-Anything-V2-Tiny-hf"
    assert depth.disparity.shape == (3, 1, 40, 60)
    for i in range(3):
        assert depth.disparity[i].min() == pytest.approx(0, abs=1e-6)
        assert depth.disparity[i].max() == pytest.approx(1, abs=1e-6)
    assert preview.shape == (3, 40, 60, 3) and preview.dtype == torch.float32
    assert torch.equal(preview[..., 0], depth.disparity[:, 0]) and torch.equal(preview[..., 1], preview[..., 2])
    assert [u[1:] for u in comfy.utils.updates] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert out["3"].ui.image.shape == (3, 40, 60, 3)


def test_node_result_matches_the_core_and_batching_does_not_matter(model_dir):
    from diffcamera.core import depth as D
    TENSORS["img"] = _image(3, 30, 50, seed=4)
    a = run_prompt(_prompt(batch_size=1), CLASSES)["3"].result[0].disparity
    b = run_prompt(_prompt(batch_size=4), CLASSES)["3"].result[0].disparity
    assert torch.allclose(a, b, atol=1e-5)
    ref = D.estimate_disparity(D.load_depth_model(model_dir), TENSORS["img"].permute(0, 3, 1, 2), 42)
    assert torch.allclose(a, ref, atol=1e-5)


def test_explicit_path_dtype_and_cpu_device(model_dir, tmp_path):
    out = N.DepthModelLoader.execute(model_name="Depth-Anything-V2-Tiny-hf", path=str(model_dir),
                                     dtype="bfloat16", device="cpu")
    handle = out.result[0]
    assert next(handle.model.parameters()).dtype == torch.bfloat16
    assert handle.load_device == torch.device("cpu")
    d = N.DepthEstimate.execute(handle, _image(1, 28, 28), process_res=28)[0]
    assert d.disparity.dtype == torch.float32


def test_model_is_offloaded_after_use_outside_comfyui(model_dir, monkeypatch):
    """Outside ComfyUI (plain handle) the model goes back to its offload device after the node runs."""
    from diffcamera.core.depth import load_depth_model
    monkeypatch.setattr(rt, "host", comfy_fallback)
    handle = comfy_fallback.PlainModelHandle(load_depth_model(model_dir), torch.device("cpu"), torch.device("meta"))
    seen = []
    hook = handle.model.register_forward_pre_hook(lambda m, a: seen.append(next(m.parameters()).device.type))
    N.DepthEstimate.execute(handle, _image(1, 28, 28), process_res=28)
    hook.remove()
    assert seen == ["cpu"]                                            # ran on the load device...
    assert next(handle.model.parameters()).device.type == "meta"      # ...and was offloaded afterwards


def test_interrupt_stops_the_batch(model_dir):
    TENSORS["img"] = _image(2, 28, 28)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_prompt(_prompt(), CLASSES)
    finally:
        mm.interrupt_current_processing(False)


def test_missing_and_wrong_model_folders(comfy_models_dir, tmp_path):
    spec = N.DepthModelLoader.INPUT_TYPES()["required"]["model_name"][1]
    assert spec["options"] == [N.NONE_FOUND]
    with pytest.raises(ValueError) as err:
        N.DepthModelLoader.execute(model_name=N.NONE_FOUND)
    msg = str(err.value)
    assert msg.startswith("model_name:") and "depth_anything" in msg
    assert "Depth-Anything-V2-Small-hf" in msg and "Apache-2.0" in msg and "CC-BY-NC-4.0" in msg
    notdepth = comfy_models_dir / "depth_anything" / "clip"
    notdepth.mkdir(parents=True)
    (notdepth / "config.json").write_text('{"model_type": "clip_vision_model"}')
    assert "clip" in N.DepthModelLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    with pytest.raises(ValueError, match="not a depth model"):
        N.DepthModelLoader.execute(model_name="clip")
    with pytest.raises(ValueError, match="^path: .* is outside .*DIFFCAMERA_ALLOW_EXTERNAL_MODELS=1"):
        N.DepthModelLoader.execute(model_name="clip", path=str(tmp_path / "missing"))
    with pytest.raises(PromptError):  # a name that is not listed is rejected by validation
        validate_prompt(_prompt(), CLASSES)


def test_estimate_rejects_bad_inputs(model_dir):
    handle = N.DepthModelLoader.execute(model_name="Depth-Anything-V2-Tiny-hf").result[0]
    with pytest.raises(ValueError, match="^image:"):
        N.DepthEstimate.execute(handle, torch.rand(2, 3, 8))
    with pytest.raises(ValueError, match="^depth_model:"):
        N.DepthEstimate.execute(None, _image(1, 14, 14))


# ------------------------------------------------------------------------------------- converter
def _convert(**inputs):
    return N.DepthFromImage.execute(**inputs).result


def test_convert_image_mask_invert_metric_and_resize():
    grey = torch.linspace(0, 1, 12).view(1, 1, 12, 1).expand(1, 6, 12, 3).contiguous()  # [1,6,12,3]: left->right
    d, prev = _convert(depth_image=grey)
    assert d.source == "converted:disparity" and d.disparity.shape == (1, 1, 6, 12)
    assert torch.allclose(d.disparity[0, 0, 0], torch.linspace(0, 1, 12), atol=1e-6)
    assert prev.shape == (1, 6, 12, 3)
    inv, _ = _convert(depth_image=grey, convention="depth (near dark)")
    assert torch.allclose(inv.disparity[0, 0, 0], torch.linspace(1, 0, 12), atol=1e-6)
    metres = torch.tensor([[1.0, 2.0, 4.0]]).view(1, 1, 3)
    met, _ = _convert(depth_mask=metres, convention="metric depth")
    assert met.source == "converted:metric"
    assert met.disparity.view(-1).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    ranged, _ = _convert(depth_mask=metres, convention="metric depth", near=1.0, far=4.0)
    assert ranged.disparity.view(-1).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    big, _ = _convert(depth_image=grey, image=torch.zeros(1, 24, 48, 3))
    assert big.disparity.shape == (1, 1, 24, 48)


def test_convert_bad_inputs():
    grey = torch.rand(1, 6, 12, 3)
    with pytest.raises(ValueError, match="exactly one"):
        _convert()
    with pytest.raises(ValueError, match="exactly one"):
        _convert(depth_image=grey, depth_mask=grey[..., 0])
    with pytest.raises(ValueError, match="set both"):
        _convert(depth_mask=grey[..., 0] + 1, convention="metric depth", near=1.0)
    nan = grey.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^depth_image: .*NaN"):
        _convert(depth_image=nan)
    with pytest.raises(ValueError, match="one per image"):
        _convert(depth_image=torch.rand(2, 6, 12, 3), image=torch.zeros(3, 6, 12, 3))


def test_converter_in_a_prompt():
    TENSORS["d"] = torch.rand(2, 8, 8, 3)
    out = run_prompt({"1": {"class_type": "T_Tensor", "inputs": {"key": "d"}},
                      "2": {"class_type": "DiffCamera_DepthFromImage",
                            "inputs": {"convention": "disparity (near bright)", "depth_mask": ["1", 1],
                                       "normalise": True, "near": 0.0, "far": 0.0}}}, CLASSES)
    assert out["2"].result[0].disparity.shape == (2, 1, 8, 8)


def test_every_input_has_a_tooltip_and_nodes_a_description():
    for cls in N.NODES:
        schema = cls.define_schema()
        assert schema.description and schema.display_name
        for i in schema.inputs:
            assert i.tooltip, (schema.node_id, i.id)
    assert [c.define_schema().display_name for c in N.NODES][:2] == ["DepthModelLoader", "DepthEstimate"]
    assert os.path.basename(N.__file__) == "depth.py"

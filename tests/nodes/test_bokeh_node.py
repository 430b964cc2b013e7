"""BokehSimulate in the fake ComfyUI: depth sources, focus sources, outputs, preview, bad input."""
import pytest
import torch

from fake_executor import PromptError, run_prompt

from diffcamera.runtime import io
from diffcamera.core.bokeh import render_bokeh
from diffcamera.core.conventions import level_to_K
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import bokeh as N
from diffcamera.nodes.common import Depth, FocusType

VALUES = {}


class _Src(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_BSrc", display_name="T", category="test", description="d",
                         inputs=[io.String.Input("key", tooltip="t")],
                         outputs=[io.Image.Output(), Depth.Output(), io.Mask.Output(), FocusType.Output(),
                                  io.Image.Output()])

    @classmethod
    def execute(cls, key):
        v = VALUES[key]
        return io.NodeOutput(v["image"], v.get("depth"), v.get("mask"), v.get("focus"), v.get("depth_image"))


CLASSES = {"T_BSrc": _Src, "DiffCamera_BokehSimulate": N.BokehSimulate}


def _data(b=1, h=24, w=32):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(b, h, w, 3, generator=g)
    disp = torch.zeros(b, 1, h, w)
    disp[..., :, w // 2:] = 1.0
    return img, disp


def _defaults():
    """Widget defaults, as the ComfyUI front end writes them into an API prompt."""
    spec = N.BokehSimulate.INPUT_TYPES()
    return {k: extra["default"] for k, (_, extra) in spec["required"].items() if "default" in extra}


def _prompt(key, **inputs):
    base = _defaults()
    base.update({"image": ["1", 0], "bokeh_level": 200.0, "mode": "layered"})
    base.update(inputs)
    return {"1": {"class_type": "T_BSrc", "inputs": {"key": key}},
            "2": {"class_type": "DiffCamera_BokehSimulate", "inputs": base}}


def test_depth_and_focus_value_match_core_and_coc_mask_mapping():
    img, disp = _data()
    VALUES["a"] = {"image": img, "depth": DepthMap(disp, source="test")}
    out = run_prompt(_prompt("a", depth=["1", 1], focus_disparity=0.0), CLASSES)["2"]
    image, mask = out.result
    K = level_to_K(200.0, 24, 32)
    expect = render_bokeh(img.permute(0, 3, 1, 2), disp, 0.0, K, mode="layered")
    assert torch.allclose(image, expect.permute(0, 2, 3, 1), atol=1e-6)
    assert mask.shape == (1, 24, 32)
    assert torch.allclose(mask[0, :, :16], torch.tensor(0.5)) and torch.allclose(mask[0, :, 16:], torch.tensor(1.0))
    assert out.ui["images"][0]["shape"] == [1, 24, 32, 3]
    assert "K = " in out.ui["text"][0]
    # the sharp half stays sharp, the near half is blurred
    assert torch.allclose(image[0, :, :8], img[0, :, :8], atol=1e-5)  # beyond the near rim (6.25 px)
    assert (image[0, :, 20:] - img[0, :, 20:]).abs().mean() > 0.05


def test_depth_image_metric_convention_focus_broadcast_and_resize_note():
    img, disp = _data(b=2)
    metric = 1.0 / (0.1 + disp[:1])                    # metric depth, half size -> resized
    small = torch.nn.functional.interpolate(metric, size=(12, 16), mode="nearest")
    VALUES["b"] = {"image": img, "depth_image": small[:, 0, :, :, None].expand(1, 12, 16, 3).contiguous(),
                   "focus": Focus.from_disparity(1.0)}
    out = run_prompt(_prompt("b", depth_image=["1", 4], convention="metric depth", focus=["1", 3],
                             mode="classical"), CLASSES)["2"]
    image, mask = out.result
    assert image.shape == (2, 24, 32, 3) and mask.shape == (2, 24, 32)
    assert "resized" in out.ui["text"][0]
    # focus on the near half (disparity 1): near right half sharp (mask 0.5), far left half mask 0
    assert torch.allclose(mask[:, :, 20:], torch.tensor(0.5), atol=1e-3) and (mask[:, :, :10] < 0.05).all()


def test_mask_depth_and_level_zero_is_identity():
    img, disp = _data()
    VALUES["c"] = {"image": img, "mask": disp[:, 0]}
    out = run_prompt(_prompt("c", depth_mask=["1", 2], bokeh_level=0.0), CLASSES)["2"]
    assert torch.equal(out.result[0], img)


@pytest.mark.parametrize("inputs,needle", [
    (dict(), "connect exactly one depth input"),
    (dict(depth=["1", 1], depth_mask=["1", 2]), "exactly one"),
    (dict(depth=["1", 1], blades=2), "blades"),
    (dict(depth=["1", 1], focus=["1", 3]), "focus"),
])
def test_bad_input_errors(inputs, needle):
    img, disp = _data(b=2)
    VALUES["d"] = {"image": img, "depth": DepthMap(disp, source="t"), "mask": disp[:, 0],
                   "focus": Focus(torch.zeros(3), torch.zeros(3), torch.zeros(3), ["point"] * 3)}
    with pytest.raises(ValueError, match=needle):
        run_prompt(_prompt("d", **inputs), CLASSES)


def test_nan_depth_is_refused():
    img, disp = _data()
    disp[..., 0, 0] = float("nan")
    VALUES["e"] = {"image": img, "mask": disp[:, 0]}
    with pytest.raises(ValueError, match="NaN"):
        run_prompt(_prompt("e", depth_mask=["1", 2]), CLASSES)


def test_schema_widget_limits_are_enforced():
    img, disp = _data()
    VALUES["f"] = {"image": img, "depth": DepthMap(disp, source="t")}
    with pytest.raises(PromptError):
        run_prompt(_prompt("f", depth=["1", 1], bokeh_level=-1.0), CLASSES)


# ------------------------------------------------------------------------------------------- video
def _frames_of(img, disp, d_f, K, mode="layered"):
    """What BokehSimulate must return for frame-wise inputs: one core render per frame."""
    return torch.cat([render_bokeh(img[i:i + 1].permute(0, 3, 1, 2), disp[i:i + 1], float(d_f[i]), K, mode=mode)
                      for i in range(len(d_f))]).permute(0, 2, 3, 1)


def test_one_image_and_a_focus_batch_give_one_frame_per_focus():
    img, disp = _data(b=1)
    disp[..., :, :8] = 0.5
    d_f = torch.tensor([0.0, 0.25, 0.5, 1.0])
    VALUES["v1"] = {"image": img, "depth": DepthMap(disp, source="t"),
                    "focus": Focus(torch.zeros(4), torch.zeros(4), d_f, ["rack"] * 4)}
    out = run_prompt(_prompt("v1", depth=["1", 1], focus=["1", 3]), CLASSES)["2"]
    image, mask = out.result
    assert image.shape == (4, 24, 32, 3) and mask.shape == (4, 24, 32)
    K = level_to_K(200.0, 24, 32)
    expect = _frames_of(img.expand(4, -1, -1, -1), disp.expand(4, -1, -1, -1), d_f, K)
    assert torch.allclose(image, expect, atol=1e-6)
    assert not torch.allclose(image[0], image[-1], atol=1e-3)  # the focus really moved
    assert out.ui["text"][0].startswith("BokehSimulate: 4 frame(s)")


def test_per_frame_depth_and_focus_render_frame_by_frame():
    img, disp = _data(b=3)
    disp = disp * torch.tensor([1.0, 0.6, 0.3]).view(3, 1, 1, 1)
    d_f = torch.tensor([1.0, 0.6, 0.3])  # focus follows the near half as it recedes
    VALUES["v2"] = {"image": img, "depth": DepthMap(disp, source="t"),
                    "focus": Focus(torch.zeros(3), torch.zeros(3), d_f, ["point"] * 3)}
    image, _ = run_prompt(_prompt("v2", depth=["1", 1], focus=["1", 3], mode="classical"), CLASSES)["2"].result
    K = level_to_K(200.0, 24, 32)
    assert torch.allclose(image, _frames_of(img, disp, d_f, K, mode="classical"), atol=1e-6)


def test_temporal_smoothing_renders_with_smoothed_focus_and_depth_and_cuts_flicker():
    from diffcamera.core import video

    g = torch.Generator().manual_seed(1)
    n = 8
    img, disp = _data(b=1)
    disp = (0.3 + 0.4 * disp).expand(n, -1, -1, -1) + 0.05 * torch.randn(n, 1, 24, 32, generator=g)
    disp = disp.clamp(0, 1)
    d_f = 0.7 + 0.05 * torch.randn(n, generator=g)
    VALUES["v3"] = {"image": img, "depth": DepthMap(disp, source="t"),
                    "focus": Focus(torch.zeros(n), torch.zeros(n), d_f, ["point"] * n)}
    raw = run_prompt(_prompt("v3", depth=["1", 1], focus=["1", 3]), CLASSES)["2"]
    smooth = run_prompt(_prompt("v3", depth=["1", 1], focus=["1", 3], temporal_smoothing=2), CLASSES)["2"]
    K = level_to_K(200.0, 24, 32)
    expect = _frames_of(img.expand(n, -1, -1, -1), video.smooth_frames(disp, 2), video.smooth_frames(d_f, 2), K)
    assert torch.allclose(smooth.result[0], expect, atol=1e-6)
    assert video.temporal_flicker(smooth.result[0]) < 0.6 * video.temporal_flicker(raw.result[0])
    assert "smoothed over ±2 frames" in smooth.ui["text"][0]


def test_frame_counts_must_agree():
    img, disp = _data(b=2)
    VALUES["v4"] = {"image": img, "depth": DepthMap(disp, source="t"),
                    "focus": Focus(torch.zeros(3), torch.zeros(3), torch.zeros(3), ["point"] * 3)}
    with pytest.raises(ValueError, match=r"^frame counts differ \(image 2, depth 2, focus 3\)"):
        run_prompt(_prompt("v4", depth=["1", 1], focus=["1", 3]), CLASSES)

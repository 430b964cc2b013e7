"""RackFocus in the fake ComfyUI, alone and feeding BokehSimulate (one image in, N frames out)."""
import pytest
import torch

from fake_executor import PromptError, run_prompt

from diffcamera.runtime import io
from diffcamera.core import video
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import bokeh as B
from diffcamera.nodes import video as V
from diffcamera.nodes.common import Depth

VALUES = {}


class _Src(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_VSrc", display_name="T", category="test", description="d",
                         inputs=[io.String.Input(id="key", tooltip="t")],
                         outputs=[io.Image.Output(), Depth.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, key):
        v = VALUES[key]
        return io.NodeOutput(v["image"], v["depth"], v.get("mask"))


CLASSES = {"T_VSrc": _Src, "DiffCamera_RackFocus": V.RackFocus, "DiffCamera_BokehSimulate": B.BokehSimulate}


def _defaults(cls):
    spec = cls.INPUT_TYPES()
    return {k: extra["default"] for k, (_, extra) in spec["required"].items() if "default" in extra}


def _scene(frames=1, h=24, w=36):
    img = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))
    d = torch.full((frames, 1, h, w), 0.2)
    d[..., w // 2:] = 0.8
    return img, DepthMap(d, source="t")


def _rack(key, **inputs):
    base = _defaults(V.RackFocus)
    base.update({"depth": ["1", 1]})
    base.update(inputs)
    return {"1": {"class_type": "T_VSrc", "inputs": {"key": key}},
            "2": {"class_type": "DiffCamera_RackFocus", "inputs": base}}


def test_rack_focus_node_is_the_core_schedule():
    img, depth = _scene()
    VALUES["a"] = {"image": img, "depth": depth}
    out = run_prompt(_rack("a", frames=10, hold_start=2, hold_end=3, easing="linear",
                           start_point='{"x": 0.2, "y": 0.5}', end_point='{"x": 0.8, "y": 0.5}'), CLASSES)["2"]
    focus = out.result[0]
    assert isinstance(focus, Focus) and focus.batch == 10
    expect = 0.2 + 0.6 * video.rack_schedule(10, 2, 3, "linear")
    assert torch.allclose(focus.disparity, expect, atol=1e-6)
    assert "0.200 -> 0.800" in out.ui.as_dict()["text"][0]


def test_rack_to_a_mask_and_per_frame_depth():
    img, depth = _scene(frames=6)
    mask = torch.zeros(1, 24, 36)
    mask[:, :, 30:] = 1.0
    VALUES["b"] = {"image": img, "depth": depth, "mask": mask}
    focus = run_prompt(_rack("b", frames=6, hold_start=0, hold_end=2, end_mask=["1", 2]), CLASSES)["2"].result[0]
    assert torch.allclose(focus.disparity[-2:], torch.tensor(0.8)) and float(focus.disparity[0]) > 0.2
    with pytest.raises(ValueError, match="^depth: 6 depth maps for 5 frames"):
        run_prompt(_rack("b", frames=5, hold_start=0, hold_end=0), CLASSES)


@pytest.mark.parametrize("inputs,needle", [
    (dict(frames=8, hold_start=5, hold_end=4), r"^hold_start \+ hold_end"),
    (dict(start_point='{"x": 1.5, "y": 0.5}'), "start_point"),
    (dict(easing="bounce"), "easing"),
])
def test_bad_rack_input(inputs, needle):
    img, depth = _scene()
    VALUES["c"] = {"image": img, "depth": depth}
    with pytest.raises((ValueError, PromptError), match=needle):
        run_prompt(_rack("c", **inputs), CLASSES)


def test_one_image_to_a_rack_focus_clip_through_bokeh_simulate():
    img, depth = _scene()
    VALUES["d"] = {"image": img, "depth": depth}
    prompt = _rack("d", frames=7, hold_start=2, hold_end=2, start_point='{"x": 0.1, "y": 0.5}',
                   end_point='{"x": 0.9, "y": 0.5}')
    bokeh = _defaults(B.BokehSimulate)
    bokeh.update({"image": ["1", 0], "depth": ["1", 1], "focus": ["2", 0], "bokeh_level": 300.0})
    prompt["3"] = {"class_type": "DiffCamera_BokehSimulate", "inputs": bokeh}
    frames, coc = run_prompt(prompt, CLASSES)["3"].result
    assert frames.shape == (7, 24, 36, 3) and coc.shape == (7, 24, 36)
    # far half sharp while the focus is held on it (coc mask 0.5), the near half 0.6 in front (0.5 + 0.3);
    # at the end the near half is sharp and the far half 0.6 behind (0.5 - 0.3)
    left, right = (slice(None), slice(0, 12)), (slice(None), slice(24, 36))
    assert torch.allclose(coc[0][left], torch.tensor(0.5)) and torch.allclose(coc[0][right], torch.tensor(0.8))
    assert torch.allclose(coc[-1][right], torch.tensor(0.5)) and torch.allclose(coc[-1][left], torch.tensor(0.2))
    assert torch.equal(frames[0], frames[1]) and torch.equal(frames[-1], frames[-2])  # the holds hold
    assert not torch.allclose(frames[2], frames[4])

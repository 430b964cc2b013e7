"""FocusPicker in the fake ComfyUI: exact focus on known depths, masks, override, batches, bad input."""
import pytest
import torch

from fake_executor import PromptError, run_prompt, validate_prompt

from diffcamera.runtime import io
from diffcamera.core import focus as F
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import focus as N
from diffcamera.nodes.common import Depth

VALUES = {}


class _Src(io.ComfyNode):
    """Test source: IMAGE, DEPTH and MASK from ``VALUES``."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_Src", display_name="T", category="test", description="d",
                         inputs=[io.String.Input("key", tooltip="t")],
                         outputs=[io.Image.Output(), Depth.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, key):
        v = VALUES[key]
        return io.NodeOutput(v["image"], v["depth"], v.get("mask"))


CLASSES = {"T_Src": _Src, "DiffCamera_FocusPicker": N.FocusPicker}


def planes(b=1, h=32, w=48, far=0.2, near=0.8):
    d = torch.full((b, 1, h, w), far)
    d[..., w // 2:] = near
    return d


def _setup(key="s", b=1, h=32, w=48, mask=None, depth=None):
    VALUES[key] = {"image": torch.full((b, h, w, 3), 0.5),
                   "depth": DepthMap(planes(b, h, w) if depth is None else depth, source="test"),
                   "mask": mask}


def _prompt(key="s", with_mask=False, **picker):
    inputs = {"image": ["1", 0], "depth": ["1", 1], "focus_point": '{"x": 0.25, "y": 0.5}', "bokeh_level": 20.0,
              "window": 0}
    if with_mask:
        inputs["mask"] = ["1", 2]
    inputs.update(picker)
    return {"1": {"class_type": "T_Src", "inputs": {"key": key}},
            "2": {"class_type": "DiffCamera_FocusPicker", "inputs": inputs}}


def test_point_gives_exact_focus_and_a_preview():
    _setup()
    out = run_prompt(_prompt(), CLASSES)["2"]
    focus, preview = out.result
    assert isinstance(focus, Focus) and focus.method == ["point"]
    assert focus.disparity.item() == torch.tensor(0.2).item()
    assert (focus.x.item(), focus.y.item()) == (0.25, 0.5)
    assert preview.shape == (1, 32, 48, 3)
    ui = out.ui
    assert ui["diffcamera_focus"] == [{"x": 0.25, "y": 0.5, "disparity": 0.2, "method": "point"}]
    assert ui["diffcamera_preview"][0]["shape"] == [1, 32, 48, 3]
    assert "images" not in ui, "a stock 'images' output would make the front end draw a second preview"
    # level 20 at 48 px wide: K = 20*48/1024 = 0.94 px, every blur < 1 px -> everything is tinted in focus
    assert preview[0, 2, 2, 1] > 0.6 and preview[0, 2, 45, 1] > 0.6
    # level 200: K = 9.4 px, the near half blurs by 5.6 px -> only the far (left) half is tinted
    strong = run_prompt(_prompt(bokeh_level=200.0), CLASSES)["2"].result[1]
    assert strong[0, 2, 2, 1] > 0.6 and torch.allclose(strong[0, 2, 45], torch.tensor(0.5))
    near = run_prompt(_prompt(focus_point='{"x": 0.9, "y": 0.1}'), CLASSES)["2"].result[0]
    assert near.disparity.item() == torch.tensor(0.8).item()


def test_robust_read_on_an_edge():
    d = planes(1, 32, 48)
    d[..., 23] = 0.5  # flying pixels on the edge
    _setup(depth=d)
    x = (23 + 0.5) / 48
    f = run_prompt(_prompt(focus_point=f'{{"x": {x}, "y": 0.5}}', window=7), CLASSES)["2"].result[0]
    assert f.disparity.item() in (torch.tensor(0.2).item(), torch.tensor(0.8).item())
    f1 = run_prompt(_prompt(focus_point=f'{{"x": {x}, "y": 0.5}}', window=1), CLASSES)["2"].result[0]
    assert f1.disparity.item() == pytest.approx(0.5)


def test_mask_median_and_override():
    mask = torch.zeros(1, 32, 48)
    mask[:, 4:20, 30:46] = 1
    _setup(mask=mask)
    f = run_prompt(_prompt(with_mask=True), CLASSES)["2"].result[0]
    assert f.method == ["mask"] and f.disparity.item() == torch.tensor(0.8).item()
    assert f.x.item() == pytest.approx(38 / 48) and f.y.item() == pytest.approx(12 / 32)
    o = run_prompt(_prompt(focus_disparity_override=0.33), CLASSES)["2"].result[0]
    assert o.method == ["override"] and o.disparity.item() == pytest.approx(0.33) and o.x.item() == 0.25
    off = run_prompt(_prompt(focus_disparity_override=-1.0), CLASSES)["2"].result[0]
    assert off.method == ["point"]


def test_batches_one_focus_for_all_or_one_per_image():
    d = torch.cat([planes(1, far=0.1, near=0.9), planes(1, far=0.3, near=0.6), planes(1, far=0.0, near=1.0)])
    _setup(b=3, depth=d)
    shared = run_prompt(_prompt(focus_point='{"x": 0.9, "y": 0.5}'), CLASSES)["2"].result[0]
    assert shared.disparity.tolist() == pytest.approx([0.9, 0.6, 1.0])
    per = run_prompt(_prompt(focus_point='[{"x": 0.1, "y": 0.5}, {"x": 0.9, "y": 0.5}, [0.2, 0.2]]'),
                     CLASSES)["2"].result[0]
    assert per.disparity.tolist() == pytest.approx([0.1, 0.6, 0.0]) and per.batch == 3
    # one depth map for a batch of images is broadcast
    VALUES["one"] = {"image": torch.zeros(2, 32, 48, 3), "depth": DepthMap(planes(1))}
    two = run_prompt(_prompt("one", focus_point='[[0.1, 0.5], [0.9, 0.5]]'), CLASSES)["2"].result[0]
    assert two.disparity.tolist() == pytest.approx([0.2, 0.8])
    with pytest.raises(ValueError, match="^focus_point: 2 points for 3 images"):
        run_prompt(_prompt(focus_point='[[0.1, 0.5], [0.9, 0.5]]'), CLASSES)


@pytest.mark.parametrize("text, words", [
    ('{"x": 0.5, "y": ', "not valid JSON"),
    ('{"x": 1.2, "y": 0.5}', "outside the image"),
    ('{"y": 0.5}', "lacks x"),
])
def test_bad_point_is_rejected_at_validation_naming_the_widget(text, words):
    _setup()
    with pytest.raises(PromptError) as err:
        validate_prompt(_prompt(focus_point=text), CLASSES)
    details = err.value.errors["2"][0]["details"]
    assert "focus_point:" in details and words in details
    with pytest.raises(ValueError, match=f"^focus_point: .*{words}"):   # and at run time (linked strings)
        N.FocusPicker.execute(VALUES["s"]["image"], VALUES["s"]["depth"], focus_point=text)


def test_bad_masks_and_depths():
    _setup(mask=torch.zeros(1, 32, 48))
    with pytest.raises(ValueError, match="^mask: the mask is empty"):
        run_prompt(_prompt(with_mask=True), CLASSES)
    _setup(mask=torch.ones(1, 16, 24))
    with pytest.raises(ValueError, match="^mask is 24×16 px but the image is 48×32; resize the mask"):
        run_prompt(_prompt(with_mask=True), CLASSES)
    _setup(depth=planes(1, 16, 24))
    with pytest.raises(ValueError, match="^depth is 24×16 px but the image is 48×32"):
        run_prompt(_prompt(), CLASSES)
    _setup(b=2, depth=planes(3))
    with pytest.raises(ValueError, match="^depth: 3 depth maps for 2 images"):
        run_prompt(_prompt(), CLASSES)
    nan = DepthMap(planes(1))
    nan.disparity[0, 0, 1, 1] = float("nan")   # DepthMap checks at creation; a later corruption is caught too
    VALUES["nan"] = {"image": torch.zeros(1, 32, 48, 3), "depth": nan}
    with pytest.raises(ValueError, match="^depth: .*NaN"):
        run_prompt(_prompt("nan"), CLASSES)
    with pytest.raises(ValueError, match="NaN"):
        DepthMap(nan.disparity)
    with pytest.raises(ValueError, match="^focus_disparity_override: must be finite and in 0..1"):
        F.pick_focus(torch.zeros(1, 3, 32, 48), planes(1), '{"x": 0.5, "y": 0.5}', override=1.5)
    with pytest.raises(ValueError, match=r"^depth: expected a \[B,1,H,W\] disparity map"):
        F.pick_focus(torch.zeros(1, 3, 32, 48), DepthMap(planes(1)), '{"x": 0.5, "y": 0.5}')


def test_schema_has_tooltips_and_a_plain_string_widget():
    schema = N.FocusPicker.define_schema()
    assert schema.node_id == "DiffCamera_FocusPicker" and schema.display_name == "FocusPicker"
    assert schema.description
    for i in schema.inputs:
        assert i.tooltip, i.id
    spec = N.FocusPicker.INPUT_TYPES()
    assert spec["required"]["focus_point"][0] == "STRING"
    assert spec["required"]["focus_point"][1]["default"] == '{"x": 0.5, "y": 0.5}'
    assert set(spec["optional"]) == {"mask", "focus_disparity_override"}

"""The fake ComfyUI rejects what real ComfyUI rejects, so schema mistakes fail here first."""
import pytest
import torch

from fake_executor import PromptError, run_prompt, validate_prompt
from diffcamera.runtime import io


class _Source(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_Source", display_name="Source", category="test", description="d",
                         inputs=[io.Int.Input("n", default=2, min=1, max=8, tooltip="t")],
                         outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, n):
        return io.NodeOutput(torch.zeros(1, n, n, 3))


class _Sink(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_Sink", display_name="Sink", category="test", description="d",
                         inputs=[io.Image.Input("image", tooltip="t"),
                                 io.Float.Input("gain", default=1.0, min=0.0, max=2.0, tooltip="t"),
                                 io.Combo.Input("mode", options=["a", "b"], default="a", tooltip="t"),
                                 io.Mask.Input("mask", optional=True, tooltip="t")],
                         outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, image, gain, mode, mask=None):
        assert torch.is_inference_mode_enabled()
        return io.NodeOutput(image * gain)


NODES = {"T_Source": _Source, "T_Sink": _Sink}


def _prompt(**sink_inputs):
    inputs = {"image": ["1", 0], "gain": 0.5, "mode": "a"}
    inputs.update(sink_inputs)
    inputs = {k: v for k, v in inputs.items() if v is not None}
    return {"1": {"class_type": "T_Source", "inputs": {"n": 4}}, "2": {"class_type": "T_Sink", "inputs": inputs}}


def test_valid_prompt_runs():
    out = run_prompt(_prompt(), NODES)
    assert out["2"].result[0].shape == (1, 4, 4, 3)


@pytest.mark.parametrize("change, kind", [
    ({"gain": 3.0}, "value_bigger_than_max"),
    ({"gain": -1.0}, "value_smaller_than_min"),
    ({"gain": "abc"}, "invalid_input_type"),
    ({"mode": "c"}, "value_not_in_list"),
    ({"image": None}, "required_input_missing"),
    ({"typo": 1}, "unknown_input"),
    ({"mask": ["1", 0]}, "return_type_mismatch"),
])
def test_invalid_prompts_are_rejected(change, kind):
    with pytest.raises(PromptError) as err:
        validate_prompt(_prompt(**change), NODES)
    assert kind in [e["type"] for e in err.value.errors["2"]]

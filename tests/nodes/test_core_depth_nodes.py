"""Depth from ComfyUI's own depth nodes (MoGe, Depth Anything 3, Marigold) through DepthFromImage.

ComfyUI v0.3.64 (which tier c runs) has none of these nodes, so each test makes the IMAGE such a node outputs
from a procedural scene's exact metric depth, with the node's convention as read in its source (newer ComfyUI):

* ``MoGeRender`` (output ``depth``; comfy_extras/nodes_moge.py): ``1/depth`` normalised per image between its
  0.1 % and 99.9 % quantiles, near = bright -> DepthFromImage ``disparity (near bright)``;
* ``DA3Render`` (output ``depth``, normalization ``raw``; comfy_extras/nodes_depth_anything_3.py): the model's raw
  depth (metres for DA3-Metric), far = larger, unbounded -> ``metric depth``; with ``v2_style`` / ``min_max`` it
  is ``1 − normalised depth`` (near bright, linear in *depth*);
* ``MarigoldV2PostProcess`` (comfy_extras/nodes_marigold.py): ``prediction = disparity`` (Disparity checkpoints)
  gives min-max normalised disparity, near bright -> ``disparity (near bright)``; ``prediction = depth`` gives
  ``1 − normalised depth`` (near bright, linear in depth).

The maps go through the graph as float IMAGEs (as the nodes pass them on), or quantised to 8 or 16 bits (a map
saved to PNG and loaded back). The exact routes must give the scene's normalised disparity; the near-bright
depth images keep the order of the planes (``disparity (near bright)`` is the right pick among the conventions,
``depth (near dark)`` inverts them) but not the disparity spacing, as the README says.
"""
from __future__ import annotations

import pytest
import torch

from fake_executor import run_prompt

from diffcamera.runtime import io
from diffcamera.core.conventions import metric_depth_to_disparity
from diffcamera.evaluation.scenes import make_scene
from diffcamera.nodes import depth as D

VALUES = {}


class _Src(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_CoreDepth", display_name="T", category="test", description="d",
                         inputs=[io.String.Input(id="key", tooltip="t")], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, key):
        return io.NodeOutput(VALUES[key])


CLASSES = {"T_CoreDepth": _Src, "DiffCamera_DepthFromImage": D.DepthFromImage}


def _grey(values):
    """``[B,1,H,W]`` -> a grey ComfyUI IMAGE ``[B,H,W,3]`` (what the nodes return)."""
    return values[:, 0, :, :, None].expand(-1, -1, -1, 3).contiguous()


def _quantile_normalise(x, low, high):
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        lo, hi = torch.quantile(x[i].flatten(), low), torch.quantile(x[i].flatten(), high)
        out[i] = ((x[i] - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    return out


def moge_render_depth(z):
    return _grey(_quantile_normalise(1.0 / z, 0.001, 0.999))


def da3_render_raw(z):
    return _grey(z)


def da3_render_v2_style(z):
    return _grey(1.0 - _quantile_normalise(z, 0.01, 0.99))


def marigold_post_process(prediction_map, prediction):
    """``prediction_map``: the decoded prediction (disparity for Disparity checkpoints, depth otherwise), 0..1."""
    lo = prediction_map.amin(dim=(1, 2, 3), keepdim=True)
    hi = prediction_map.amax(dim=(1, 2, 3), keepdim=True)
    d = (prediction_map - lo) / (hi - lo).clamp_min(1e-6)
    return _grey(1.0 - d if prediction == "depth" else d)


def quantise(image, bits):
    levels = 2 ** bits - 1
    return (image.clamp(0, 1) * levels).round() / levels


@pytest.fixture(scope="module")
def scene():
    s = make_scene(seed=5, size=(48, 72), kind="mixed")
    return s.depth, metric_depth_to_disparity(s.depth)


def _convert(image, convention):
    VALUES["img"] = image
    prompt = {"1": {"class_type": "T_CoreDepth", "inputs": {"key": "img"}},
              "2": {"class_type": "DiffCamera_DepthFromImage",
                    "inputs": {"convention": convention, "depth_image": ["1", 0], "normalise": True,
                               "near": 0.0, "far": 0.0}}}
    return run_prompt(prompt, CLASSES)["2"].result[0].disparity


def _ranks_agree(a, b):
    """Whether two maps order every pair of pixels the same way (monotone increasing relation)."""
    a, b = a.flatten().double(), b.flatten().double()
    order = torch.argsort(a)
    b_sorted = b[order]
    a_sorted = a[order]
    step_a, step_b = a_sorted[1:] - a_sorted[:-1], b_sorted[1:] - b_sorted[:-1]
    return bool(((step_a <= 1e-9) | (step_b > -1e-6)).all())


@pytest.mark.parametrize("bits", [None, 16, 8])
def test_moge_render_depth_is_disparity_near_bright(scene, bits):
    z, truth = scene
    image = moge_render_depth(z)
    if bits:
        image = quantise(image, bits)
    d = _convert(image, "disparity (near bright)")
    err = (d - truth).abs()
    tol = 0.5 / 255 if bits == 8 else 1e-4
    assert float(err.quantile(0.99)) <= 0.01 + tol and float(err.median()) <= 0.005 + tol, (float(err.max()), bits)


def test_da3_raw_depth_is_metric_depth(scene):
    z, truth = scene
    for scale in (1.0, 37.0):  # metres (DA3-Metric) or any other scale (relative models): 1/z normalised
        d = _convert(da3_render_raw(z * scale), "metric depth")
        assert torch.allclose(d, truth, atol=1e-5)


@pytest.mark.parametrize("bits", [None, 8])
def test_marigold_disparity_prediction_is_disparity_near_bright(scene, bits):
    z, truth = scene
    image = marigold_post_process(1.0 / z, "disparity")
    if bits:
        image = quantise(image, bits)
    d = _convert(image, "disparity (near bright)")
    assert float((d - truth).abs().max()) <= (0.6 / 255 if bits else 1e-5)


@pytest.mark.parametrize("node", ["da3_v2_style", "marigold_depth"])
def test_near_bright_depth_images_keep_the_order_of_the_planes_only(scene, node):
    z, truth = scene
    image = da3_render_v2_style(z) if node == "da3_v2_style" else marigold_post_process(z, "depth")
    right = _convert(image, "disparity (near bright)")
    wrong = _convert(image, "depth (near dark)")
    assert _ranks_agree(truth, right) and not _ranks_agree(truth, wrong)
    assert _ranks_agree(truth, 1.0 - wrong)
    # ... but the values are linear in depth, not in disparity: visibly off the true disparity spacing
    assert float((right - truth).abs().max()) > 0.05

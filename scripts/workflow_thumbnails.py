#!/usr/bin/env python3
"""Thumbnails for ComfyUI's template browser: ``workflows/<name>.jpg`` beside each UI workflow.

The browser asks for ``/api/workflow_templates/<pack>/<name>.jpg``. Each thumbnail is made by the pack itself on a
procedural scene with exact depth (``evaluation.scenes``), 384×256: what the workflow produces, computed with the same
core functions its nodes call (the ground-truth disparity stands in for Depth Anything's estimate, and a
toy-refocus thumbnail is only made when the trained toy model is bundled; the rack-focus one shows the first, middle and
last frame of a pull as thirds side by side). Run: ``python scripts/workflow_thumbnails.py``.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_DIR = os.path.join(ROOT, "workflows")
SIZE = (256, 384)  # H, W


def _pil(img):
    """[1,3,H,W] or [1,1,H,W] 0..1 -> PIL RGB."""
    from PIL import Image

    x = img[0].clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = (x.permute(1, 2, 0) * 255).round().byte().cpu().numpy()
    return Image.fromarray(arr, "RGB")


def _side_by_side(a, b):
    """Left half of ``a`` | right half of ``b`` (same size), with a thin divider."""
    from PIL import Image

    w, h = a.size
    out = Image.new("RGB", (w, h))
    out.paste(a.crop((0, 0, w // 2, h)), (0, 0))
    out.paste(b.crop((w // 2, 0, w, h)), (w // 2, 0))
    for y in range(h):
        out.putpixel((w // 2, y), (255, 255, 255))
    return out


def _time_strip(frames):
    """Thirds of successive frames side by side (start | middle | end of a clip), with thin dividers."""
    from PIL import Image

    w, h = frames[0].size
    out = Image.new("RGB", (w, h))
    cuts = [round(i * w / len(frames)) for i in range(len(frames) + 1)]
    for i, frame in enumerate(frames):
        out.paste(frame.crop((cuts[i], 0, cuts[i + 1], h)), (cuts[i], 0))
        if i:
            for y in range(h):
                out.putpixel((cuts[i], y), (255, 255, 255))
    return out


def make(names=None) -> list:
    import torch

    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.conventions import level_to_K
    from diffcamera.core.focus import focus_from_point, focus_preview
    from diffcamera.evaluation.scenes import make_scene
    from diffcamera.core.video import rack_focus

    torch.manual_seed(0)
    h, w = SIZE
    scene = make_scene(seed=3, size=SIZE, kind="mixed")
    img, disp = scene.image, scene.disparity
    focus = focus_from_point(disp, 0.74, 0.58)  # the textured block
    K = level_to_K(30.0, h, w)
    with torch.no_grad():
        bokeh = render_bokeh(img, disp, focus.disparity, K, mode="layered")
        near_focus = focus_from_point(disp, 0.1, 0.75)  # the star in front
        bokeh_near = render_bokeh(img, disp, near_focus.disparity, K, mode="layered")
        picker = focus_preview(img, disp, focus, K)
        # rack focus from the star in front to the textured block, as the rack_focus workflow renders it
        rack = rack_focus(disp, (0.1, 0.75), (0.74, 0.58), frames=36, hold_start=8, hold_end=8)
        rack_frames = [_pil(render_bokeh(img, disp, float(rack.disparity[i]), K, mode="layered")) for i in (0, 17, 35)]
    pictures = {
        "depth_estimate": _side_by_side(_pil(img), _pil(disp)),
        "focus_from_depth_map": _pil(picker),
        "bokeh_from_depth": _pil(bokeh),
        "train_toy_lora": _side_by_side(_pil(bokeh_near), _pil(bokeh)),
        "text_to_image_refocus": _pil(bokeh_near),
        "rack_focus": _time_strip(rack_frames),
        "depth_from_core_moge": _side_by_side(_pil(disp), _pil(bokeh)),
    }
    # refocus: the photo focused on the star in front, refocused on the block (its blur estimated, as the node does)
    from diffcamera.core.pipeline import RefocusPipeline
    physics = RefocusPipeline()(bokeh_near, disp, focus, K)
    pictures["refocus_photo"] = _side_by_side(_pil(bokeh_near), _pil(physics.image))
    try:
        from diffcamera.core.dit.loading import load_refocus_model

        toy = RefocusPipeline(load_refocus_model("toy"))
        out = toy(bokeh_near, disp, focus, K, input_focus_disparity=near_focus.disparity, input_K=K, steps=28)
        pictures["refocus_toy"] = _side_by_side(_pil(bokeh_near), _pil(out.image))
    except FileNotFoundError:
        pass  # the trained toy model is not bundled: no thumbnail rather than a misleading one
    written = []
    for name, picture in pictures.items():
        if names and name not in names:
            continue
        if not os.path.exists(os.path.join(UI_DIR, name + ".json")):
            continue
        path = os.path.join(UI_DIR, name + ".jpg")
        picture.save(path, quality=85)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in make(sys.argv[1:] or None):
        print(p)

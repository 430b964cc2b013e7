"""The whole chain on a built-in scene, as ``diffcamera demo`` runs it (no download, CPU is enough).

scene (procedural, exact metric depth) → disparity (exact, or Depth Anything V2) → two focus points read
from the depth (the nearest and the farthest surface) → BokehSimulate (classical, focused far: the
"wrong" photo) → DiffCameraRefocus (the bundled toy model, asked to focus near) → metrics against the
simulator's own render focused near, and the copy-the-input baseline beside them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch

from ..core import conventions as cv
from ..core.values import Focus

#: Default artist bokeh level (px per 1024 px of long side) of the demo: K = 10 px at 64², inside the
#: toy model's training range (levels 32..256).
DEMO_LEVEL = 160.0


@dataclass
class DemoResult:
    """Images ``[1,3,H,W]`` sRGB 0..1, disparity ``[1,1,H,W]``, and scalar metrics."""

    all_in_focus: torch.Tensor
    disparity: torch.Tensor
    input: torch.Tensor
    refocused: torch.Tensor
    target: torch.Tensor
    input_focus: Focus
    target_focus: Focus
    K: float
    level: float
    model: str
    metrics: Dict[str, float] = field(default_factory=dict)


def _extreme_point(disparity: torch.Tensor, nearest: bool):
    """Normalised ``(x, y)`` of the centre of the nearest (or farthest) surface, away from depth edges."""
    d = disparity[0, 0]
    h, w = d.shape
    target = d.max() if nearest else d.min()
    close = (d - target).abs() < 0.02
    # erode the region so the point sits inside the surface, not on its rim
    eroded = -torch.nn.functional.max_pool2d(-close.float()[None, None], 5, 1, 2)[0, 0] > 0.5
    region = eroded if eroded.any() else close
    rows, cols = torch.nonzero(region, as_tuple=True)  # row-major order
    r, c = rows[len(rows) // 2].item(), cols[len(rows) // 2].item()
    return (c + 0.5) / w, (r + 0.5) / h


def run_demo(seed: int = 7, size: int = 64, level: Optional[float] = None, steps: Optional[int] = None,
             model_path: Optional[str] = None, depth_model_path: Optional[str] = None,
             callback: Optional[Callable] = None) -> DemoResult:
    """Run the chain; see the module docstring. ``level`` is the artist bokeh level (conventions)."""
    from ..core.bokeh import render_bokeh
    from ..core.dit.loading import load_refocus_model
    from ..core.dit.sampler import refocus
    from ..core.focus import focus_from_point
    from .metrics import focus_plane_error, psnr
    from .scenes import make_scene

    scene = make_scene(seed, size, kind="layers")
    image = scene.image
    if depth_model_path:
        from ..core.depth import estimate_disparity, load_depth_model
        disparity = estimate_disparity(load_depth_model(depth_model_path), image)
    else:
        disparity = scene.disparity
    level = DEMO_LEVEL if level is None else float(level)
    h, w = image.shape[-2:]
    K = cv.level_to_K(level, h, w)
    far = focus_from_point(disparity, *_extreme_point(disparity, nearest=False))
    near = focus_from_point(disparity, *_extreme_point(disparity, nearest=True))

    blurred = render_bokeh(image, disparity, far.disparity, K, mode="classical")
    target = render_bokeh(image, disparity, near.disparity, K, mode="classical")
    model = load_refocus_model(model_path or "toy")
    kwargs = {} if steps is None else {"steps": int(steps)}
    out = refocus(model, blurred, disparity, near, K, seed=seed, callback=callback, **kwargs)

    metrics = {
        "psnr_refocused": float(psnr(out, target)[0]),
        "psnr_copy_input": float(psnr(blurred, target)[0]),
        "focus_error_refocused": float(focus_plane_error(out, scene.disparity, near.disparity, reference=image)[0]),
        "focus_error_copy_input": float(focus_plane_error(blurred, scene.disparity, near.disparity,
                                                          reference=image)[0]),
    }
    return DemoResult(image, disparity, blurred, out, target, far, near, K, level,
                      os.path.basename(str(model_path or "toy")), metrics)


def summary_table(result: DemoResult) -> str:
    """A markdown table of the demo's metrics (PSNR in dB against the simulator's render focused near)."""
    m = result.metrics
    return "\n".join([
        f"refocus from d_f = {float(result.input_focus.disparity[0]):.2f} to d_f = "
        f"{float(result.target_focus.disparity[0]):.2f}, level {result.level:g} (K = {result.K:.1f} px), "
        f"model {result.model}",
        "",
        "| output | PSNR vs target (dB) | focus-plane error |",
        "|---|---|---|",
        f"| copy the input (baseline) | {m['psnr_copy_input']:.2f} | {m['focus_error_copy_input']:.3f} |",
        f"| DiffCameraRefocus | {m['psnr_refocused']:.2f} | {m['focus_error_refocused']:.3f} |",
    ])


def save_contact_sheet(result: DemoResult, path: str, scale: int = 4) -> None:
    """Write a labelled PNG: all-in-focus | disparity | input (focus far) | refocused (focus near) | target."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..core.focus import draw_marker

    tiles = [
        ("all in focus", result.all_in_focus),
        ("disparity", result.disparity.expand(-1, 3, -1, -1)),
        ("input: focus far", draw_marker(result.input, result.input_focus.x, result.input_focus.y)),
        ("refocused: near", draw_marker(result.refocused, result.target_focus.x, result.target_focus.y)),
        ("target (simulator)", result.target),
    ]
    h, w = result.all_in_focus.shape[-2:]
    th, tw, label = h * scale, w * scale, 16
    sheet = Image.new("RGB", (tw * len(tiles), th + label), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, t) in enumerate(tiles):
        arr = (t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        sheet.paste(Image.fromarray(arr).resize((tw, th), Image.NEAREST), (i * tw, label))
        draw.text((i * tw + 3, 2), name, fill="black")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp.png"
    sheet.save(tmp)
    os.replace(tmp, path)

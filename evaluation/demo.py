"""The whole chain on a built-in scene, as ``diffcamera demo`` runs it (no download, CPU is enough).

scene (procedural, exact metric depth) → disparity (exact, or Depth Anything V2) → two focus points read from
the depth (the nearest and the farthest surface) → the "wrong" photo: the thin-lens reference render focused on
the far surface (a real lens's blur, not the pack's renderer) → DiffCameraRefocus asked to focus near, exactly as
the node runs it with ``input_focus`` / ``input_level`` left empty: the input's blur estimated, the physics
refocus, then the bundled toy DiT refining it → metrics against the thin-lens render focused near, next to the
baselines (copy the input, re-blur it) and the oracle (the layered render of the true all-in-focus image).
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
#: The ``--model`` value that runs the weight-free physics refocus alone.
PHYSICS = "physics"


@dataclass
class DemoResult:
    """Images ``[1,3,H,W]`` sRGB 0..1 (``refocused`` is ``None`` for the physics-only run), disparity
    ``[1,1,H,W]``, the input blur (true and estimated: focus disparity, K in px) and per-method metrics
    ``{method: {"psnr", "sharp_psnr", "sharpness"}}``."""

    all_in_focus: torch.Tensor
    disparity: torch.Tensor
    input: torch.Tensor
    physics: torch.Tensor
    refocused: Optional[torch.Tensor]
    target: torch.Tensor
    all_in_focus_estimate: torch.Tensor
    input_focus: Focus
    target_focus: Focus
    K: float
    level: float
    model: str
    estimated_input: tuple
    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)


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
             model_path: Optional[str] = None, depth_model_path: Optional[str] = None, denoise: float = 0.5,
             callback: Optional[Callable] = None) -> DemoResult:
    """Run the chain; see the module docstring. ``level`` is the artist bokeh level (conventions);
    ``model_path`` a refocus model (default the bundled toy; :data:`PHYSICS` for no model)."""
    from ..core.bokeh import render_bokeh
    from ..core.focus import focus_from_point
    from ..core.pipeline import RefocusPipeline
    from .metrics import in_focus_region, psnr, sharp_region_psnr, sharpness_ratio
    from .scenes import make_scene
    from .thin_lens import render_thin_lens

    scene = make_scene(seed, size, kind="layers")
    image = scene.image.float()
    if depth_model_path:
        from ..core.depth import estimate_disparity, load_depth_model
        disparity = estimate_disparity(load_depth_model(depth_model_path), image)
    else:
        disparity = scene.disparity.float()
    level = DEMO_LEVEL if level is None else float(level)
    h, w = image.shape[-2:]
    K = cv.level_to_K(level, h, w)
    far = focus_from_point(disparity, *_extreme_point(disparity, nearest=False))
    near = focus_from_point(disparity, *_extreme_point(disparity, nearest=True))

    photo = render_thin_lens(scene, float(far.disparity[0]), K).float()
    target = render_thin_lens(scene, float(near.disparity[0]), K).float()
    name = str(model_path or "toy")
    denoiser = None
    if name != PHYSICS:
        from ..core.dit.loading import load_refocus_model
        denoiser = load_refocus_model(name)
    kwargs = {} if steps is None else {"steps": int(steps)}
    out = RefocusPipeline(denoiser)(photo, disparity, near, K, seed=seed, denoise=denoise, callback=callback,
                                    **kwargs)
    outputs = {"copy the input (baseline)": photo,
               "re-blur the input (baseline)": render_bokeh(photo, disparity, near.disparity, K, mode="layered"),
               "physics (no model)": out.physics}
    if denoiser is not None:
        outputs[f"DiT refinement ({os.path.basename(name)})"] = out.image
    outputs["oracle (true all-in-focus, re-rendered)"] = render_bokeh(image, disparity, near.disparity, K,
                                                                      mode="layered")
    region = in_focus_region(scene.disparity.float(), near.disparity, K)
    metrics = {k: {"psnr": float(psnr(v, target)[0]), "sharp_psnr": float(sharp_region_psnr(v, target, region)[0]),
                   "sharpness": float(sharpness_ratio(v, target, region)[0])} for k, v in outputs.items()}
    estimated = (float(out.input_focus_disparity[0]), float(out.input_K[0]))
    return DemoResult(image, disparity, photo, out.physics, out.image if denoiser is not None else None, target,
                      out.all_in_focus, far, near, K, level, os.path.basename(name), estimated, metrics)


def summary_table(result: DemoResult) -> str:
    """A markdown table of the demo's metrics against the thin-lens render focused near (PSNR in dB; the sharp
    region is where the request is in focus; sharpness 1 = as sharp as the truth there)."""
    d_est, k_est = result.estimated_input
    lines = [f"refocus from d_f = {float(result.input_focus.disparity[0]):.2f} to d_f = "
             f"{float(result.target_focus.disparity[0]):.2f}, level {result.level:g} (K = {result.K:.1f} px), "
             f"model {result.model}",
             f"input blur estimated from the image: d_f = {d_est:.2f}, K = {k_est:.1f} px "
             f"(true: d_f = {float(result.input_focus.disparity[0]):.2f}, K = {result.K:.1f} px)",
             "",
             "| output | PSNR (dB) | sharp-region PSNR (dB) | sharpness ratio |",
             "|---|---|---|---|"]
    for name, m in result.metrics.items():
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['sharp_psnr']:.2f} | {m['sharpness']:.2f} |")
    return "\n".join(lines)


def save_contact_sheet(result: DemoResult, path: str, scale: int = 4) -> None:
    """Write a labelled PNG: input (focus far, its focus point marked) | physics | DiT refinement (when a model
    ran) | truth (thin lens, focus near) | all-in-focus estimate | disparity (the new focus point marked)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..core.focus import draw_marker

    tiles = [("input: focus far", draw_marker(result.input, result.input_focus.x, result.input_focus.y)),
             ("physics: focus near", result.physics)]
    if result.refocused is not None:
        tiles.append(("DiT refinement", result.refocused))
    tiles += [("truth (thin lens)", result.target),
              ("all-in-focus estimate", result.all_in_focus_estimate),
              ("depth, new focus point", draw_marker(result.disparity.expand(-1, 3, -1, -1), result.target_focus.x,
                                                     result.target_focus.y))]
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

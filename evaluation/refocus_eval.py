"""Refocus evaluation of trained toy models on unseen thin-lens scenes, next to the baselines and the oracle.

Cases (:func:`make_cases`): procedural scenes with seeds ``0 .. n−1`` (training uses ``procedural_seed = 1000``
and up), kinds cycled, at 64² by default, bokeh level 160 (``K = 10`` px). Each case has two focus planes, the
disparities at the 5 % and 95 % quantiles of the scene (each snapped to a pixel of that disparity, whose
position is the focus point); the input is focused on one and the request on the other, alternating far → near
and near → far. Input and truth are rendered by the thin-lens reference
(:func:`diffcamera.evaluation.thin_lens.render_thin_lens`), never by the renderer the model was trained on.

Methods (:func:`baseline_methods`, :func:`dit_method`), all given the true disparity and the input's true focus
and ``K``:

* ``copy``: the input unchanged;
* ``reblur``: the layered render of the input at the request (``render_bokeh(..., mode="layered")``);
* ``physics``: :func:`diffcamera.core.physics.refocus_physics` with the default solver (what the
  DiffCameraRefocus node runs without a model);
* a DiT: the physics estimate refined by the model exactly as :class:`diffcamera.core.pipeline.RefocusPipeline`
  does (conditioned on the estimate and started from it noised to ``denoise``); the physics stage is computed
  once per case and shared by every model evaluated;
* ``oracle``: the layered render of the true all-in-focus image (what a perfect deblurring would reach with the
  layered renderer).

Metrics (:mod:`diffcamera.evaluation.metrics`): PSNR and SSIM against the thin-lens truth, and the **sharp-region
PSNR**, inside the pixels the request puts in focus (``|K·(d − d_req)| < 1`` px): the region that must become
sharp, which copying or blurring cannot win. Tables give the median over cases (and the mean).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch

#: Bokeh level of the evaluation cases (px per 1024 px of long side): K = 10 px at 64².
LEVEL = 160.0
METRICS = ("psnr", "ssim", "sharp_psnr", "sharpness")


def make_cases(n: int = 24, size: int = 64, level: float = LEVEL, seed0: int = 0) -> List[Dict]:
    """Evaluation cases (see the module docstring): dicts with ``aif``, ``disparity``, ``input``, ``truth``
    (``[1,3|1,H,W]``), ``K``, ``d_in``, ``d_req`` and ``xy`` (the request's focus point)."""
    from ..core.conventions import level_to_K
    from .scenes import make_scene
    from .thin_lens import render_thin_lens
    kinds = ("layers", "slanted", "ground", "mixed")
    K = level_to_K(level, size, size)
    cases = []
    for i in range(n):
        scene = make_scene(seed0 + i, size=size, kind=kinds[i % len(kinds)])
        disp = scene.disparity.float()
        flat = disp.flatten()
        planes = []
        for q in (0.05, 0.95):
            j = int((flat - torch.quantile(flat, q)).abs().argmin())
            row, col = divmod(j, size)
            planes.append((float(flat[j]), ((col + 0.5) / size, (row + 0.5) / size)))
        (d_in, _), (d_req, xy) = planes if i % 2 == 0 else planes[::-1]
        cases.append({"seed": seed0 + i, "kind": scene.kind, "aif": scene.image.float(), "disparity": disp, "K": K,
                      "d_in": d_in, "d_req": d_req, "xy": xy,
                      "input": render_thin_lens(scene, d_in, K).float(),
                      "truth": render_thin_lens(scene, d_req, K).float()})
    return cases


def focus_of(case: Dict):
    """The request of a case as a :class:`~diffcamera.core.values.Focus`."""
    from ..core.values import Focus
    x, y = case["xy"]
    return Focus(torch.tensor([x]), torch.tensor([y]), torch.tensor([case["d_req"]]), ["point"])


def sharp_mask(case: Dict) -> torch.Tensor:
    """``[1,1,H,W]`` bool: where the request is in focus (:func:`diffcamera.evaluation.metrics.in_focus_region`)."""
    from .metrics import in_focus_region
    return in_focus_region(case["disparity"], case["d_req"], case["K"])


def score(output: torch.Tensor, case: Dict) -> Dict[str, float]:
    """PSNR, SSIM, sharp-region PSNR and sharpness ratio (:mod:`diffcamera.evaluation.metrics`) of one output
    against the case's truth."""
    from . import metrics as M
    out, truth, region = output.float().clamp(0, 1), case["truth"], sharp_mask(case)
    return {"psnr": float(M.psnr(out, truth)[0]), "ssim": float(M.ssim(out, truth)[0]),
            "sharp_psnr": float(M.sharp_region_psnr(out, truth, region)[0]),
            "sharpness": float(M.sharpness_ratio(out, truth, region)[0])}


def physics_of(case: Dict) -> torch.Tensor:
    """The physics refocus of a case (default solver, the input's true blur given); cached in the case."""
    if "physics" not in case:
        from ..core.physics import refocus_physics
        case["physics"] = refocus_physics(case["input"], case["disparity"], case["d_req"], case["K"],
                                          input_focus_disparity=case["d_in"], input_K=case["K"]).image
    return case["physics"]


def physics_estimated(case: Dict) -> torch.Tensor:
    """The physics refocus of a case with the input's focus and blur *estimated* from the image and its depth
    (what DiffCameraRefocus does when ``input_focus`` / ``input_level`` are left empty); the estimate is kept
    in ``case["estimate"]``."""
    from ..core.physics import refocus_physics
    res = refocus_physics(case["input"], case["disparity"], case["d_req"], case["K"])
    case["estimate"] = (float(res.input_focus_disparity[0]), float(res.input_K[0]))
    return res.image


#: Gaussian σ of :func:`soft_depth`, as a fraction of the long side.
SOFT_DEPTH_SIGMA = 1 / 128


def soft_depth(disparity: torch.Tensor) -> torch.Tensor:
    """``[B,1,H,W]`` the exact disparity with its edges softened like a depth model's (a Gaussian of σ =
    :data:`SOFT_DEPTH_SIGMA` of the long side: 2 px at 256²): what the refocus gets from DepthEstimate on a real
    photo, where no depth map has one-pixel steps."""
    from kornia.filters import gaussian_blur2d
    sigma = max(disparity.shape[-2:]) * SOFT_DEPTH_SIGMA
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur2d(disparity.float(), (k, k), (sigma, sigma), border_type="replicate").clamp(0, 1)


def physics_estimated_soft_depth(case: Dict) -> torch.Tensor:
    """:func:`physics_estimated` given :func:`soft_depth` instead of the exact depth (the blur estimate and the
    deconvolution both see the softened edges; the request's focus disparity is the case's own)."""
    from ..core.physics import refocus_physics
    return refocus_physics(case["input"], soft_depth(case["disparity"]), case["d_req"], case["K"]).image


def baseline_methods() -> Dict[str, Callable[[Dict], torch.Tensor]]:
    """``{name: fn(case) -> image}`` of the baselines and the oracle."""
    from ..core.bokeh import render_bokeh
    return {
        "copy": lambda c: c["input"],
        "reblur": lambda c: render_bokeh(c["input"], c["disparity"], c["d_req"], c["K"], mode="layered"),
        "physics": physics_of,
        "oracle": lambda c: render_bokeh(c["aif"], c["disparity"], c["d_req"], c["K"], mode="layered"),
    }


def dit_method(model, steps: int = 28, denoise: float = 0.5, seed: int = 0) -> Callable[[Dict], torch.Tensor]:
    """``fn(case) -> image``: the physics estimate refined by ``model``, as ``RefocusPipeline``'s second stage."""
    from ..core.dit.sampler import refocus

    def fn(case):
        phys = physics_of(case)
        with torch.no_grad():
            return refocus(model, phys, case["disparity"], focus_of(case), case["K"], steps=steps, seed=seed,
                           denoise=denoise, init_image=phys)
    return fn


def evaluate(methods: Dict[str, Callable[[Dict], torch.Tensor]], cases: List[Dict],
             keep_outputs: bool = False) -> Dict[str, Dict]:
    """Score every method on every case: ``{name: {"cases": [per-case metrics], "median": {...}, "mean": {...}}}``
    (plus ``"outputs"`` when ``keep_outputs``)."""
    res = {}
    for name, fn in methods.items():
        per, outs = [], []
        for c in cases:
            o = fn(c).float().clamp(0, 1)
            per.append(score(o, c))
            if keep_outputs:
                outs.append(o)
        res[name] = {"cases": per, "median": summary(per, "median"), "mean": summary(per, "mean")}
        if keep_outputs:
            res[name]["outputs"] = outs
    return res


def summary(per_case: List[Dict[str, float]], how: str = "median") -> Dict[str, float]:
    """Median (or mean) over cases of each metric; NaN values (an empty sharp region) are left out."""
    out = {}
    for k in METRICS:
        v = torch.tensor([p[k] for p in per_case], dtype=torch.float64)
        v = v[torch.isfinite(v)]
        out[k] = float("nan") if v.numel() == 0 else float(v.median() if how == "median" else v.mean())
    return out


def table(results: Dict[str, Dict], how: str = "median") -> str:
    """A markdown table of :func:`evaluate` results."""
    lines = [f"| method | PSNR dB ({how}) | SSIM | sharp-region PSNR dB | sharpness ratio |", "|---|---|---|---|---|"]
    for name, r in results.items():
        s = r[how]
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['sharp_psnr']:.2f} | {s['sharpness']:.2f} |")
    return "\n".join(lines)


def contact_sheet(results: Dict[str, Dict], cases: List[Dict], names: Optional[List[str]] = None,
                  count: int = 8, scale: int = 2) -> torch.Tensor:
    """``[1,3,H',W']``: one row per case (the first ``count``), columns input | methods … | truth, upscaled by
    ``scale`` (nearest) so block artefacts stay visible. Needs :func:`evaluate` with ``keep_outputs``."""
    names = names or list(results)
    rows = []
    for i, c in enumerate(cases[:count]):
        cols = [c["input"]] + [results[n]["outputs"][i] for n in names] + [c["truth"]]
        rows.append(torch.cat([x.float().clamp(0, 1) for x in cols], -1))
    sheet = torch.cat(rows, -2)
    return torch.nn.functional.interpolate(sheet, scale_factor=scale, mode="nearest") if scale > 1 else sheet


def spread(values: List[float]) -> str:
    """``mean ± half-range`` of a few seeds' values (the spread of 2 seeds is their half difference)."""
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "nan"
    m = sum(v) / len(v)
    return f"{m:.2f} ± {(max(v) - min(v)) / 2:.2f}"

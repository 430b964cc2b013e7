"""Refocus evaluation of trained toy models on unseen procedural scenes, next to the copy-the-input baseline.

Cases: procedural scenes with seeds ``0 .. n−1`` (training uses ``procedural_seed = 1000`` and up), kinds
cycled, at the training size. For each: an input focused at a random pixel's disparity ``d_in`` and a requested
focus point with disparity ``d_req`` (``|d_req − d_in| >= 0.2`` when the scene allows), one bokeh level; input
and truth are rendered by the thin-lens reference (:func:`diffcamera.core.thin_lens.render_thin_lens`), never by
the training renderer. Measures (``core.metrics`` of ``diffcamera bench``):

* ``psnr``: PSNR of the output against the thin-lens truth at ``d_req`` (dB, higher is better);
* ``fpe``: focus-plane error, ``core.metrics.focus_plane_error(output, disparity, d_req, reference=AIF)``: how
  far (in disparity) the sharpest plane of the output is from the requested one (lower is better);
* ``lvcorr``: ``core.metrics.lvcorr`` over bokeh levels with a fixed focus (Pearson correlation of K with the
  Laplacian-variance trend; 1 = blur grows monotonically with the level);
* the same with **corrupted depth** given to the model (Gaussian-blurred, noisy disparity; the truth keeps the
  exact depth): robustness to bad depth maps, what depth dropout is for.

The copy baseline returns the input unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F


def corrupt_disparity(disparity: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A plausibly bad depth map: Gaussian blur (σ = 2.5 % of the size) + noise (σ = 0.05), clamped to 0..1."""
    from kornia.filters import gaussian_blur2d
    s = max(1.0, 0.025 * max(disparity.shape[-2:]))
    k = int(2 * math.ceil(3 * s) + 1)
    g = torch.Generator().manual_seed(seed)
    blurred = gaussian_blur2d(disparity, (k, k), (s, s), border_type="replicate")
    return (blurred + 0.05 * torch.randn(disparity.shape, generator=g)).clamp(0, 1)


def make_cases(n: int = 24, size: int = 64, levels=(64.0, 128.0, 192.0), seed0: int = 0) -> List[Dict]:
    """Evaluation cases (see the module docstring)."""
    from ..core.conventions import level_to_K
    from ..evaluation.scenes import make_scene
    from ..evaluation.thin_lens import render_thin_lens
    kinds = ("layers", "slanted", "ground", "mixed")
    cases = []
    for i in range(n):
        seed = seed0 + i
        scene = make_scene(seed, size=size, kind=kinds[i % len(kinds)])
        disp = scene.disparity.float()
        g = torch.Generator().manual_seed(10_000 + seed)
        flat = disp.flatten()

        def pick():
            j = int(torch.randint(flat.numel(), (), generator=g))
            return j, float(flat[j])
        _, d_in = pick()
        for _ in range(32):
            j, d_req = pick()
            if abs(d_req - d_in) >= 0.2:
                break
        row, col = divmod(j, size)
        K = level_to_K(levels[i % len(levels)], size, size)
        cases.append({"scene": scene, "disparity": disp, "aif": scene.image.float(), "K": K, "d_in": d_in,
                      "d_req": d_req, "xy": ((col + 0.5) / size, (row + 0.5) / size),
                      "input": render_thin_lens(scene, d_in, K).float(),
                      "truth": render_thin_lens(scene, d_req, K).float()})
    return cases


def _focus(case, disparity):
    from ..core.conventions import point_to_pixel
    from ..core.values import Focus
    x, y = case["xy"]
    r, c = point_to_pixel(x, y, *disparity.shape[-2:])
    d = float(disparity[0, 0, r, c])
    return Focus(torch.tensor([x]), torch.tensor([y]), torch.tensor([d]), ["point"])


class _LocalMetrics:
    """Stand-ins used only while ``core.metrics`` (``diffcamera bench``) is absent from the tree.

    ``focus_plane_error``: the disparity of the 8-quantile depth band where the output keeps the largest
    fraction of the reference's Laplacian energy, minus the requested one (absolute). ``lvcorr``: Pearson
    correlation between K and the *negated* Laplacian variance (1 = blur grows with K).
    """

    @staticmethod
    def psnr(a, b):
        mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        return 10 * torch.log10(1.0 / mse)

    @staticmethod
    def _lap(img):
        from kornia.filters import laplacian
        return laplacian(img.mean(1, keepdim=True), 3) ** 2

    @classmethod
    def laplacian_variance(cls, img):
        from kornia.filters import laplacian
        return laplacian(img.mean(1, keepdim=True), 3).flatten(1).var(1)

    @classmethod
    def focus_plane_error(cls, image, disparity, requested, reference=None):
        e_out = cls._lap(image)
        e_ref = cls._lap(reference) if reference is not None else torch.ones_like(e_out)
        d = disparity.flatten()
        qs = torch.quantile(d, torch.linspace(0, 1, 9))
        best, best_d = -1.0, float(d.median())
        for lo, hi in zip(qs[:-1], qs[1:]):
            sel = ((disparity >= lo) & (disparity <= hi))
            if sel.sum() < 8:
                continue
            ratio = float(e_out[sel].sum() / e_ref[sel].sum().clamp_min(1e-8))
            if ratio > best:
                best, best_d = ratio, float(disparity[sel].median())
        return torch.tensor([abs(best_d - float(requested))])

    @classmethod
    def lvcorr(cls, images, Ks):
        lv = torch.tensor([float(cls.laplacian_variance(i)[0]) for i in images])
        k = torch.tensor([float(x) for x in Ks])
        a, b = k - k.mean(), -(lv - lv.mean())
        return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _metrics():
    import importlib
    try:
        return importlib.import_module("diffcamera.evaluation.metrics")
    except ModuleNotFoundError as exc:
        if exc.name != "diffcamera.evaluation.metrics":
            raise
        return _LocalMetrics


def evaluate(fn: Callable, cases: List[Dict], corrupt: bool = False) -> Dict[str, float]:
    """Median PSNR and focus-plane error of ``fn(image, disparity, focus, K)`` over ``cases``."""
    metrics = _metrics()
    psnrs, fpes = [], []
    for i, c in enumerate(cases):
        disp_in = corrupt_disparity(c["disparity"], seed=i) if corrupt else c["disparity"]
        out = fn(c["input"], disp_in, _focus(c, disp_in), c["K"]).float().clamp(0, 1)
        psnrs.append(float(metrics.psnr(out, c["truth"])[0]))
        fpes.append(float(metrics.focus_plane_error(out, c["disparity"], c["d_req"], reference=c["aif"])[0]))
    t = torch.tensor
    f = t(fpes)
    return {"psnr": float(t(psnrs).median()), "fpe": float(f.nanmedian()), "psnr_mean": float(t(psnrs).mean()),
            "fpe_mean": float(f.nanmean()), "fpe_undefined": int(f.isnan().sum()), "n": len(cases)}


def evaluate_lvcorr(fn: Callable, cases: List[Dict], levels=(0.0, 32.0, 64.0, 128.0, 192.0, 256.0),
                    corrupt: bool = False) -> float:
    """Mean over scenes of ``metrics.lvcorr`` for outputs at increasing levels, focus fixed at ``d_req``,
    input = the all-in-focus image."""
    metrics = _metrics()
    from ..core.conventions import level_to_K
    vals = []
    for i, c in enumerate(cases):
        disp_in = corrupt_disparity(c["disparity"], seed=i) if corrupt else c["disparity"]
        h, w = c["aif"].shape[-2:]
        Ks = [level_to_K(lv, h, w) for lv in levels]
        outs = [fn(c["aif"], disp_in, _focus(c, disp_in), K).float().clamp(0, 1) for K in Ks]
        v = float(metrics.lvcorr(outs, Ks))
        if math.isfinite(v):
            vals.append(v)
    return sum(vals) / max(1, len(vals))


def model_fn(model, steps: int = 20, seed: int = 0) -> Callable:
    """A refocus callable over D's sampler."""
    from ..core.dit.sampler import refocus

    def fn(image, disparity, focus, K):
        with torch.no_grad():
            return refocus(model, image, disparity, focus, K, steps=steps, seed=seed)
    return fn


def copy_fn(image, disparity, focus, K):
    """The copy-the-input baseline."""
    return image

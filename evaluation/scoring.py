"""Scoring suites: bokeh renderers and refocus models scored against thin-lens ground truth.

What ``diffcamera bench --suite bokeh|refocus`` runs (quality; the speed and memory benchmarks are the scripts in
``benchmarks/``). The **scoring set** is a fixed list of procedural scenes (:mod:`diffcamera.evaluation.scenes`,
fixed seeds), each with two focus points on different surfaces (focus disparities ``d1``, ``d2``) and a bokeh
level; ``K`` follows :func:`conventions.level_to_K` at the scoring size (``256²`` by default). Ground truth comes from
:func:`diffcamera.evaluation.thin_lens.render_thin_lens` and is cached on disk (``$DIFFCAMERA_CACHE`` or
``~/.cache/diffcamera/bench``; safetensors only).

Tasks
-----
* ``bokeh``   (bokeh addition) all-in-focus image -> thin-lens render focused at ``d1``.
* ``refocus`` thin-lens render at ``d1`` -> thin-lens render at ``d2`` (same K).
* ``deblur``  thin-lens render at ``d1`` -> all-in-focus image (a refocus with ``K = 0``).

Suites
------
* ``"bokeh"``: every known bokeh renderer (``fn(image, disparity, focus_disparity, K) -> image``): the
  gather-and-mix baseline (:func:`gather_and_mix`, what today's ComfyUI depth-of-field nodes do), and
  ``core.bokeh.render_bokeh`` modes ``classical`` / ``layered``, on the bokeh task with PSNR, SSIM,
  edge-band PSNR, MAE/255, LVCorr (over a K sweep) and time per image.
* ``"refocus"``: refocus models (``fn(image, disparity, focus: values.Focus, K) -> image``): ``copy-input``,
  ``reblur-input`` (classical blur applied to the defocused input), ``oracle-classical`` / ``oracle-layered``
  (``render_bokeh`` from the true all-in-focus image: what a model that perfectly learned that simulator and
  perfectly deblurred could reach), models registered with
  :func:`register_refocus_model`, and DiffCamera checkpoints (``model_paths``); all three tasks, focus-plane error,
  LVCorr, and the refocus task again with corrupted depth (blurred, noisy, shifted).

Images are ``[B,3,H,W]`` sRGB ``0..1``, disparity ``[B,1,H,W]`` near = 1 (:mod:`diffcamera.core.conventions`).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..core import conventions as cv
from . import metrics as M
from ..core.values import Focus

Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]
BokehFn = Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]
RefocusFn = Callable[[torch.Tensor, torch.Tensor, Focus, Union[float, torch.Tensor]], torch.Tensor]

#: (kind, seed, bokeh level in px per 1024 px of long side) of the scoring set, in order.
CASES: Tuple[Tuple[str, int, float], ...] = (
    ("layers", 101, 48.0), ("mixed", 102, 48.0), ("slanted", 103, 40.0),
    ("ground", 104, 56.0), ("layers", 105, 64.0), ("mixed", 106, 40.0),
)
#: K sweep for LVCorr, as multiples of the case's K.
SWEEP = (0.0, 0.5, 1.0, 1.5)
#: How many cases (the first ones) get the LVCorr sweep.
SWEEP_CASES = 3
#: Bumped whenever the scenes or the thin-lens renderer change what they produce (invalidates the cache).
GT_VERSION = "3"
SUITES = ("bokeh", "refocus")


# ----------------------------------------------------------------------------------------- cases
@dataclass
class ScoringCase:
    """One scoring case. ``point1/2`` are normalised ``(x, y)``; ``d1/d2`` the disparities there."""

    name: str
    scene: object
    level: float
    K: float
    d1: float
    d2: float
    point1: Tuple[float, float]
    point2: Tuple[float, float]

    def focus(self, which: int = 1, disparity: Optional[torch.Tensor] = None) -> Focus:
        """:class:`Focus` at point ``which``; its disparity is read from ``disparity`` when given (else exact)."""
        x, y = self.point1 if which == 1 else self.point2
        d = self.d1 if which == 1 else self.d2
        if disparity is not None:
            from ..core.focus import focus_from_point
            return focus_from_point(disparity, x, y)
        return Focus(torch.tensor([x]), torch.tensor([y]), torch.tensor([float(d)]), ["point"])


def _pick_points(scene, seed: int) -> Tuple[Tuple[float, float], Tuple[float, float], float, float]:
    """Two focus points on well-separated surfaces, away from depth edges (deterministic)."""
    disp = scene.disparity
    h, w = disp.shape[-2:]
    ok = ~M.edge_band(disp, max(1, min(h, w) // 64))[0, 0]
    margin = max(2, min(h, w) // 16)
    ok[:margin] = False
    ok[-margin:] = False
    ok[:, :margin] = False
    ok[:, -margin:] = False
    idx = torch.nonzero(ok)
    d = disp[0, 0][idx[:, 0], idx[:, 1]]
    if idx.numel() == 0 or float(d.max() - d.min()) < 0.1:  # tiny image: allow any pixel
        idx = torch.nonzero(torch.ones(h, w, dtype=torch.bool))
        d = disp[0, 0][idx[:, 0], idx[:, 1]]
    g = torch.Generator().manual_seed(seed)
    # first point: a random surface pixel, second: a random pixel at least 0.3 away in disparity if possible
    i1 = int(torch.randint(idx.shape[0], (), generator=g))
    far = torch.nonzero((d - d[i1]).abs() > 0.3).flatten()
    if far.numel() == 0:
        i2 = int((d - d[i1]).abs().argmax())
    else:
        i2 = int(far[int(torch.randint(far.numel(), (), generator=g))])
    pts = []
    for i in (i1, i2):
        r, c = int(idx[i, 0]), int(idx[i, 1])
        pts.append(((c + 0.5) / w, (r + 0.5) / h))
    return pts[0], pts[1], float(d[i1]), float(d[i2])


def scoring_cases(size: Union[int, Tuple[int, int]] = 256, n: Optional[int] = None) -> List[ScoringCase]:
    """The scoring set at ``size`` (first ``n`` cases of :data:`CASES`)."""
    from .scenes import make_scene
    out = []
    for kind, seed, level in CASES[: n or len(CASES)]:
        sc = make_scene(seed, size, kind)
        h, w = sc.size
        p1, p2, d1, d2 = _pick_points(sc, seed)
        out.append(ScoringCase(f"{kind}-{seed}", sc, level, cv.level_to_K(level, h, w), d1, d2, p1, p2))
    return out


# ------------------------------------------------------------------------------------ ground truth
def cache_dir() -> str:
    return os.environ.get("DIFFCAMERA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "diffcamera", "bench"))


def ground_truth(case: ScoringCase, focus_disparity: float, K: float, use_cache: bool = True) -> torch.Tensor:
    """Thin-lens render ``[1,3,H,W]`` of the case's scene (cached on disk as safetensors)."""
    from .thin_lens import render_thin_lens
    if K == 0:
        return case.scene.image
    h, w = case.scene.size
    key = f"{case.name}_{h}x{w}_d{focus_disparity:.6f}_K{K:.4f}_v{GT_VERSION}.safetensors"
    path = os.path.join(cache_dir(), key)
    if use_cache and os.path.isfile(path):
        try:
            from safetensors.torch import load_file
            return load_file(path)["image"]
        except Exception:  # a broken cache file: render again
            pass
    img = render_thin_lens(case.scene, focus_disparity, K)
    if use_cache:
        try:
            from safetensors.torch import save_file
            os.makedirs(cache_dir(), exist_ok=True)
            tmp = path + f".tmp{os.getpid()}"
            save_file({"image": img.contiguous()}, tmp)
            os.replace(tmp, path)
        except OSError:
            pass
    return img


# ----------------------------------------------------------------------------- gather-and-mix baseline
def _disk_blur_fft(image: torch.Tensor, radius: float) -> torch.Tensor:
    """Blur ``[B,C,H,W]`` with an antialiased disk of ``radius`` px (reflect-padded, via FFT)."""
    if radius < 0.5:
        return image
    r = int(math.ceil(radius + 0.5))
    h, w = image.shape[-2:]
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.pad(image, (r, r, r, r), mode=mode)
    ph, pw = x.shape[-2:]
    yy = torch.arange(-r, r + 1, dtype=torch.float32)
    dist = torch.sqrt(yy.view(-1, 1) ** 2 + yy.view(1, -1) ** 2)
    k = torch.clamp(radius + 0.5 - dist, 0, 1)
    k = k / k.sum()
    kp = torch.zeros(ph, pw)
    kp[: 2 * r + 1, : 2 * r + 1] = k
    kp = torch.roll(kp, (-r, -r), (0, 1))
    out = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(kp), s=(ph, pw))
    return out[..., r:r + h, r:r + w]


def gather_and_mix(image: torch.Tensor, disparity: torch.Tensor, focus_disparity, K, levels: int = 6) -> torch.Tensor:
    """The baseline most ComfyUI depth-of-field nodes implement: blur a few copies, mix them per pixel.

    ``levels`` copies of the whole sRGB image are disk-blurred with radii evenly spaced in ``0..r_max`` and each
    pixel linearly mixes the two copies whose radius brackets its own ``r = K·|d − d_f|`` (the project
    convention). No occlusion handling and no linear light: sharp foregrounds halo into blurred backgrounds,
    blurred foregrounds cannot reveal what is behind them, highlights stay dull.
    Shapes as :func:`diffcamera.core.bokeh.render_bokeh`; returns ``[B,3,H,W]`` sRGB.
    """
    b = image.shape[0]
    disparity = disparity.expand(b, -1, -1, -1)
    coc = cv.signed_coc(disparity.float(), focus_disparity, K).abs()
    outs = []
    for i in range(b):
        r = coc[i:i + 1]
        rmax = float(r.max())
        if rmax < 0.5:
            outs.append(image[i:i + 1].clone())
            continue
        radii = [rmax * k / (levels - 1) for k in range(levels)]
        t = (r / rmax * (levels - 1)).clamp(0, levels - 1)
        lo = t.floor().clamp_max(levels - 2)
        frac = t - lo
        acc = torch.zeros_like(image[i:i + 1])
        for k, rad in enumerate(radii):
            wk = torch.where(lo == k, 1 - frac, torch.zeros_like(frac)) + torch.where(lo == k - 1, frac,
                                                                                        torch.zeros_like(frac))
            if bool((wk > 0).any()):
                acc = acc + wk * _disk_blur_fft(image[i:i + 1].float(), rad)
        outs.append(acc.clamp(0, 1))
    return torch.cat(outs)


# ------------------------------------------------------------------------------------------ registry
_BOKEH: Dict[str, Callable[[], BokehFn]] = {}
_REFOCUS: Dict[str, Callable[[], RefocusFn]] = {}


def register_bokeh_renderer(name: str, fn_factory: Callable[[], BokehFn]) -> None:
    """Add a bokeh renderer to the ``"bokeh"`` suite. ``fn_factory()`` returns ``fn(image, disparity, d_f, K)``;
    it may raise ImportError/NotImplementedError to be skipped with a note."""
    _BOKEH[name] = fn_factory


def register_refocus_model(name: str, fn_factory: Callable[[], RefocusFn]) -> None:
    """Add a refocus model to the ``"refocus"`` suite. ``fn_factory()`` returns
    ``fn(image [B,3,H,W], disparity [B,1,H,W], focus: Focus, K) -> [B,3,H,W]``. A returned callable with the
    attribute ``needs_aif = True`` also receives ``aif=`` (the true all-in-focus image: for oracles only)."""
    _REFOCUS[name] = fn_factory


def _render_bokeh_factory(mode: str) -> Callable[[], BokehFn]:
    def factory():
        from ..core.bokeh import render_bokeh

        def fn(image, disparity, focus_disparity, K):
            return render_bokeh(image, disparity, focus_disparity, K, mode=mode)
        return fn
    return factory


register_bokeh_renderer("gather-mix", lambda: gather_and_mix)
register_bokeh_renderer("classical", _render_bokeh_factory("classical"))
register_bokeh_renderer("layered", _render_bokeh_factory("layered"))


def _copy_input():
    return lambda image, disparity, focus, K: image.clone()


def _reblur_input():
    bokeh = _render_bokeh_factory("classical")()

    def fn(image, disparity, focus, K):
        return bokeh(image, disparity, focus.disparity, K)
    return fn


def _oracle(mode: str):
    def factory():
        bokeh = _render_bokeh_factory(mode)()

        def fn(image, disparity, focus, K, aif=None):
            return bokeh(aif if aif is not None else image, disparity, focus.disparity, K)
        fn.needs_aif = True
        return fn
    return factory


def _physics():
    """The weight-free physics refocus, as DiffCameraRefocus runs it without a model (the input's blur estimated)."""
    from ..core.pipeline import RefocusPipeline
    pipe = RefocusPipeline()
    return lambda image, disparity, focus, K: pipe(image, disparity, focus, K).image


register_refocus_model("copy-input", _copy_input)
register_refocus_model("reblur-input", _reblur_input)
register_refocus_model("physics", _physics)
register_refocus_model("oracle-classical", _oracle("classical"))
register_refocus_model("oracle-layered", _oracle("layered"))


def dit_model_factory(path: str, steps: int = 8, seed: int = 0, guidance: float = 1.0,
                      denoise: float = 0.5) -> Callable[[], RefocusFn]:
    """Factory for a DiffCamera checkpoint (``"toy"``, a whole-model file/folder), run as DiffCameraRefocus runs it:
    :class:`~diffcamera.core.pipeline.RefocusPipeline` (physics with the input's blur estimated, then the model
    refining it from ``denoise``)."""
    def factory():
        from ..core.dit.loading import load_refocus_model
        from ..core.pipeline import RefocusPipeline
        pipe = RefocusPipeline(load_refocus_model(path))

        def fn(image, disparity, focus, K):
            return pipe(image, disparity, focus, K, steps=steps, seed=seed, guidance=guidance, denoise=denoise).image
        return fn
    return factory


# ------------------------------------------------------------------------------------ corrupted depth
def corrupt_depth(disparity: torch.Tensor, how: str, seed: int = 0) -> torch.Tensor:
    """Deliberately wrong depth: ``"blurred"`` (Gaussian, sigma = size/64), ``"noisy"`` (+N(0, 0.05)),
    ``"shifted"`` (moved by size/32 px right and down, edges replicated). ``[B,1,H,W]`` in ``0..1``."""
    h, w = disparity.shape[-2:]
    s = min(h, w)
    if how == "blurred":
        from kornia.filters import gaussian_blur2d
        sigma = max(1.0, s / 64)
        k = int(2 * math.ceil(3 * sigma) + 1)
        return gaussian_blur2d(disparity, (k, k), (sigma, sigma), border_type="replicate").clamp(0, 1)
    if how == "noisy":
        g = torch.Generator().manual_seed(seed)
        return (disparity + 0.05 * torch.randn(disparity.shape, generator=g)).clamp(0, 1)
    if how == "shifted":
        t = max(1, s // 32)
        return F.pad(disparity, (t, 0, t, 0), mode="replicate")[..., :h, :w]
    raise ValueError(f"unknown depth corruption {how!r}; use blurred, noisy or shifted")


CORRUPTIONS = ("blurred", "noisy", "shifted")


# --------------------------------------------------------------------------------------------- runner
def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out.float().clamp(0, 1), time.perf_counter() - t


def _quality(out, target, disparity) -> dict:
    return {"psnr": float(M.psnr(out, target)[0]), "ssim": float(M.ssim(out, target)[0]),
            "edge_psnr": float(M.edge_band_psnr(out, target, disparity)[0]),
            "mae255": float(M.mae_255(out, target)[0])}


def _load(factories: Dict[str, Callable], names: Optional[Sequence[str]], log) -> Dict[str, Callable]:
    fns = {}
    for name in (names if names is not None else list(factories)):
        if name not in factories:
            raise ValueError(f"unknown entry {name!r}; known: {', '.join(factories)}")
        try:
            fns[name] = factories[name]()
        except (ImportError, NotImplementedError, FileNotFoundError) as exc:
            log(f"note: skipping {name}: {exc}")
    return fns


def _mean(rows: List[dict], key: str) -> float:
    return M.summarize([r[key] for r in rows if key in r])


def _truth_row(cases, key: str, which: int, use_cache: bool) -> dict:
    """Reference row: the thin-lens truth scored against itself (LVCorr over the same sweep, render time)."""
    lv = []
    for c in cases[:SWEEP_CASES]:
        d = c.d1 if which == 1 else c.d2
        sweep = [ground_truth(c, d, f * c.K, use_cache) for f in SWEEP]
        lv.append(M.lvcorr(sweep, [f * c.K for f in SWEEP]))
    from .thin_lens import render_thin_lens
    c = cases[0]
    t = time.perf_counter()
    render_thin_lens(c.scene, c.d1 if which == 1 else c.d2, c.K)
    dt = time.perf_counter() - t
    return {key: "thin-lens (truth)", "psnr": float("inf"), "ssim": 1.0, "edge_psnr": float("inf"), "mae255": 0.0,
            "fpe": float("nan"), "lvcorr": M.summarize(lv), "time_s": dt}


def _bokeh_suite(cases, renderers, use_cache, tick, log) -> dict:
    rows, per_case, images = [], [], {}
    gts = [ground_truth(c, c.d1, c.K, use_cache) for c in cases]
    rows.append(_truth_row(cases, "renderer", 1, use_cache))
    tick()
    for name, fn in renderers.items():
        recs = []
        try:
            for ci, (c, gt) in enumerate(zip(cases, gts)):
                out, dt = _timed(fn, c.scene.image, c.scene.disparity, c.d1, c.K)
                rec = {"renderer": name, "case": c.name, "time_s": dt, **_quality(out, gt, c.scene.disparity)}
                if ci < SWEEP_CASES:
                    sweep = []
                    for f in SWEEP:
                        if f == 1.0:
                            sweep.append(out)
                        elif f == 0.0:
                            sweep.append(fn(c.scene.image, c.scene.disparity, c.d1, 0.0).float())
                        else:
                            sweep.append(fn(c.scene.image, c.scene.disparity, c.d1, f * c.K).float())
                    rec["lvcorr"] = M.lvcorr(sweep, [f * c.K for f in SWEEP])
                recs.append(rec)
                images[(name, c.name)] = out
                tick()
        except Exception as exc:  # a renderer that fails is reported, the suite goes on
            log(f"note: {name} failed: {type(exc).__name__}: {exc}")
            continue
        per_case += recs
        rows.append({"renderer": name, **{k: _mean(recs, k) for k in ("psnr", "ssim", "edge_psnr", "mae255",
                                                                       "lvcorr", "time_s")}})
    columns = [("renderer", "renderer"), ("psnr", "PSNR dB"), ("ssim", "SSIM"), ("edge_psnr", "edge PSNR dB"),
               ("mae255", "MAE/255"), ("lvcorr", "LVCorr"), ("time_s", "time s/img")]
    sheet = [("input (AIF)", [c.scene.image for c in cases]), ("disparity", [c.scene.disparity.expand(1, 3, -1, -1)
                                                                           for c in cases]),
             ("thin lens (truth)", gts)]
    sheet += [(n, [images[(n, c.name)] for c in cases]) for n in renderers if (n, cases[0].name) in images]
    return {"rows": rows, "per_case": per_case, "columns": columns, "sheet": sheet}


def _refocus_suite(cases, models, use_cache, tick, log) -> dict:
    rows, per_case, images, corrupt_rows = [], [], {}, []
    src = [ground_truth(c, c.d1, c.K, use_cache) for c in cases]
    tgt = [ground_truth(c, c.d2, c.K, use_cache) for c in cases]
    truth = _truth_row(cases, "model", 2, use_cache)
    truth["task"] = "refocus"
    truth["fpe"] = M.summarize([float(M.focus_plane_error(t, c.scene.disparity, c.d2, reference=c.scene.image)[0])
                                for c, t in zip(cases, tgt)])
    rows.append(truth)
    tick()
    for name, fn in models.items():
        needs_aif = bool(getattr(fn, "needs_aif", False))

        def call(c, image, disparity, focus, K):
            kw = {"aif": c.scene.image} if needs_aif else {}
            return _timed(fn, image, disparity, focus, K, **kw)
        recs = {t: [] for t in ("bokeh", "refocus", "deblur")}
        crecs = {k: [] for k in CORRUPTIONS}
        try:
            for ci, c in enumerate(cases):
                disp = c.scene.disparity
                f1, f2 = c.focus(1), c.focus(2)
                # refocus d1 -> d2
                out, dt = call(c, src[ci], disp, f2, c.K)
                rec = {"model": name, "task": "refocus", "case": c.name, "time_s": dt, **_quality(out, tgt[ci], disp),
                       "fpe": float(M.focus_plane_error(out, disp, c.d2, reference=c.scene.image)[0])}
                images[(name, c.name)] = out
                if ci < SWEEP_CASES:
                    sweep = [call(c, src[ci], disp, f2, f * c.K)[0] if f != 1.0 else out for f in SWEEP]
                    rec["lvcorr"] = M.lvcorr(sweep, [f * c.K for f in SWEEP])
                recs["refocus"].append(rec)
                # bokeh addition AIF -> d1
                out, dt = call(c, c.scene.image, disp, f1, c.K)
                gt1 = src[ci]
                recs["bokeh"].append({"model": name, "task": "bokeh", "case": c.name, "time_s": dt,
                                      **_quality(out, gt1, disp),
                                      "fpe": float(M.focus_plane_error(out, disp, c.d1, reference=c.scene.image)[0])})
                # deblur d1 -> AIF
                out, dt = call(c, src[ci], disp, f1, 0.0)
                recs["deblur"].append({"model": name, "task": "deblur", "case": c.name, "time_s": dt,
                                       **_quality(out, c.scene.image, disp)})
                # refocus with corrupted depth; the focus disparity is read from the corrupted map
                for how in CORRUPTIONS:
                    bad = corrupt_depth(disp, how, seed=ci)
                    out, dt = call(c, src[ci], bad, c.focus(2, bad), c.K)
                    crecs[how].append({"psnr": float(M.psnr(out, tgt[ci])[0]),
                                       "fpe": float(M.focus_plane_error(out, disp, c.d2, reference=c.scene.image)[0])})
                tick()
        except Exception as exc:
            log(f"note: {name} failed: {type(exc).__name__}: {exc}")
            continue
        for task, rs in recs.items():
            per_case += rs
            row = {"model": name, "task": task}
            for k in ("psnr", "ssim", "edge_psnr", "mae255", "fpe", "lvcorr", "time_s"):
                row[k] = _mean(rs, k) if any(k in r for r in rs) else float("nan")
            rows.append(row)
        for how, rs in crecs.items():
            corrupt_rows.append({"model": name, "depth": how, "psnr": _mean(rs, "psnr"), "fpe": _mean(rs, "fpe")})
    columns = [("model", "model"), ("task", "task"), ("psnr", "PSNR dB"), ("ssim", "SSIM"),
               ("edge_psnr", "edge PSNR dB"), ("mae255", "MAE/255"), ("fpe", "focus err"), ("lvcorr", "LVCorr"),
               ("time_s", "time s/img")]
    sheet = [("input (focus d1)", src), ("truth (focus d2)", tgt)]
    sheet += [(n, [images[(n, c.name)] for c in cases]) for n in models if (n, cases[0].name) in images]
    return {"rows": rows, "per_case": per_case, "columns": columns, "sheet": sheet,
            "corrupted_depth": corrupt_rows}


def markdown_table(rows: List[dict], columns: Sequence[Tuple[str, str]]) -> str:
    """Rows of dicts -> a markdown table (floats with 3 significant decimals; NaN as '–')."""
    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return "–"
            if abs(v) == float("inf"):
                return "inf"
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)
    head = "| " + " | ".join(t for _, t in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k, float("nan"))) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep] + body)


def contact_sheet(sheet: Sequence[Tuple[str, Sequence[torch.Tensor]]], path: str, max_rows: int = 4) -> str:
    """Write a PNG grid: one column per entry of ``sheet`` (label, images per case), one row per case."""
    import numpy as np
    from PIL import Image, ImageDraw
    cols = len(sheet)
    rows = min(max_rows, len(sheet[0][1]))
    h, w = sheet[0][1][0].shape[-2:]
    label_h = 16
    canvas = Image.new("RGB", (cols * (w + 4) + 4, label_h + rows * (h + 4) + 4), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for j, (label, imgs) in enumerate(sheet):
        x = 4 + j * (w + 4)
        draw.text((x, 2), label[: max(4, w // 6)], fill=(230, 230, 230))
        for i in range(rows):
            arr = (imgs[i][0].detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(arr), (x, label_h + 4 + i * (h + 4)))
    canvas.save(path)
    return path


def _clean(v):
    """JSON-safe copy: NaN -> None, +-inf -> "inf"/"-inf"."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float):
        if v != v:
            return None
        if abs(v) == float("inf"):
            return "inf" if v > 0 else "-inf"
    return v


def _free_path(path: str, overwrite: bool) -> str:
    if overwrite or not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    i = 2
    while os.path.exists(f"{stem}_{i}{ext}"):
        i += 1
    return f"{stem}_{i}{ext}"


def run_suite(name: str, size: Union[int, Tuple[int, int]] = 256, *, out_dir: Optional[str] = None,
              cases: Optional[int] = None, renderers: Optional[Sequence[str]] = None,
              models: Optional[Sequence[str]] = None, model_paths: Sequence[str] = (), steps: int = 8,
              use_cache: bool = True, overwrite: bool = False, callback: Callback = None,
              log: Callable[[str], None] = print) -> dict:
    """Run a suite (``"bokeh"`` or ``"refocus"``) and return its results.

    Args:
        size: benchmark size (``S`` or ``(H, W)``); K scales with it (``level_to_K``).
        out_dir: if given, write ``bench_<suite>_<H>x<W>.json`` and ``.png`` (contact sheet) there; an existing
            file gets a numbered sibling unless ``overwrite``.
        cases: use only the first N cases of :data:`CASES`.
        renderers / models: names to run (default: all registered); ``model_paths``: DiffCamera checkpoints
            (``"toy"`` or files) sampled with ``steps`` Euler steps.
        callback: ``callback(done, total, None)`` after each case of each entry.

    Returns:
        dict with ``suite``, ``size``, ``cases`` (name, d1, d2, K, level), ``rows`` (means per entry), ``per_case``,
        ``table`` (markdown), ``seconds`` and, for refocus, ``corrupted_depth``; plus ``json``/``png`` paths.
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; use one of {', '.join(SUITES)}")
    t0 = time.perf_counter()
    cs = scoring_cases(size, cases)
    if name == "bokeh":
        entries = _load(_BOKEH, renderers, log)
    else:
        factories = dict(_REFOCUS)
        for p in model_paths:
            factories[f"dit:{os.path.basename(os.path.normpath(p))}"] = dit_model_factory(p, steps=steps)
        names = list(models) if models is not None else list(_REFOCUS)
        names += [f"dit:{os.path.basename(os.path.normpath(p))}" for p in model_paths]
        entries = _load(factories, names, log)
    total = 1 + len(entries) * len(cs)
    done = [0]

    def tick():
        done[0] += 1
        if callback is not None:
            callback(done[0], total, None)
    res = (_bokeh_suite if name == "bokeh" else _refocus_suite)(cs, entries, use_cache, tick, log)
    h, w = cs[0].scene.size
    result = {
        "suite": name, "size": [h, w], "gt_version": GT_VERSION,
        "cases": [{"name": c.name, "kind": c.scene.kind, "seed": c.scene.seed, "level": c.level, "K": c.K,
                   "d1": c.d1, "d2": c.d2, "point1": list(c.point1), "point2": list(c.point2)} for c in cs],
        "rows": res["rows"], "per_case": res["per_case"],
        "table": markdown_table(res["rows"], res["columns"]),
    }
    if "corrupted_depth" in res:
        result["corrupted_depth"] = res["corrupted_depth"]
        result["corrupted_table"] = markdown_table(res["corrupted_depth"], [("model", "model"), ("depth", "depth"),
                                                                            ("psnr", "PSNR dB"), ("fpe", "focus err")])
    result["seconds"] = time.perf_counter() - t0
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.join(out_dir, f"bench_{name}_{h}x{w}")
        png = _free_path(base + ".png", overwrite)
        contact_sheet(res["sheet"], png)
        result["png"] = png
        js = _free_path(base + ".json", overwrite)
        with open(js, "w") as f:
            json.dump(_clean(result), f, indent=1, default=lambda v: None)
        result["json"] = js
    return result

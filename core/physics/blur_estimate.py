"""How is the image blurred now? Its focus disparity and blur strength, estimated from the image and its depth.

Users almost never know the input's own focus and bokeh level. They are read off the image by fitting the
project's blur law ``r = K·|d − d_f|`` (px, :mod:`diffcamera.core.conventions`) to local blur measurements:

* **Silhouettes** (depth discontinuities) are the most reliable probes: across one, the image is the nearer
  surface's colour blended over the farther one with a coverage that is the nearer surface's mask blurred by
  *its* radius (that is how a lens and the layered renderer both work). For patches around depth edges the
  radius whose blurred mask best explains the colours (largest mean R² of a per-channel linear fit
  ``colour ≈ a·coverage + b``) is the nearer side's blur. Texture inside the patch is noise to this fit,
  not a bias. Depth edges are found as steps spread over a few pixels too (:data:`SOFT_EDGE_FRACTION`): a depth
  model's edges are soft, and only exact depth has one-pixel steps.
* **Texture edges** away from silhouettes: the scale of the maximum of the γ-normalised gradient
  (``√σ·|∇(I∗g_σ)|``, Lindeberg's edge scale selection) of a blurred step is its blur; for our disks
  ``σ ≈ 0.53·r`` (calibrated on the procedural scenes, 4 ≤ r ≤ 16 px). They are what a scene without depth
  edges (a slanted plane) offers.

The observations ``(disparity, radius, weight)`` are fitted robustly: a grid over ``d_f`` and ``K`` minimising
the weighted, clipped log error of ``1 + r`` (so a few wrong probes cannot pull the fit). An image that is
sharp everywhere gets ``K ≈ 0``. A fit that lands on the grid's largest ``K`` (:data:`K_TOP_FRACTION`) is no
measurement — the probes set no upper limit on the blur — and reports ``K = 0`` (the refocus then adds blur but
deblurs nothing) with a caveat, rather than the most blur the grid allows, which rings. So does an image in which
nothing reads sharp (:data:`SHARP_FLOOR_PX`): a picture soft everywhere, whose texture differences between depths
would otherwise be read as lens blur. Measurements run on a
copy of at most :data:`WORK_SIDE` px long side (the level is resolution independent); ``K`` is returned at the
image's own resolution.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..aperture import Aperture, soft_kernel
from ..conventions import K_to_level
from ..depth import depth_edges

#: Long side (px) the measurements run at.
WORK_SIDE = 256
#: Disparity step that makes a silhouette.
EDGE_STEP = 0.05
#: Depth edges are also looked for as steps spread over up to this fraction of the long side (a depth model's soft
#: edges; measured at 256² on depth softened by a Gaussian of σ = long side / 128: silhouettes found 0 → 43 per
#: image, level error on the scenes with depth edges 88 % → 14 % (layers) and 51 % → 25 % (mixed)).
SOFT_EDGE_FRACTION = 1 / 64
#: Most silhouette patches measured per image.
MAX_PATCHES = 128
#: Silhouette patches span this fraction of the long side (each way from the edge); radii up to
#: ``PATCH_FRACTION / RAMP_FIT`` of the long side are measured (a ramp of ``2r`` must fit the patch).
PATCH_FRACTION = 0.2
RAMP_FIT = 1.5
#: Texture edge scale / disk radius (calibrated on the procedural scenes).
SIGMA_PER_RADIUS = 0.53
#: Relative weight of one texture observation against one silhouette observation.
TEXTURE_WEIGHT = 0.25
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class BlurEstimate:
    """The estimated blur of a batch of images.

    Attributes:
        focus_disparity: ``[B]`` the disparity that is sharp now (``0..1``).
        K: ``[B]`` blur strength in px per unit disparity at the image's resolution (``≥ 0``).
        level: ``[B]`` the same as the artist's bokeh level (px per 1024 px of long side).
        observations: per image, how many local blur measurements the fit used.
        cost: ``[B]`` the fit's mean clipped log error (0 = perfect; 0.7 = no agreement).
        edge_observations: per image, how many of them were depth-edge (silhouette) measurements. With none the
            estimate rests on texture alone, which is often off by half or more (slanted and ground planes in the
            benchmark).
        unbounded: per image, whether the fit landed on its largest ``K`` (:data:`K_TOP_FRACTION`): the probes
            set no upper limit, so no blur is assumed (``K = 0``: the refocus then only adds blur) rather than the
            most the fit allows.
        nothing_sharp: per image, whether nothing in it reads sharp (:data:`SHARP_FLOOR_PX`; images measured at
            :data:`SHARP_MIN_SIDE` px or more): no blur is assumed (``K = 0``), as a picture soft everywhere would
            otherwise be over-sharpened.
    """

    focus_disparity: torch.Tensor
    K: torch.Tensor
    level: torch.Tensor
    observations: List[int]
    cost: torch.Tensor
    edge_observations: List[int]
    unbounded: List[bool]
    nothing_sharp: List[bool]

    def caveat(self, i: int) -> str:
        """A warning for image ``i`` when its estimate is weak, else ``""``."""
        fix = "set the input's focus and level if you know them"
        if self.unbounded[i]:
            return f"the image sets no upper limit on its blur, so none was assumed (no deblurring): {fix}"
        if self.nothing_sharp[i]:
            return ("nothing in the image reads sharp, so no blur was assumed (no deblurring; a picture soft "
                    f"everywhere would be over-sharpened): {fix}")
        if self.edge_observations[i] == 0 and float(self.K[i]) > 0.0:
            return f"no depth edge to measure, estimated from texture alone (often off by half or more): {fix}"
        return ""

    def describe(self) -> str:
        parts = []
        for i, (d, lv, n) in enumerate(zip(self.focus_disparity, self.level, self.observations)):
            caveat = self.caveat(i)
            parts.append(f"focus disparity {float(d):.3f}, level {float(lv):.1f} ({n} probes)"
                         + (f" — {caveat}" if caveat else ""))
        return "; ".join(parts)


def _luma(image: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def _gaussian_stack(x: torch.Tensor, sigmas) -> List[torch.Tensor]:
    """``x [1, C, H, W]`` blurred by Gaussians of each ``sigma`` (px): one FFT of the reflect-padded image,
    one inverse FFT per sigma."""
    h, w = x.shape[-2:]
    py, px = min(h - 1, int(3 * max(sigmas)) + 1), min(w - 1, int(3 * max(sigmas)) + 1)
    xp = F.pad(x, (px, px, py, py), mode="reflect")
    fh, fw = xp.shape[-2:]
    spec = torch.fft.rfft2(xp)
    fy = torch.fft.fftfreq(fh).view(-1, 1)
    fx = torch.fft.rfftfreq(fw).view(1, -1)
    f2 = fy * fy + fx * fx
    return [torch.fft.irfft2(spec * torch.exp(-2 * math.pi ** 2 * s * s * f2), s=(fh, fw))[..., py:py + h, px:px + w]
            for s in sigmas]


def _radius_ladder(top: float) -> torch.Tensor:
    """Candidate radii (px): 0, then geometric from 0.5 up to ``top``, 4 per octave."""
    n = int(math.floor(4 * math.log2(max(top, 1.0) / 0.5))) + 1
    return torch.cat([torch.zeros(1), 0.5 * 2 ** (torch.arange(n, dtype=torch.float64) / 4)]).float()


@functools.lru_cache(maxsize=128)
def _disk_spectrum(radius: float, size: int) -> torch.Tensor:
    """``rfft2`` of the unit-sum pixel-coverage disk of ``radius`` px centred at the origin of a
    ``size × size`` grid (real: the disk is point symmetric)."""
    half = int(radius) + 1
    k = soft_kernel(float(radius), half, Aperture(), edge="linear").float()
    grid = torch.zeros(size, size)
    idx = torch.arange(-half, half + 1) % size
    grid[idx[:, None], idx[None, :]] = k / k.sum()
    return torch.fft.rfft2(grid).real


def edge_spacing(height: int, width: int) -> int:
    """The widest step spacing (px, a power of two ≥ 1) :func:`~diffcamera.core.depth.depth_edges` looks at for an
    ``height × width`` measurement: :data:`SOFT_EDGE_FRACTION` of the long side."""
    s = 1
    while 2 * s <= SOFT_EDGE_FRACTION * max(height, width):
        s *= 2
    return s


def silhouette_probes(image: torch.Tensor, disparity: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blur radii across depth edges of one image: ``(nearer-side disparity [N], radius px [N], weight [N])``.

    ``image [1, 3, H, W]`` sRGB, ``disparity [1, 1, H, W]`` (see the module docstring).
    """
    h, w = disparity.shape[-2:]
    half = max(8, int(PATCH_FRACTION * max(h, w)))
    spacing = edge_spacing(h, w)
    edges = depth_edges(disparity, EDGE_STEP, spacing)[0, 0]
    pts = torch.nonzero(edges)
    if pts.shape[0] == 0:
        empty = torch.zeros(0)
        return empty, empty, empty
    if pts.shape[0] > MAX_PATCHES:   # evenly strided: deterministic and spread over every silhouette
        pts = pts[torch.linspace(0, pts.shape[0] - 1, MAX_PATCHES).round().long()]
    img = F.pad(image, (half,) * 4, mode="replicate")
    dsp = F.pad(disparity, (half,) * 4, mode="replicate")
    off = torch.arange(2 * half + 1)
    ys = (pts[:, 0:1] + off)[:, :, None]
    xs = (pts[:, 1:2] + off)[:, None, :]
    patches = img[0][:, ys, xs].permute(1, 0, 2, 3)                    # [P, 3, S, S]
    dp = dsp[0, 0][ys, xs]                                             # [P, S, S]
    reach = 2 * spacing                    # a soft edge reaches its two sides' plateaus within this many px
    centre = dp[:, half - reach:half + reach + 1, half - reach:half + reach + 1].flatten(1)
    near, far = centre.amax(1), centre.amin(1)
    fg = (dp > (0.5 * (near + far)).view(-1, 1, 1)).float()[:, None]  # the nearer side's mask [P,1,S,S]
    i0 = patches - patches.mean((2, 3), keepdim=True)
    vi = (i0 * i0).mean((2, 3)).clamp_min(1e-8)                        # [P, 3]
    radii = _radius_ladder(half / RAMP_FIT)
    pad = half + 2                                                     # the mask's blur, by FFT
    size = 2 * half + 1 + 2 * pad
    spec = torch.fft.rfft2(F.pad(fg, (pad,) * 4, mode="replicate"))
    scores = []
    for r in radii.tolist():
        if r == 0:
            a = fg
        else:
            a = torch.fft.irfft2(spec * _disk_spectrum(r, size), s=(size, size))[..., pad:-pad, pad:-pad]
        a0 = a - a.mean((2, 3), keepdim=True)
        va = (a0 * a0).mean((2, 3)).clamp_min(1e-8)                    # [P, 1]
        cov = (i0 * a0).mean((2, 3))                                   # [P, 3]
        scores.append((cov * cov / (va * vi)).mean(1))                 # mean R² over channels
    s = torch.stack(scores, 1)                                         # [P, R]
    best = s.argmax(1)
    contrast = (vi.sum(1)).sqrt()
    weight = s.gather(1, best[:, None])[:, 0] * (contrast / 0.1).clamp(max=1.0)
    ok = best < len(radii) - 1                 # at the ladder's top: "at least this", no measurement
    return near[ok], radii[best][ok], weight[ok]


def texture_probes(image: torch.Tensor, disparity: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blur radii at texture edges away from silhouettes (scale selection): ``(disparity, radius px, weight)``."""
    lum = _luma(image)
    h, w = lum.shape[-2:]
    sigmas = [0.5 * 2 ** (i / 4) for i in range(int(4 * math.log2(max(1.0, min(h, w) / 6) / 0.5)) + 1)]
    if len(sigmas) < 3:
        empty = torch.zeros(0)
        return empty, empty, empty
    from kornia.filters import spatial_gradient
    resp = []
    for s, blurred in zip(sigmas, _gaussian_stack(lum, sigmas)):
        g = spatial_gradient(blurred, "diff")[:, 0]                   # [1, 2, H, W]
        resp.append(math.sqrt(s) * g.pow(2).sum(1, keepdim=True).sqrt())
    r = torch.stack(resp, 0)                                           # [n, 1, 1, H, W]
    best = r.argmax(0)
    rmax = r.amax(0)
    sig = torch.tensor(sigmas)[best]
    # an edge: a local maximum of the response along x or y, of real contrast, not at the largest scale
    p = F.pad(rmax, (1, 1, 1, 1), mode="replicate")
    peak_x = (rmax >= p[..., 1:-1, :-2]) & (rmax >= p[..., 1:-1, 2:])
    peak_y = (rmax >= p[..., :-2, 1:-1]) & (rmax >= p[..., 2:, 1:-1])
    contrast = rmax * math.sqrt(4 * math.pi) * sig.sqrt()
    guard = max(3, int(round(0.04 * max(h, w))))
    near_edge = F.max_pool2d(depth_edges(disparity, 0.03, edge_spacing(h, w)).float(), 2 * guard + 1, 1, guard) > 0
    ok = (peak_x | peak_y) & (contrast > 0.15) & (best < len(sigmas) - 1) & ~near_edge
    radius = ((sig[ok] ** 2 - 0.5 ** 2).clamp_min(0).sqrt() / SIGMA_PER_RADIUS)
    return disparity[ok], radius, torch.full_like(radius, TEXTURE_WEIGHT)


def balance(disp: torch.Tensor, weight: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """Reweight probes so each disparity bin counts ``sqrt(probes in it)``: a plane that holds most edges
    (often the sharp one) must not outvote every other depth."""
    idx = (disp * bins).long().clamp(0, bins - 1)
    n = torch.bincount(idx, minlength=bins).float()
    return weight * (n.sqrt() / n.clamp_min(1))[idx]


#: The fit's largest ``K``, as a fraction of the long side (bokeh level 307). A fit that lands there is no
#: measurement: the probes set no upper limit on the blur (measured: ground planes, whose texture edges only say
#: "at least this blurred", read 1.9× to 4.8× their true level there and rang, 3–8 dB below the true blur).
K_TOP_FRACTION = 0.3
#: Nothing reads sharp when even the sharpest :data:`SHARP_QUANTILE` of an image's probes is blurred by at least
#: :data:`SHARP_FLOOR_PX` px (at the measurement size). A lens photo focused inside the scene has sharp detail at its
#: focus plane; an image without any is soft everywhere (upscaled, a soft text-to-image output) or focused outside
#: the scene, and its texture differences between depths would be read as lens blur (measured: all-in-focus scenes
#: softened by a Gaussian of σ 2 px read as median level 22, up to 254, at 256², and were over-sharpened). No blur
#: is assumed for it. Measured: the sharpest 2 % read ≤ 0.61 px on every thin-lens input at 256² and ≥ 1.3 px on
#: every σ 2 px all-in-focus one. Small images are exempt (:data:`SHARP_MIN_SIDE`): at 64² the sharpest probes of 6
#: of 72 thin-lens inputs read above 1.2 px, and the rule cost their estimate (level error 26 → 43 %).
SHARP_FLOOR_PX = 1.2
SHARP_QUANTILE = 0.02
#: Measurement long side (px) from which :data:`SHARP_FLOOR_PX` applies.
SHARP_MIN_SIDE = 128
#: Probes measure the image's own softness plus the lens blur, so they are upper bounds of the blur: the fit
#: follows their lower envelope (pinball loss at this quantile: claiming more blur than a probe saw costs
#: ``(1 − q)/q`` times more than claiming less).
PROBE_QUANTILE = 0.25


def fit_blur_law(disp: torch.Tensor, radius: torch.Tensor, weight: torch.Tensor, long_side: int,
                 bound: torch.Tensor = None):
    """Robust grid fit of ``r = sqrt(r0² + (K·|d − d_f|)²)`` to probes; returns ``(d_f, K, cost, unbounded)`` (K in
    the probes' px; ``unbounded``: K is the grid's largest, :data:`K_TOP_FRACTION` of ``long_side``). ``r0``
    (0..1.5 px, fitted too) is the image's own softness (anti-aliasing, soft textures), which would otherwise push
    ``d_f`` off the sharp plane.

    ``bound`` (bool per probe): the probe is only an upper bound of the blur (texture edges: a smooth texture
    looks blurred) and is fitted with the pinball loss; the others (silhouettes) with the clipped L1 loss."""
    d_f = torch.linspace(0, 1, 201)
    top = K_TOP_FRACTION * long_side
    ks = torch.cat([torch.zeros(1), 0.25 * (top / 0.25) ** (torch.arange(121) / 120.0)]).view(-1, 1, 1)
    r0 = torch.tensor([0.0, 0.5, 1.0, 1.5]).view(1, -1, 1)
    q = PROBE_QUANTILE
    target = torch.log1p(radius).view(1, 1, -1)
    bound = torch.zeros_like(radius, dtype=torch.bool) if bound is None else bound
    w = weight.view(1, 1, -1) / weight.sum().clamp_min(1e-8)
    costs = []
    for f in d_f.tolist():   # one focus hypothesis at a time: [K, r0, probes] stays small
        model = torch.sqrt(r0 * r0 + (ks * (disp.view(1, 1, -1) - f)) ** 2)
        u = (target - torch.log1p(model)).clamp(-0.7, 0.7)
        err = torch.where(bound.view(1, 1, -1), torch.where(u >= 0, q * u, (q - 1) * u), u.abs())
        costs.append((err * w).sum(-1))
    cost = torch.stack(costs)                                           # [F, K, R0]
    i = int(cost.argmin())
    a, rest = divmod(i, cost.shape[1] * cost.shape[2])
    k = rest // cost.shape[2]
    return float(d_f.flatten()[a]), float(ks.flatten()[k]), float(cost.flatten()[i]), k == ks.numel() - 1


def estimate_input_blur(image: torch.Tensor, disparity: torch.Tensor) -> BlurEstimate:
    """Estimate each image's focus disparity and blur strength (module docstring).

    Args:
        image: ``[B, 3, H, W]`` sRGB ``0..1``.
        disparity: ``[B|1, 1, H, W]`` ``0..1``, near = 1, same size.

    Returns:
        :class:`BlurEstimate` (``K`` in px per unit disparity at ``H × W``).
    """
    b, _, h, w = image.shape
    scale = min(1.0, WORK_SIDE / max(h, w))
    img = image.detach().float().cpu()
    dsp = disparity.detach().float().cpu().expand(b, -1, -1, -1)
    if scale < 1.0:
        size = (max(8, round(h * scale)), max(8, round(w * scale)))
        img = F.interpolate(img, size=size, mode="area")
        dsp = F.interpolate(dsp, size=size, mode="area")
    long_side = max(img.shape[-2:])
    fs, ks, costs, counts, edges, unbounded, nothing_sharp = [], [], [], [], [], [], []
    for i in range(b):
        parts = [silhouette_probes(img[i:i + 1], dsp[i:i + 1]), texture_probes(img[i:i + 1], dsp[i:i + 1])]
        d = torch.cat([p[0] for p in parts])
        r = torch.cat([p[1] for p in parts])
        wt = torch.cat([balance(p[0], p[2]) for p in parts])
        bound = torch.cat([torch.zeros(parts[0][0].numel(), dtype=torch.bool),
                           torch.ones(parts[1][0].numel(), dtype=torch.bool)])
        edges.append(int(parts[0][0].numel()))
        if d.numel() == 0 or float(wt.sum()) <= 0:
            fs.append(float(dsp[i].median()))
            ks.append(0.0)
            costs.append(0.7)
            counts.append(0)
            unbounded.append(False)
            nothing_sharp.append(False)
            continue
        d_f, k, cost, at_top = fit_blur_law(d, r, wt, long_side, bound)
        unbounded.append(at_top)
        nothing_sharp.append(long_side >= SHARP_MIN_SIDE and float(r.quantile(SHARP_QUANTILE)) >= SHARP_FLOOR_PX)
        fs.append(d_f)
        ks.append(0.0 if at_top or nothing_sharp[-1] else k / scale)
        costs.append(cost)
        counts.append(int(d.numel()))
    K = torch.tensor(ks)
    level = torch.tensor([K_to_level(k, h, w) for k in ks])
    return BlurEstimate(torch.tensor(fs), K, level, counts, torch.tensor(costs), edges, unbounded, nothing_sharp)

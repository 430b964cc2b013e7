"""The all-in-focus image behind a defocused photo: the layered renderer inverted (no learned weights).

Model
-----
The input ``y`` (linear light, ``[B, 3, H, W]``) is the layered render (:class:`~diffcamera.core.bokeh_layered.
LayeredOperator`) of an all-in-focus image ``X`` with the input's own signed circle of confusion
``c_in = K_in·(d − d_in)`` px, in its explicit-hidden form: wherever a blurred surface lets the background
behind it show, that background's colour is a second unknown ``Hd`` instead of the renderer's guess from
neighbouring pixels::

    y ≈ A(X, Hd)

``Hd`` matters: a blurred foreground rim mixes its colour with what lies *behind* it, which the visible image
does not contain; without ``Hd`` the solver pushes that mismatch into the foreground and rings
(measured: +1.3 dB in the region that must become sharp, 64² thin-lens scenes).

Objective and solver
--------------------
``min Σ_p ρ(‖A(X,Hd) − y‖_p) + λ·TV(X) + λ_h·TV(Hd)`` with a robust Charbonnier data penalty
``ρ(r) = δ·sqrt(r² + δ²)`` (pixels the model cannot explain — occlusion edges of a real photo, an AI image's
own blur — lose weight instead of being fitted by ringing) and colour-coupled isotropic total variation
(``ε``-smoothed, edges preserved). Solved by iteratively reweighted least squares: each outer iteration
freezes the weights and solves the weighted normal equations with conjugate gradients, one forward and one
adjoint render per CG step, warm-started from the previous outer iteration. Coarse to fine: the problem is
solved on a pyramid (area halving, CoC halved with it) and each level starts from the bilinear upsampling of
the coarser solution, so the full-resolution level only refines; the coarsest starts from the input and, for
``Hd``, from a depth-aware guess: the input's colour of the nearby farther surfaces (:func:`hidden_first_guess`).
The TV weight is lowered by
``edge_weight`` across depth discontinuities of the given disparity: the all-in-focus image may jump there.

Defaults were chosen on the project's thin-lens scenes (``evaluation`` benchmark, 64² and 256²); the same
``λ`` served both sizes.

Everything is deterministic (no random numbers) and runs on the operator's device (CPU or CUDA).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..aperture import Aperture
from ..bokeh_layered import LayeredOperator

Progress = Optional[Callable[[int, int], None]]

#: Input blur radius (px) under which a pixel counts as sharp; an image sharp everywhere needs no solve.
SHARP_PX = 0.5
#: Disparity bins of :func:`hidden_first_guess` (measured: 8 and 16 alike at 64², 16 slightly better at 256²).
HIDDEN_GUESS_BINS = 16


@dataclass(frozen=True)
class SolverSettings:
    """Weights and iteration counts of :func:`deconvolve` (defaults measured on 64² and 256² thin-lens scenes).

    Attributes:
        lam: TV weight of the all-in-focus image.
        lam_hidden: TV weight of the hidden colour (lower: it must be free to hold the background texture a
            blurred rim reveals, or that texture is pushed into the foreground).
        eps: TV smoothing in linear-light units.
        delta: robust data-term scale in linear-light units (residuals well above it count less).
        edge_weight: TV weight multiplier across depth discontinuities (steps above ``edge_threshold``).
        coarse_radius: the pyramid halves until the input blur is at most this many px on its coarsest level...
        coarse_side: ...and its long side at most this many px,
        min_side: but never below this short side;
        max_levels: at most this many halvings.
        coarse: ``(outer, inner)`` IRLS and CG iterations on the coarsest level.
        fine: ``(outer, inner)`` on every finer level.
    """

    lam: float = 5e-4
    lam_hidden: float = 2e-4
    eps: float = 0.01
    delta: float = 0.02
    edge_weight: float = 0.1
    edge_threshold: float = 0.03
    coarse_radius: float = 9.0
    coarse_side: int = 256
    min_side: int = 32
    max_levels: int = 4
    coarse: Tuple[int, int] = (6, 12)
    fine: Tuple[int, int] = (2, 5)

    def iterations(self, levels: int) -> int:
        """CG iterations of a solve with ``levels`` pyramid levels (the progress total)."""
        return self.coarse[0] * self.coarse[1] + (levels - 1) * self.fine[0] * self.fine[1]


@dataclass
class Deconvolution:
    """What :func:`deconvolve` returns: ``image`` and ``hidden`` ``[B, 3, H, W]`` linear light ``0..1``, and
    ``deblurred [B]`` bool: which images had blur to invert (the others are returned as they came, ``hidden`` = the
    input: nothing was estimated behind their rims)."""

    image: torch.Tensor
    hidden: torch.Tensor
    iterations: int
    levels: int
    deblurred: torch.Tensor


def _grad(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forward differences ``(∂x, ∂y)`` of ``[B, C, H, W]`` (zero across the last column / row)."""
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _grad_t(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Transpose of :func:`_grad` (``= −div``)."""
    px, py = px[..., :, :-1], py[..., :-1, :]
    return F.pad(-px, (0, 1)) + F.pad(px, (1, 0)) + F.pad(-py, (0, 0, 0, 1)) + F.pad(py, (0, 0, 1, 0))


def _tv_weights(x: torch.Tensor, eps: float) -> torch.Tensor:
    """IRLS weights ``1/sqrt(|∇x|² + ε²)`` of colour-coupled isotropic TV, ``[B, 1, H, W]``."""
    gx, gy = _grad(x)
    return torch.rsqrt((gx * gx + gy * gy).sum(1, keepdim=True) + eps * eps)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image inner product ``[B, 1, 1, 1]``."""
    return (a * b).sum((1, 2, 3), keepdim=True)


class _Level:
    """One pyramid level: the operator for its CoC and the input at its resolution. ``tick()`` (may raise: Cancel)
    runs after every layer of the operator's precomputation and of every application."""

    def __init__(self, y: torch.Tensor, coc: torch.Tensor, disparity: torch.Tensor, aperture: Aperture,
                 settings: "SolverSettings", tick=None):
        self.y = y
        self.tick = tick
        self.op = LayeredOperator(coc, aperture=aperture, callback=tick)
        gx, gy = _grad(disparity)
        a = settings.edge_weight
        self.edge_x = torch.where(gx.abs() > settings.edge_threshold, a, 1.0).to(y.dtype)
        self.edge_y = torch.where(gy.abs() > settings.edge_threshold, a, 1.0).to(y.dtype)

    def forward(self, x, h):
        return self.op(x, callback=self.tick, hidden=h)

    def adjoint(self, r):
        return self.op.adjoint(r, callback=self.tick, hidden=True)


def _solve_level(level: _Level, x: torch.Tensor, h: torch.Tensor, settings: SolverSettings,
                 outer: int, inner: int, progress, done: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """IRLS (``outer``) × CG (``inner``) on one level, from ``(x, h)``."""
    s = settings
    lam, lam_h = s.lam, s.lam_hidden
    y = level.y
    for _ in range(outer):
        wx = lam * _tv_weights(x, s.eps)
        wh = lam_h * _tv_weights(h, s.eps)
        r = level.forward(x, h) - y
        wd = s.delta * torch.rsqrt((r * r).sum(1, keepdim=True) + s.delta * s.delta)

        def normal(vx, vh):
            ax, ah = level.adjoint(wd * level.forward(vx, vh))
            gx, gy = _grad(vx)
            hx, hy = _grad(vh)
            return (ax + _grad_t(wx * level.edge_x * gx, wx * level.edge_y * gy),
                    ah + _grad_t(wh * hx, wh * hy))

        bx, bh = level.adjoint(wd * y)
        ax, ah = normal(x, h)
        rx, rh = bx - ax, bh - ah
        px, ph = rx.clone(), rh.clone()
        rs = _dot(rx, rx) + _dot(rh, rh)
        for _ in range(inner):
            qx, qh = normal(px, ph)
            alpha = rs / (_dot(px, qx) + _dot(ph, qh)).clamp_min(1e-30)
            x = x + alpha * px
            h = h + alpha * ph
            rx, rh = rx - alpha * qx, rh - alpha * qh
            rs_new = _dot(rx, rx) + _dot(rh, rh)
            beta = rs_new / rs.clamp_min(1e-30)
            px, ph = rx + beta * px, rh + beta * ph
            rs = rs_new
            done[0] += 1
            if progress is not None:
                progress(done[0], None)
        x, h = x.clamp(0.0, 1.0), h.clamp(0.0, 1.0)
    return x, h


def hidden_first_guess(y: torch.Tensor, disparity: torch.Tensor, radius, step: float,
                       bins: int = HIDDEN_GUESS_BINS) -> torch.Tensor:
    """The solve's starting guess of the colour behind each pixel, ``[B, 3, H, W]`` (same units as ``y``).

    For a pixel of disparity ``d``, the Gaussian-weighted mean (σ = ``radius``/2 px, about the reach of the input's
    blurred rims; ``radius`` a float or ``[B]``, each image's largest input blur) of ``y [B, 3, H, W]`` over the
    pixels farther than ``d − step``; each image's ``disparity [B, 1, H, W]`` is cut into ``bins`` equal bins (each
    bin takes the pixels farther than its lower edge). Where nothing farther lies within reach (the farthest
    surface) it is ``y`` itself.

    Why it matters: the hidden colour is seen by the input only through its blurred rims, weakly, so away from
    them it stays near where the solve starts. Starting from ``y`` (the occluder's own colour) showed that colour
    through the request's rims (measured at 64²: +1.75 → +2.10 dB over re-blurring; 256²: mean +1.75 → +1.89 dB).
    """
    radii = torch.as_tensor(radius, dtype=torch.float64).flatten().expand(y.shape[0]).tolist()
    if y.shape[0] > 1:
        return torch.cat([hidden_first_guess(y[i:i + 1], disparity[i:i + 1], r, step, bins)
                          for i, r in enumerate(radii)])
    from kornia.filters import gaussian_blur2d
    sigma = max(1.0, radii[0] / 2)
    k = 2 * math.ceil(3 * sigma) + 1
    lo = disparity.amin((1, 2, 3), keepdim=True)
    span = disparity.amax((1, 2, 3), keepdim=True) - lo
    which = ((disparity - lo) / span.clamp_min(1e-12) * bins).floor().clamp(0, bins - 1)
    out = y.clone()
    for j in range(1, bins):
        in_bin = which == j
        if not bool(in_bin.any()):
            continue
        farther = (disparity < lo + span * j / bins - step).to(y.dtype)
        both = gaussian_blur2d(torch.cat([y * farther, farther], 1), (k, k), (sigma, sigma), border_type="replicate")
        weight = both[:, 3:]
        out = torch.where(in_bin & (weight > 1e-3), both[:, :3] / weight.clamp_min(1e-6), out)
    return out


def pyramid_levels(height: int, width: int, max_radius: float, settings: SolverSettings = SolverSettings()) -> int:
    """Number of pyramid levels (1 = full resolution only) for an ``height × width`` image whose input blur
    reaches ``max_radius`` px: halve until the coarsest level's blur is at most ``settings.coarse_radius`` px
    (measured: large blur is inverted best coarse, then refined) and its long side at most
    ``settings.coarse_side`` px (speed), but never below ``settings.min_side`` px on the short side."""
    s = settings
    want = max(math.ceil(math.log2(max(max_radius, 1e-6) / s.coarse_radius)),
               math.ceil(math.log2(max(height, width) / s.coarse_side)), 0)
    n = 0
    while n < min(want, s.max_levels) and min(height, width) // 2 ** (n + 1) >= s.min_side:
        n += 1
    return n + 1


def deconvolve(image_lin: torch.Tensor, disparity: torch.Tensor, focus_disparity: torch.Tensor,
               K: torch.Tensor, *, aperture: Aperture = Aperture(), settings: SolverSettings = SolverSettings(),
               callback: Progress = None) -> Deconvolution:
    """Estimate the all-in-focus image of a defocused image (module docstring).

    Args:
        image_lin: ``[B, 3, H, W]`` linear light ``0..1``, the defocused input.
        disparity: ``[B, 1, H, W]`` ``0..1`` (near = 1), same size.
        focus_disparity: ``[B]`` the input's focus disparity ``d_in`` (``0..1``).
        K: ``[B]`` the input's blur strength, px per unit disparity at this resolution (``≥ 0``).
        aperture: the input's aperture shape.
        settings: weights and iteration counts.
        callback: ``callback(done, total)`` after every CG iteration, and with an unchanged ``done`` after every
            layer of every operator application (may raise to interrupt: Cancel acts within one layer).

    Returns:
        :class:`Deconvolution` with the all-in-focus estimate and the hidden colour (both linear light,
        clamped to ``0..1``). An image whose blur is below :data:`SHARP_PX` everywhere is returned as is.
    """
    b, _, h, w = image_lin.shape
    dev, dt = image_lin.device, image_lin.dtype
    d = disparity.to(dev, dt).expand(b, -1, -1, -1)
    d_in = focus_disparity.to(dev, dt).view(-1, 1, 1, 1)
    k = K.to(dev, dt).view(-1, 1, 1, 1)
    coc = k * (d - d_in)
    blurred = coc.abs().amax((1, 2, 3)) >= SHARP_PX
    if not bool(blurred.any()):
        return Deconvolution(image_lin.clone(), image_lin.clone(), 0, 0, blurred.cpu())
    n_levels = pyramid_levels(h, w, float(coc.abs().max()), settings)
    total = settings.iterations(n_levels)
    progress = None if callback is None else (lambda done, _t: callback(done, total))
    # the pyramid, coarsest last
    ys, cs, ds = [image_lin], [coc], [d]
    for _ in range(n_levels - 1):
        ys.append(F.avg_pool2d(ys[-1], 2, ceil_mode=True))
        cs.append(F.avg_pool2d(cs[-1], 2, ceil_mode=True) / 2)
        ds.append(F.avg_pool2d(ds[-1], 2, ceil_mode=True))
    done = [0]
    # inside every operator application, per layer and tile: the same count again, so Cancel acts within one layer
    tick = None if progress is None else (lambda *_: progress(done[0], None))
    x = hd = None
    for li in reversed(range(n_levels)):
        y_l = ys[li]
        level = _Level(y_l, cs[li], ds[li], aperture, settings, tick)
        if x is None:
            x = y_l.clone()
            hd = hidden_first_guess(y_l, ds[li], cs[li].abs().amax((1, 2, 3)), settings.edge_threshold)
            outer, inner = settings.coarse
        else:
            size = tuple(y_l.shape[-2:])
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            hd = F.interpolate(hd, size=size, mode="bilinear", align_corners=False)
            outer, inner = settings.fine
        x, hd = _solve_level(level, x, hd, settings, outer, inner, progress, done)
    keep = ~blurred.view(-1, 1, 1, 1)           # in a batch, an image without blur is returned as it came
    return Deconvolution(torch.where(keep, image_lin, x), torch.where(keep, image_lin, hd), done[0], n_levels,
                         blurred.cpu())

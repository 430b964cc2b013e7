"""Fast spatially varying scatter: every pixel spreads as an aperture of its own radius.

The engine computes, for per-pixel values ``v_p`` (``[B,C,H,W]``), masses ``m_p ≥ 0`` and blur radii ``r_p``
(pixels, ``≥ 0``)::

    num(q) = Σ_p m_p · v_p · k̂_{r_p}(q − p)          den(q) = Σ_p m_p · k̂_{r_p}(q − p)

where ``k̂_r`` is the aperture kernel of radius ``r`` (:mod:`diffcamera.core.aperture`) normalised to unit
sum. BokehMe's classical renderer is the special case ``m_p = Σ_o w(r_p, o)`` with
``w(r, o) = (0.5 + 0.5·tanh(4·(r − |o|)))/(r² + 0.2)``, output ``num/den`` (:func:`render_classical`).

How it is fast (cost independent of the radius)
-----------------------------------------------
The kernel family is sampled at a few *node* radii; a pixel whose radius lies between two nodes spreads
into both with linear ("hat") weights, so ``num = Σ_k k̂_{r_k} ∗ (a_k · m · v)`` with ``a_k(r)`` the hat
weight of node ``k``: one FFT convolution per node, accumulated in the frequency domain, one inverse
FFT per resolution level. Nodes are dense at small radii (where the kernel shape changes fastest) and
every node with a radius above ``R0`` is handled at a resolution reduced by a power of two ``s`` so that
its radius there stays in ``(R0/2, R0]``: an octave of radii costs ``1/s²`` of the first, so the total
cost is bounded whatever the largest radius. The reduced-resolution nodes soften the rim of very large
bokeh discs by about ``s`` pixels (``≈ r/R0``), well below what the eye sees on a disc of that size.

Memory is bounded by streaming: one node at a time per batch element (or a few, within
``memory_budget`` bytes), so a 4096² image needs a few full-size buffers, never one per radius.
Everything is plain differentiable torch (CPU or CUDA).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .aperture import Aperture, kernel_half_size, soft_kernel

Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]

#: Band layout: ``(lo, hi, level, rank)`` — radii ``(lo, hi]`` px (the first band includes 0) rendered at
#: downsampling ``level`` with ``rank`` basis kernels. Beyond the last entry, octaves ``(R, 2R]`` follow
#: at twice the previous level with the last rank, so the low-resolution radius stays in ``(6, 12]`` px.
BANDS = ((0.0, 6.0, 1, 12), (6.0, 12.0, 1, 10), (12.0, 24.0, 2, 10))
#: Default streaming budget for intermediate buffers (bytes).
DEFAULT_MEMORY_BUDGET = 1024 ** 3
#: Samples of the radius per band for the SVD and the coefficient tables.
TABLE_SAMPLES = 257


@dataclass(frozen=True)
class Band:
    """Radii ``(lo, hi]`` (full-resolution px; the first band includes 0) rendered at downsampling
    ``level`` with ``rank`` basis kernels."""

    lo: float
    hi: float
    level: int
    rank: int


def band_layout(max_radius: float, bands=BANDS) -> List[Band]:
    """The bands needed to cover radii ``0..max_radius`` (see :data:`BANDS`)."""
    out = [Band(*bands[0])]
    i = 1
    while out[-1].hi < max_radius:
        if i < len(bands):
            out.append(Band(*bands[i]))
        else:
            last = out[-1]
            out.append(Band(last.hi, 2 * last.hi, 2 * last.level, last.rank))
        i += 1
    return out


@functools.lru_cache(maxsize=64)
def _band_basis(band: Band, aperture: "Aperture"):
    """SVD basis of the unit-sum kernels of a band, at the band's own resolution.

    Returns ``(kernels [k, 2h+1, 2h+1] float64, table [TABLE_SAMPLES, k] float64)``: the kernel of a radius
    ``r`` (full-res px, ``lo ≤ r ≤ hi``) is ``Σ_j table(r)[j]·kernels[j]`` with ``table`` sampled uniformly
    on ``[lo, hi]`` (linear interpolation in between).
    """
    s = band.level
    radii = torch.linspace(band.lo, band.hi, TABLE_SAMPLES, dtype=torch.float64) / s
    half = kernel_half_size(band.hi / s, aperture)
    mats = []
    for r in radii.tolist():
        k = soft_kernel(r, half, aperture)
        mats.append((k / k.sum()).flatten())
    m = torch.stack(mats)
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)
    k = min(band.rank, sv.numel())
    table = u[:, :k] * sv[:k]
    kernels = vh[:k].reshape(k, 2 * half + 1, 2 * half + 1)
    table = table / (table @ kernels.sum((1, 2)))[:, None]  # the truncated sum keeps unit mass exactly
    return kernels, table


def _smooth_size(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@functools.lru_cache(maxsize=64)
def _band_spectra(band: Band, aperture: Aperture, fft_h: int, fft_w: int,
                  device: str, dtype: torch.dtype, real: bool) -> torch.Tensor:
    """``rfft2`` of a band's basis kernels wrapped around the origin of an ``fft_h × fft_w`` grid:
    ``[k, fft_h, fft_w//2+1]`` (real when the aperture is point-symmetric, else complex)."""
    kernels, _ = _band_basis(band, aperture)
    k, size, _ = kernels.shape
    half = (size - 1) // 2
    grid = torch.zeros(k, fft_h, fft_w, dtype=torch.float64)
    idx = torch.arange(-half, half + 1)
    grid[:, (idx % fft_h)[:, None], (idx % fft_w)[None, :]] = kernels
    spec = torch.fft.rfft2(grid)
    if real:
        return spec.real.to(device=device, dtype=dtype)
    return spec.to(device=device, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)


@functools.lru_cache(maxsize=64)
def _band_table(band: Band, aperture: Aperture, device: str, dtype: torch.dtype) -> torch.Tensor:
    _, table = _band_basis(band, aperture)
    return table.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _bokehme_mass_table(step: float, r_max: float) -> torch.Tensor:
    """Total BokehMe weight ``Σ_o (0.5+0.5·tanh(4(r−|o|)))/(r²+0.2)`` on the grid ``r = 0, step, ...``."""
    n = int(math.ceil(r_max / step)) + 2
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        r = i * step
        half = int(r) + 1
        out[i] = soft_kernel(r, half).sum() / (r * r + 0.2)
    return out


def bokehme_mass(radius: torch.Tensor) -> torch.Tensor:
    """Per-pixel total BokehMe weight of a source pixel of radius ``radius`` (any shape, px ≥ 0).

    Exact (tabulated every 1/32 px, linearly interpolated) up to 32 px; beyond, the soft disc's area
    ``π·r²·(1 + 0.1/r²)/(r² + 0.2)`` matched to the table at 32 px (relative error < 1e-4).
    """
    step, r_tab = 1.0 / 32, 32.0
    table = _bokehme_mass_table(step, r_tab).to(device=radius.device, dtype=radius.dtype)
    x = (radius.clamp(0, r_tab) / step)
    i0 = x.floor().long().clamp(max=table.numel() - 2)
    t = x - i0.to(x.dtype)
    tab = table[i0] * (1 - t) + table[i0 + 1] * t
    far = radius.clamp_min(r_tab)
    area = math.pi * far * far / (far * far + 0.2)
    ref = math.pi * r_tab * r_tab / (r_tab * r_tab + 0.2)
    scale = float(table[int(round(r_tab / step))]) / ref
    return torch.where(radius <= r_tab, tab, area * scale)


def _band_coefficients(radius: torch.Tensor, band: Band, table: torch.Tensor, first: bool) -> torch.Tensor:
    """Per-pixel basis coefficients ``[k, 1, H, W]`` of a band (zero for radii outside it)."""
    n = table.shape[0]
    x = (radius - band.lo) / (band.hi - band.lo) * (n - 1)
    inside = (radius <= band.hi) & ((radius >= band.lo) if first else (radius > band.lo))
    x = x.clamp(0, n - 1)
    i0 = x.floor().long().clamp(max=n - 2)
    t = (x - i0.to(x.dtype)).unsqueeze(0)
    coef = table[i0.flatten()].T.reshape(table.shape[1], *radius.shape) * (1 - t) + \
        table[i0.flatten() + 1].T.reshape(table.shape[1], *radius.shape) * t
    return coef * inside.to(coef.dtype).unsqueeze(0)


def scatter(values: torch.Tensor, mass: torch.Tensor, radius: torch.Tensor, *,
            aperture: Aperture = Aperture(), callback: Callback = None,
            memory_budget: int = DEFAULT_MEMORY_BUDGET, bands=BANDS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Spatially varying scatter (see the module docstring).

    Args:
        values: ``[B, C, H, W]`` quantities to spread (any units; linear in the output).
        mass: ``[B, 1, H, W]`` ≥ 0, how much each source pixel weighs in total.
        radius: ``[B, 1, H, W]`` ≥ 0 blur radius per source pixel, px at this resolution.
        aperture: kernel shape.
        callback: ``callback(done, total, None)`` after each band and batch element (may raise).
        memory_budget: bytes for the streamed intermediate buffers (basis kernels are processed in
            chunks that fit; the result does not depend on it).

    Returns:
        ``(num [B, C, H, W], den [B, 1, H, W])``: ``Σ m·v·k̂`` and ``Σ m·k̂`` at every target pixel.
    """
    b, c, h, w = values.shape
    dev, dt = values.device, values.dtype
    r_max = float(radius.max()) if radius.numel() else 0.0
    bands = band_layout(r_max, bands)
    s_max = bands[-1].level
    ph, pw = (-h) % s_max, (-w) % s_max
    real = aperture.symmetric
    num = values.new_zeros(b, c, h, w)
    den = values.new_zeros(b, 1, h, w)
    total, done = len(bands) * b, 0
    for bi in range(b):
        vm = torch.cat([values[bi:bi + 1] * mass[bi:bi + 1], mass[bi:bi + 1]], dim=1)  # [1, C+1, H, W]
        rad = radius[bi:bi + 1]
        if ph or pw:
            vm = F.pad(vm, (0, pw, 0, ph))
            rad = F.pad(rad, (0, pw, 0, ph))
        for bn, band in enumerate(bands):
            first = bn == 0
            sel = (rad <= band.hi) & ((rad >= band.lo) if first else (rad > band.lo))
            if not bool(sel.any()):
                done += 1
                continue
            s = band.level
            hs, ws = (h + ph) // s, (w + pw) // s
            pad = kernel_half_size(band.hi / s, aperture) + 1
            fh, fw = _smooth_size(hs + pad), _smooth_size(ws + pad)
            table = _band_table(band, aperture, str(dev), dt)
            spectra = _band_spectra(band, aperture, fh, fw, str(dev), dt, real)
            k = table.shape[1]
            per_basis = 4 * (c + 1) * (h + ph) * (w + pw) * 2 + 8 * (c + 1) * fh * (fw // 2 + 1) * 2
            chunk = max(1, min(k, int(memory_budget // per_basis)))
            # Pad once to the FFT size (zeros spread nothing), so the FFT needs no copy.
            if s == 1:
                vm_l, rad_l = F.pad(vm, (0, fw - ws, 0, fh - hs)), F.pad(rad, (0, fw - ws, 0, fh - hs))
            else:
                vm_l, rad_l = vm, rad
            acc = None
            for j0 in range(0, k, chunk):
                tab = table[:, j0:j0 + chunk]
                coef = _band_coefficients(rad_l[0, 0], band, tab, first).unsqueeze(1)  # [G, 1, h', w']
                sig = vm_l * coef                                                        # [G, C+1, h', w']
                if s > 1:
                    sig = F.pad(F.avg_pool2d(sig, s), (0, fw - ws, 0, fh - hs))
                spec = torch.fft.rfft2(sig)
                part = (spec * spectra[j0:j0 + chunk, None]).sum(0, keepdim=True)
                acc = part if acc is None else acc + part
                del sig, spec, coef
            out = torch.fft.irfft2(acc, s=(fh, fw))[..., :hs, :ws]
            if s > 1:
                out = F.interpolate(out, scale_factor=s, mode="bilinear", align_corners=False)
            out = out[..., :h, :w]
            num[bi:bi + 1] += out[:, :c]
            den[bi:bi + 1] += out[:, c:]
            done += 1
            if callback is not None:
                callback(done, total, None)
    return num, den


#: Cat's-eye anchors per axis: the clipped aperture is evaluated at a 3×3 grid of frame positions and
#: every source pixel spreads with the bilinear blend of its four nearest anchors' apertures.
CATSEYE_ANCHORS = 3


def scatter_any(values: torch.Tensor, mass: torch.Tensor, radius: torch.Tensor, *,
                aperture: Aperture = Aperture(), catseye: float = 0.0, callback: Callback = None,
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`scatter` with optional cat's-eye vignetting of strength ``catseye`` in ``0..1``.

    At a normalised frame position ``u ∈ [−1, 1]²`` (centre 0, corners ``|u| = √2``) the aperture is
    intersected with a disk of the same radius shifted by ``catseye·u/√2·r`` (radially outward), which
    leaves a cat's eye whose long axis is tangential, as in real lenses. Costs ``CATSEYE_ANCHORS²``
    scatters.
    """
    if catseye <= 0:
        return scatter(values, mass, radius, aperture=aperture, callback=callback, memory_budget=memory_budget)
    b, c, h, w = values.shape
    n = CATSEYE_ANCHORS
    pos_y = torch.linspace(0, n - 1, h, device=values.device, dtype=values.dtype).view(1, 1, h, 1)
    pos_x = torch.linspace(0, n - 1, w, device=values.device, dtype=values.dtype).view(1, 1, 1, w)
    num = values.new_zeros(b, c, h, w)
    den = values.new_zeros(b, 1, h, w)
    anchors = [(i, j) for i in range(n) for j in range(n)]
    for done, (i, j) in enumerate(anchors):
        wy = (1 - (pos_y - i).abs()).clamp_min(0)
        wx = (1 - (pos_x - j).abs()).clamp_min(0)
        m = mass * wy * wx
        if not bool((m > 0).any()):
            continue
        uy, ux = 2 * i / (n - 1) - 1, 2 * j / (n - 1) - 1
        shift = (catseye * uy / math.sqrt(2), catseye * ux / math.sqrt(2))
        ap = Aperture(aperture.blades, aperture.rotation, aperture.curvature,
                      None if shift == (0.0, 0.0) else shift)
        nu, de = scatter(values, m, radius, aperture=ap, memory_budget=memory_budget)
        num, den = num + nu, den + de
        if callback is not None:
            callback(done + 1, len(anchors), None)
    return num, den


def render_classical(image: torch.Tensor, radius: torch.Tensor, gamma: float = 4.0, *,
                     aperture: Aperture = Aperture(), boost: Optional[torch.Tensor] = None,
                     catseye: float = 0.0, callback: Callback = None, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """BokehMe's classical renderer: ``(Σ w·c^γ / Σ w)^(1/γ)``.

    Args:
        image: ``[B, 3, H, W]`` in ``0..1`` (sRGB, as BokehMe uses it).
        radius: ``[B, 1, H, W]`` ≥ 0 blur radius in px (``K·|d − d_f|``).
        gamma: > 0, the highlight exponent.
        boost: optional ``[B, 1, H, W]`` ≥ 1 multiplier of ``c^γ`` (highlight boost).
        catseye: cat's-eye vignetting strength ``0..1`` (see :func:`scatter_any`).

    Returns:
        ``[B, 3, H, W]`` in ``0..1``.
    """
    work = image.clamp(0, 1) ** gamma
    if boost is not None:
        work = work * boost
    mass = bokehme_mass(radius)
    num, den = scatter_any(work, mass, radius, aperture=aperture, catseye=catseye, callback=callback,
                           memory_budget=memory_budget)
    out = num / den.clamp_min(1e-12)
    return out.clamp(0, 1) ** (1.0 / gamma)

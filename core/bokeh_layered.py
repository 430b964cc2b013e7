"""Occlusion-aware layered lens blur, composited back to front in linear light.

The signed circle of confusion ``c = K·(d − d_f)`` (px, positive in front of the focus plane) is cut at
*node* values into depth layers (each pixel in exactly one layer, so a surface never occludes itself).
For every layer, far to near:

1. **Hidden background.** The layer is extended into the region covered by nearer layers, up to the
   largest blur radius of those nearer layers (a normalised blur of the layer's own pixels): this is what a
   blurred foreground rim reveals, instead of a black hole or the foreground's own colour.
2. **Blur.** The layer's premultiplied linear colour and its coverage are spread with the aperture of
   each pixel's own radius: the two node kernels bracketing the layer, mixed per pixel with linear
   weights (two FFT convolutions sharing one inverse FFT; node kernels of radius ≤ 1 px, a handful of
   taps, are applied by shifted sums instead). Layers with radii above :data:`FULL_RES_RADIUS` are blurred at a
   resolution reduced by a power of two (kernel radius there ``≤ FULL_RES_RADIUS``), so the cost is
   bounded whatever the blur.
3. **Composite** with "over": ``out = P_c + (1 − P_a)·out``.

Each layer is processed only inside the window it can reach (its pixels grown by the extension and
blur radii), so spatially compact layers are cheap. Finally the colour is divided by the composited coverage, which only differs from 1 at the frame
borders (light spread outside the frame), so borders do not darken. Far layers use the point
reflection of the aperture (as a real lens shows a polygonal iris upside down behind the focus plane).

Kernels are pixel-coverage disks/polygons (``edge="linear"`` in :func:`diffcamera.core.aperture.soft_kernel`):
``c = 0`` is an exact impulse, so in-focus pixels are reproduced exactly.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .aperture import Aperture, kernel_half_size, soft_kernel
from .bokeh_classical import _accumulate, _smooth_size

Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]

#: Radii (px) up to which layers are blurred at full resolution.
FULL_RES_RADIUS = 8.0
#: Node radii (px): dense where the kernel shape changes fastest, then geometric (ratio ``NODE_RATIO``).
BASE_NODES = (0.0, 0.5, 1.0, 2.0, 3.5, 5.5, 8.0)
NODE_RATIO = 1.5
#: Default bytes for intermediate buffers before the image is processed in tiles.
DEFAULT_MEMORY_BUDGET = 1024 ** 3


def node_radii(r_max: float) -> List[float]:
    """Node radii covering ``0..r_max`` with the last one strictly above ``r_max``."""
    nodes = [r for r in BASE_NODES]
    while nodes[-1] <= r_max:
        nodes.append(round(nodes[-1] * NODE_RATIO, 3))
    return nodes


def _level(radius: float) -> int:
    """Power-of-two downsampling so that ``radius / level ≤ FULL_RES_RADIUS``."""
    s = 1
    while radius / s > FULL_RES_RADIUS:
        s *= 2
    return s


@functools.lru_cache(maxsize=256)
def _spectrum(radius: float, aperture: Aperture, fh: int, fw: int, device: str, dtype: torch.dtype):
    """``rfft2`` of the unit-sum coverage kernel of ``radius`` px wrapped on an ``fh × fw`` grid, as real
    pairs ``[fh, fw//2+1, 2]`` (a real spectrum duplicated in both slots, see
    :func:`diffcamera.core.bokeh_classical._band_spectra`)."""
    half = kernel_half_size(radius, aperture)
    k = soft_kernel(radius, half, aperture, edge="linear")
    k = k / k.sum()
    grid = torch.zeros(fh, fw, dtype=torch.float64)
    idx = torch.arange(-half, half + 1)
    grid[(idx % fh)[:, None], (idx % fw)[None, :]] = k
    spec = torch.fft.rfft2(grid)
    pairs = spec.real.unsqueeze(-1).expand(*spec.shape, 2) if aperture.symmetric else torch.view_as_real(spec)
    return pairs.to(device=device, dtype=dtype).contiguous()


#: Node kernels with at most this many nonzero taps in total (radii ≤ 1 px: the impulse at 0 and 0.5 px,
#: 9 taps at 1 px) are applied by shifted sums in the spatial domain instead of FFTs (same result).
SPATIAL_TAPS = 10


@functools.lru_cache(maxsize=256)
def _taps(radius: float, aperture: Aperture) -> Tuple[Tuple[int, int, float], ...]:
    """Nonzero taps ``(dy, dx, weight)`` of the unit-sum coverage kernel of ``radius`` px."""
    half = kernel_half_size(radius, aperture)
    k = soft_kernel(radius, half, aperture, edge="linear")
    k = k / k.sum()
    return tuple((int(dy) - half, int(dx) - half, float(k[dy, dx])) for dy, dx in torch.nonzero(k > 0).tolist())


def _shift_add(x: torch.Tensor, taps) -> torch.Tensor:
    """Convolution ``out(q) = Σ w·x(q − (dy, dx))`` of ``x [N, C, H, W]`` with a few taps, zeros outside."""
    if len(taps) == 1 and taps[0][:2] == (0, 0):
        return x * taps[0][2]
    h, w = x.shape[-2:]
    m = max(max(abs(dy), abs(dx)) for dy, dx, _ in taps)
    xp = F.pad(x, (m, m, m, m))
    out = None
    for dy, dx, wt in taps:
        term = xp[..., m - dy:m - dy + h, m - dx:m - dx + w]
        out = term * wt if out is None else out.add_(term, alpha=wt)
    return out


def _box_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Cheap wide blur of ``[N, C, H, W]`` (≈ box of ``2·radius``): pooled pyramid, separable box, upsampled."""
    h, w = x.shape[-2:]
    s = max(2, int(radius // 4))  # hidden colours are smooth: half resolution at least
    y = F.avg_pool2d(x, s, ceil_mode=True) if s > 1 else x
    k = int(math.ceil(radius / s))
    if k > 0:  # separable box
        y = F.avg_pool2d(F.pad(y, (0, 0, k, k), mode="replicate"), (2 * k + 1, 1), stride=1)
        y = F.avg_pool2d(F.pad(y, (k, k, 0, 0), mode="replicate"), (1, 2 * k + 1), stride=1)
    if s > 1:
        y = F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=False)[..., :h, :w]
    return y


def _blur_layer(sig: torch.Tensor, radius: torch.Tensor, r_a: float, r_b: float, aperture_a: Aperture,
                aperture_b: Aperture) -> torch.Tensor:
    """Spread ``sig [N, C, H, W]`` with per-pixel radius ``radius [N, 1, H, W] ∈ [r_a, r_b]``: hat-weighted
    node kernels of radii ``r_a`` and ``r_b``. Returns ``[N, C, H, W]``."""
    n, c, h, w = sig.shape
    big = max(r_a, r_b)
    if big == 0:
        return sig
    s = _level(big)
    t = ((radius - r_a) / (r_b - r_a)).clamp(0, 1) if r_b != r_a else torch.zeros_like(radius)
    # the two hat-weighted parts; sig·(1−t) = sig − sig·t, and block means are linear, so the
    # reduced-resolution parts need one full-resolution product and two poolings
    part_b = sig * t
    if s > 1:  # block means on a grid padded with zeros to a multiple of s (mass is kept)
        hs, ws = -(-h // s), -(-w // s)
        pool = lambda x: F.avg_pool2d(F.pad(x, (0, ws * s - w, 0, hs * s - h)), s)
        part_b = pool(part_b)
        part_a = pool(sig) - part_b
    else:
        hs, ws = h, w
        part_a = sig - part_b
    taps_a, taps_b = _taps(r_a, aperture_a), _taps(r_b, aperture_b)
    if s == 1 and len(taps_a) + len(taps_b) <= SPATIAL_TAPS:
        return _shift_add(part_a, taps_a) + _shift_add(part_b, taps_b)
    pad = max(kernel_half_size(r_a / s, aperture_a), kernel_half_size(r_b / s, aperture_b)) + 1
    fh, fw = _smooth_size(hs + pad), _smooth_size(ws + pad)
    dev, dt = str(sig.device), sig.dtype
    inplace = not (torch.is_grad_enabled() and sig.requires_grad)
    acc = None
    for part, r, ap in ((part_a, r_a, aperture_a), (part_b, r_b, aperture_b)):
        acc = _accumulate(acc, torch.fft.rfft2(part, s=(fh, fw)), _spectrum(r / s, ap, fh, fw, dev, dt),
                          ap.symmetric, inplace)
    out = torch.fft.irfft2(acc, s=(fh, fw))[..., :hs, :ws]
    if s > 1:
        out = F.interpolate(out, scale_factor=s, mode="bilinear", align_corners=False)[..., :h, :w]
    return out


def _render(lin: torch.Tensor, coc: torch.Tensor, aperture: Aperture, callback: Callback,
            extend: bool = True) -> torch.Tensor:
    """Layered render of ``lin [B,3,H,W]`` (linear light) with signed CoC ``coc [B,1,H,W]`` (px)."""
    b, _, h, w = lin.shape
    out = torch.zeros_like(lin)
    cov = torch.zeros_like(coc)
    c_min, c_max = float(coc.min()), float(coc.max())
    radii = node_radii(max(abs(c_min), abs(c_max)))
    nodes = sorted({-r for r in radii} | set(radii))
    layers: List[Tuple[int, float, float]] = [(i, nodes[i], nodes[i + 1]) for i in range(len(nodes) - 1)
                                              if nodes[i + 1] > c_min and nodes[i] <= c_max]
    # layer index of every pixel (nodes[i] <= c < nodes[i+1]), and which rows / columns hold each layer
    bounds = torch.tensor(nodes, dtype=coc.dtype, device=coc.device)
    index = torch.bucketize(coc.contiguous(), bounds, right=True, out_int32=True) - 1
    n_idx = len(nodes) + 1
    in_row = torch.zeros(n_idx * h, dtype=torch.bool, device=coc.device)
    in_col = torch.zeros(n_idx * w, dtype=torch.bool, device=coc.device)
    ys = torch.arange(h, device=coc.device, dtype=torch.int32).view(1, 1, h, 1)
    xs = torch.arange(w, device=coc.device, dtype=torch.int32).view(1, 1, 1, w)
    in_row[((index + 1) * h + ys).flatten().long()] = True
    in_col[((index + 1) * w + xs).flatten().long()] = True
    in_row, in_col = in_row.view(n_idx, h)[1:], in_col.view(n_idx, w)[1:]
    flipped = Aperture(aperture.blades, aperture.rotation + math.pi, aperture.curvature, aperture.catseye)
    total = len(layers)
    grad = torch.is_grad_enabled() and (lin.requires_grad or coc.requires_grad)
    for li, (ni, lo, hi) in enumerate(layers):
        rows = torch.nonzero(in_row[ni]).flatten()
        if rows.numel() == 0:
            if callback is not None:
                callback(li + 1, total, None)
            continue
        cols = torch.nonzero(in_col[ni]).flatten()
        # Work only in the window the layer can reach: its pixels, their extension, their blur.
        has_nearer = extend and c_max >= hi
        reach = (max(abs(hi), abs(c_max)) + 2.0) if has_nearer else 0.0
        r_a, r_b = abs(lo), abs(hi)
        margin = int(math.ceil(reach + max(r_a, r_b))) + 2 * _level(max(r_a, r_b)) + 2
        y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
        x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
        win = (Ellipsis, slice(y0, y1), slice(x0, x1))
        c_w = coc[win]
        member = (index[win] == ni).to(lin.dtype)
        sig = torch.cat([lin[win] * member, member], 1)  # premultiplied colour and coverage [B, 4, h, w]
        radius = c_w.abs()
        if has_nearer:
            nearer = c_w >= hi
            blur_m = _box_blur(sig, reach / 2)
            grow = (2 * blur_m[:, 3:]).clamp(0, 1) * nearer.to(lin.dtype)
            # hidden colour = blurred colour / blurred coverage, added with coverage ``grow``:
            # colour += ext·grow and coverage += grow, as one product (coverage: grow·b/max(b, 1e-8))
            factor = grow / blur_m[:, 3:].clamp_min(1e-8)
            sig = sig.addcmul(blur_m, factor) if grad else sig.addcmul_(blur_m, factor)
            # extended (hidden) pixels blur like the layer's nearest node
            radius = torch.where(nearer, torch.full_like(radius, r_b), radius)
        radius = radius.clamp(min(r_a, r_b), max(r_a, r_b))
        ap = flipped if hi <= 0 else aperture
        p = _blur_layer(sig, radius, r_a, r_b, ap, ap)
        pa = p[:, 3:].clamp(0, 1)
        if grad:  # keep the tensors autograd saved intact
            out, cov = out.clone(), cov.clone()
            o_w, c_w2 = out[win].clone(), cov[win].clone()
            out[win] = p[:, :3] + (1 - pa) * o_w
            cov[win] = pa + (1 - pa) * c_w2
        else:     # "over", in place in the window
            keep = 1 - pa
            out[win].mul_(keep).add_(p[:, :3])
            cov[win].mul_(keep).add_(pa)
        if callback is not None:
            callback(li + 1, total, None)
    return (out / cov.clamp_min(1e-6)).clamp_min(0)


def render_layered(lin: torch.Tensor, coc: torch.Tensor, *, aperture: Aperture = Aperture(),
                   catseye: float = 0.0, callback: Callback = None,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, extend_background: bool = True) -> torch.Tensor:
    """Occlusion-aware lens blur.

    Args:
        lin: ``[B, 3, H, W]`` linear-light colour (≥ 0; highlights may exceed 1).
        coc: ``[B, 1, H, W]`` signed circle of confusion in px (positive = in front of the focus plane).
        aperture: kernel shape (far layers use its point reflection).
        catseye: cat's-eye vignetting strength ``0..1`` (0 = off): renders with the clipped apertures of
            a 3×3 grid of frame anchors and blends them by pixel position (nine times slower).
        callback: ``callback(done, total, None)`` per layer (and tile).
        memory_budget: bytes; larger images are processed in tiles with a halo of twice the largest radius.
        extend_background: extend each layer behind nearer layers (hidden background); off = plain layering.

    Returns:
        ``[B, 3, H, W]`` linear light.
    """
    b, _, h, w = lin.shape
    r_max = float(coc.abs().max()) if coc.numel() else 0.0
    if catseye > 0:
        return _render_catseye(lin, coc, aperture, catseye, callback, extend_background)
    per_px = 4 * 4 * 14
    halo = int(math.ceil(2 * r_max)) + 8
    s = _level(r_max)
    halo = -(-halo // s) * s
    if b * h * w * per_px <= memory_budget:
        return _render(lin, coc, aperture, callback, extend_background)
    tile = s
    while tile < max(h, w) and b * (2 * tile + 2 * halo) ** 2 * per_px <= memory_budget:
        tile *= 2
    out = torch.empty_like(lin)
    tiles = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    for n, (y0, x0) in enumerate(tiles):
        ya, xa = max(0, y0 - halo), max(0, x0 - halo)
        yb, xb = min(h, y0 + tile + halo), min(w, x0 + tile + halo)
        part = _render(lin[..., ya:yb, xa:xb], coc[..., ya:yb, xa:xb], aperture, None, extend_background)
        ty, tx = min(tile, h - y0), min(tile, w - x0)
        out[..., y0:y0 + ty, x0:x0 + tx] = part[..., y0 - ya:y0 - ya + ty, x0 - xa:x0 - xa + tx]
        if callback is not None:
            callback(n + 1, len(tiles), None)
    return out


def _render_catseye(lin, coc, aperture, strength, callback, extend):
    """Cat's-eye for the layered mode: render with the clipped aperture of a 3×3 grid of frame anchors
    and blend the results by the target pixel's bilinear position weights."""
    from .bokeh_classical import CATSEYE_ANCHORS
    b, _, h, w = lin.shape
    n = CATSEYE_ANCHORS
    pos_y = torch.linspace(0, n - 1, h, device=lin.device, dtype=lin.dtype).view(1, 1, h, 1)
    pos_x = torch.linspace(0, n - 1, w, device=lin.device, dtype=lin.dtype).view(1, 1, 1, w)
    out = torch.zeros_like(lin)
    for k, (i, j) in enumerate([(i, j) for i in range(n) for j in range(n)]):
        wt = (1 - (pos_y - i).abs()).clamp_min(0) * (1 - (pos_x - j).abs()).clamp_min(0)
        uy, ux = 2 * i / (n - 1) - 1, 2 * j / (n - 1) - 1
        shift = (strength * uy / math.sqrt(2), strength * ux / math.sqrt(2))
        ap = Aperture(aperture.blades, aperture.rotation, aperture.curvature,
                      None if shift == (0.0, 0.0) else shift)
        out = out + wt * _render(lin, coc, ap, None, extend)
        if callback is not None:
            callback(k + 1, n * n, None)
    return out

"""Occlusion-aware layered lens blur, composited back to front in linear light — and its exact adjoint.

The signed circle of confusion ``c = K·(d − d_f)`` (px, positive in front of the focus plane) is cut at
*node* values into depth layers (each pixel in exactly one layer, so a surface never occludes itself).
For every layer, far to near:

1. **Hidden background.** The layer is extended into the region covered by nearer layers, up to the
   largest blur radius of those nearer layers (a normalised blur of the layer's own pixels): this is what a
   blurred foreground rim reveals, instead of a black hole or the foreground's own colour.
2. **Blur.** The layer's premultiplied linear colour and its coverage are spread with the aperture of
   each pixel's own radius: the two node kernels bracketing the layer, mixed per pixel with linear
   ("hat") weights (two FFT convolutions sharing one inverse FFT; node kernels of radius ≤ 1 px, a handful
   of taps, are applied by shifted sums instead). Layers with radii above :data:`FULL_RES_RADIUS` are
   blurred at a resolution reduced by a power of two (kernel radius there ``≤ FULL_RES_RADIUS``), so the
   cost is bounded whatever the blur.
3. **Composite** with "over": ``out = P_c + (1 − P_a)·out``.

Each layer is processed only inside the window it can reach (its pixels grown by the extension and
blur radii), so spatially compact layers are cheap. Finally the colour is divided by the composited
coverage, which only differs from 1 at the frame borders (light spread outside the frame), so borders do
not darken. Far layers use the point reflection of the aperture (as a real lens shows a polygonal iris
upside down behind the focus plane).

**Linearity.** For a fixed CoC map every step above is linear in the colour: membership, hat weights,
extension factors, the composite alphas ``P_a`` and the final coverage depend only on the CoC.
:class:`LayeredOperator` precomputes those once and applies the render (``op(x)``) or its exact transpose
(``op.adjoint(y)``) for about the cost of one 3-channel render each; :func:`render_layered` is that
operator applied once (its image gradient is the adjoint, through a ``torch.autograd.Function``).

Kernels are pixel-coverage disks/polygons (``edge="linear"`` in :func:`diffcamera.core.aperture.soft_kernel`):
``c = 0`` is an exact impulse, so in-focus pixels are reproduced exactly.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .aperture import Aperture, kernel_half_size, soft_kernel
from .bokeh_classical import SPECTRA, _accumulate, _smooth_size, upsample_bilinear, upsample_bilinear_t

#: ``callback(done, total)`` progress hook of the operator; may raise to interrupt.
Progress = Optional[Callable[[int, int], None]]
#: ``callback(done, total, preview)`` hook of :func:`render_layered` (the renderers' convention).
Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]

#: Radii (px) up to which layers are blurred at full resolution.
FULL_RES_RADIUS = 8.0
#: Node radii (px): dense where the kernel shape changes fastest, then geometric (ratio ``NODE_RATIO``).
BASE_NODES = (0.0, 0.5, 1.0, 2.0, 3.5, 5.5, 8.0)
NODE_RATIO = 1.5
#: Default bytes for the operator's working buffers (per-layer state and transients) before the image
#: is processed in tiles.
DEFAULT_MEMORY_BUDGET = 1024 ** 3
#: Node kernels with at most this many nonzero taps in total (radii ≤ 1 px: the impulse at 0 and 0.5 px,
#: 9 taps at 1 px) are applied by shifted sums in the spatial domain instead of FFTs (same result).
SPATIAL_TAPS = 10


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


def _ext_level(radius: float) -> int:
    """Power-of-two pooling (≥ 2) of the hidden-background blur of half-width ``radius`` px (≈ radius/4)."""
    s = 2
    while 2 * s <= radius / 4:
        s *= 2
    return s


def _spectrum(radius: float, aperture: Aperture, fh: int, fw: int, device: str, dtype: torch.dtype):
    """Cached (:data:`diffcamera.core.bokeh_classical.SPECTRA`, bounded in bytes) :func:`_make_spectrum`."""
    return SPECTRA.get(("node", radius, aperture, fh, fw, device, dtype),
                       lambda: _make_spectrum(radius, aperture, fh, fw, device, dtype))


def _make_spectrum(radius: float, aperture: Aperture, fh: int, fw: int, device: str, dtype: torch.dtype):
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


@functools.lru_cache(maxsize=256)
def _taps(radius: float, aperture: Aperture) -> Tuple[Tuple[int, int, float], ...]:
    """Nonzero taps ``(dy, dx, weight)`` of the unit-sum coverage kernel of ``radius`` px."""
    half = kernel_half_size(radius, aperture)
    k = soft_kernel(radius, half, aperture, edge="linear")
    k = k / k.sum()
    return tuple((int(dy) - half, int(dx) - half, float(k[dy, dx])) for dy, dx in torch.nonzero(k > 0).tolist())


# --------------------------------------------------------------------------------------------------
# Linear building blocks on [N, C, H, W] tensors, each with its exact transpose (``*_t``).
# --------------------------------------------------------------------------------------------------

def _shift_add(x: torch.Tensor, taps) -> torch.Tensor:
    """Convolution ``out(q) = Σ w·x(q − (dy, dx))`` of ``x [N, C, H, W]`` with a few taps, zeros outside
    (``x`` itself for the unit impulse: callers do not write into the result). Its transpose is the same with
    the taps negated."""
    if len(taps) == 1 and taps[0][:2] == (0, 0):
        return x if taps[0][2] == 1.0 else x * taps[0][2]
    h, w = x.shape[-2:]
    m = max(max(abs(dy), abs(dx)) for dy, dx, _ in taps)
    xp = F.pad(x, (m, m, m, m))
    out = None
    for dy, dx, wt in taps:
        term = xp[..., m - dy:m - dy + h, m - dx:m - dx + w]
        out = term * wt if out is None else out.add_(term, alpha=wt)
    return out


def _flip_taps(taps):
    return tuple((-dy, -dx, w) for dy, dx, w in taps)


def _pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """Block means of ``s × s`` on a grid zero-padded to a multiple of ``s`` (mass / s² is kept)."""
    if s == 1:
        return x
    return F.avg_pool2d(x, s, ceil_mode=True, divisor_override=s * s)   # partial blocks: zeros beyond


def _pool_t(g: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Transpose of :func:`_pool` back to ``h × w``."""
    if s == 1:
        return g
    return F.interpolate(g * (1.0 / (s * s)), scale_factor=s, mode="nearest")[..., :h, :w]


def _layer_block_means(index: torch.Tensor, n_idx: int, s: int, dtype: torch.dtype,
                       x: Optional[torch.Tensor] = None, coverage: bool = True) -> torch.Tensor:
    """Every layer's :func:`_pool` at once: ``[n_idx, C', ⌈h/s⌉, ⌈w/s⌉]`` whose entry ``i`` holds the
    ``s × s`` block means of ``x · member_i`` (``C`` channels, none without ``x``) and, with ``coverage``, of
    ``member_i`` (one last channel), ``member_i = (index == i − 1)`` for ``index [1, 1, h, w]`` (int,
    ``-1..n_idx-2``). Every pixel is in exactly one layer, so one scatter of ``x`` serves all layers (instead
    of pooling each layer's masked window)."""
    _, _, h, w = index.shape
    hp, wp = -(-h // s), -(-w // s)
    cells = hp * wp
    ys = torch.arange(h, device=index.device) // s
    xs = torch.arange(w, device=index.device) // s
    target = ((index.view(h, w).long() + 1) * cells + (ys * wp)[:, None] + xs[None, :]).view(1, -1)
    parts = []
    if x is not None:
        c = x.shape[1]
        parts.append(x.new_zeros(c, n_idx * cells).scatter_add(1, target.expand(c, -1), x.reshape(c, -1)))
    if coverage:
        parts.append(torch.bincount(target[0], minlength=n_idx * cells).view(1, -1).to(dtype))
    out = (parts[0] if len(parts) == 1 else torch.cat(parts, 0)) * (1.0 / (s * s))
    return out.view(-1, n_idx, hp, wp).transpose(0, 1)


def _window_blocks(blocks: torch.Tensor, ni: int, win, s: int) -> torch.Tensor:
    """The blocks of layer ``ni`` (node index) under window ``win`` (origin on the ``s`` grid): ``[1, C', ⌈wh/s⌉, ⌈ww/s⌉]``."""
    y0, y1, x0, x1 = win
    by, bx = y0 // s, x0 // s
    return blocks[ni + 1:ni + 2, :, by:by + -(-(y1 - y0) // s), bx:bx + -(-(x1 - x0) // s)]


def _spread(blocks: torch.Tensor, ni: int, win, se: int, k: int) -> torch.Tensor:
    """A layer's colour spread for its hidden-background extension, ``up(box(pool(x·member)))`` over its
    window ``win``, from the layer block means of :func:`_layer_block_means` at the extension's level ``se``
    (box half-width ``k``)."""
    y0, y1, x0, x1 = win
    return _upsample(_box(_window_blocks(blocks, ni, win, se), k), se, y1 - y0, x1 - x0)


def _upsample(x: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Bilinear ×``s`` (half-pixel centres), cropped to ``h × w``."""
    return upsample_bilinear(x, s, h, w)


def _upsample_t(g: torch.Tensor, s: int, hs: int, ws: int) -> torch.Tensor:
    """Transpose of :func:`_upsample` (to ``hs × ws``)."""
    return upsample_bilinear_t(g, s, hs, ws)


def _window_sum(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Sums of ``width`` consecutive entries along ``dim`` (length ``n − width + 1``), by a running sum:
    constant cost per entry whatever the width (``avg_pool2d`` with a tall window measured 10× slower)."""
    c = torch.cumsum(x, dim)
    n = x.shape[dim] - width + 1
    return torch.cat([c.narrow(dim, width - 1, 1), c.narrow(dim, width, n - 1) - c.narrow(dim, 0, n - 1)], dim)


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Separable box of half-width ``k`` (``2k+1`` taps), borders replicated."""
    if k == 0:
        return x
    x = _window_sum(F.pad(x, (0, 0, k, k), mode="replicate"), 2 * k + 1, -2)
    return _window_sum(F.pad(x, (k, k, 0, 0), mode="replicate"), 2 * k + 1, -1) * (1.0 / (2 * k + 1) ** 2)


def _box_t_1d(g: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Transpose of one replicate-padded box pass along ``dim`` (-1 or -2), unnormalised (sums)."""
    n = g.shape[dim]
    pad = (2 * k, 2 * k, 0, 0) if dim == -1 else (0, 0, 2 * k, 2 * k)
    gp = _window_sum(F.pad(g, pad), 2 * k + 1, dim)
    out = gp.narrow(dim, k, n).clone()
    out.narrow(dim, 0, 1).add_(gp.narrow(dim, 0, k).sum(dim, keepdim=True))
    out.narrow(dim, n - 1, 1).add_(gp.narrow(dim, k + n, k).sum(dim, keepdim=True))
    return out


def _box_t(g: torch.Tensor, k: int) -> torch.Tensor:
    """Transpose of :func:`_box`."""
    if k == 0:
        return g
    return _box_t_1d(_box_t_1d(g, k, -1), k, -2) * (1.0 / (2 * k + 1) ** 2)


# --------------------------------------------------------------------------------------------------
# Per-layer state: everything that depends on the CoC only.
# --------------------------------------------------------------------------------------------------

@dataclass
class _Layer:
    """One depth layer of a tile: its window, kernels and the CoC-only weights (window-sized maps
    ``[1, 1, wh, ww]``)."""

    node: int                               # index of its lower node in the plan
    win: Tuple[int, int, int, int]          # y0, y1, x0, x1 in tile coordinates
    s: int                                  # blur level (1 = full resolution)
    radii: Tuple[float, float]              # node radii r_a, r_b (px at full resolution)
    aperture: Aperture
    taps: Optional[Tuple[tuple, tuple]]     # shifted-sum taps (a, b) or None for FFT
    grid: Tuple[int, int]                   # FFT grid (fh, fw) at level s
    wa: torch.Tensor                        # membership × (1 − t): weight of node kernel a
    wb: torch.Tensor                        # membership × t: weight of node kernel b
    ext: Optional[Tuple[int, int, torch.Tensor]]  # hidden background (pool level, box half-width, factor)
    keep: torch.Tensor                      # 1 − composite alpha
    spectra: Optional[Tuple[torch.Tensor, torch.Tensor]] = None   # kept by a precomputed operator
    grow: Optional[torch.Tensor] = None     # coverage of the hidden-background extension (with ``ext``)


@dataclass
class _Tile:
    layers: List[_Layer]
    index: torch.Tensor                     # [1, 1, th, tw] int32: node index of every pixel (−1 below the first)
    n_idx: int                              # node indices + 1 (the size of the layer block means)
    inv_cov: torch.Tensor                   # [1, 1, th, tw]: 1 / composited coverage
    skipped: int                            # layers of the plan without pixels in this tile


@dataclass(frozen=True)
class _Plan:
    """Layer set and geometry shared by all tiles of one image (so tiles equal one pass)."""

    nodes: Tuple[float, ...]
    layers: Tuple[Tuple[int, float, float], ...]   # (node index, lo, hi)
    c_max: float
    r_max: float
    extend: bool
    align: int                                     # tile/window origins are multiples of this


def _plan(coc: torch.Tensor, extend: bool) -> _Plan:
    c_min, c_max = float(coc.detach().min()), float(coc.detach().max())
    r_max = max(abs(c_min), abs(c_max))
    radii = node_radii(r_max)
    nodes = tuple(sorted({-r for r in radii} | set(radii)))
    layers = tuple((i, nodes[i], nodes[i + 1]) for i in range(len(nodes) - 1)
                   if nodes[i + 1] > c_min and nodes[i] <= c_max)
    align = max([_level(max(abs(lo), abs(hi))) for _, lo, hi in layers] + [_ext_level(r_max / 2 + 1)])
    return _Plan(nodes, layers, c_max, r_max, extend, align)


def _layer_geometry(plan: _Plan, lo: float, hi: float):
    """``(has_nearer, reach, margin, level, alignment)`` of the layer ``[lo, hi)``."""
    has_nearer = plan.extend and plan.c_max >= hi
    reach = (max(abs(hi), abs(plan.c_max)) + 2.0) if has_nearer else 0.0
    r_a, r_b = abs(lo), abs(hi)
    s = _level(max(r_a, r_b))
    a = max(s, _ext_level(reach / 2)) if has_nearer else s
    margin = int(math.ceil(reach + max(r_a, r_b))) + 2 * s + 2 + a
    return has_nearer, reach, margin, s, a


def _over(acc: torch.Tensor, win, p: torch.Tensor, keep: torch.Tensor, track: bool) -> torch.Tensor:
    """``acc[win] = p + keep·acc[win]`` ("over"); in place unless autograd tracks the tensors."""
    y0, y1, x0, x1 = win
    if not track:
        view = acc[..., y0:y1, x0:x1]
        torch.addcmul(p, view, keep, out=view)
        return acc
    h, w = acc.shape[-2:]
    pad = (x0, w - x1, y0, h - y1)
    return F.pad(p, pad) + F.pad(keep, pad, value=1.0) * acc


def _blur(parts: Sequence[torch.Tensor], layer: _Layer, out_hw: Tuple[int, int],
          low_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """``K_a ∗ parts[0] + K_b ∗ parts[1]`` at the layer's level, upsampled to ``out_hw``. With
    ``low_hw`` the parts are already zero-padded FFT grids holding ``low_hw`` pixels."""
    hs, ws = parts[0].shape[-2:] if low_hw is None else low_hw
    if layer.taps is not None:
        out = _shift_add(parts[0], layer.taps[0]) + _shift_add(parts[1], layer.taps[1])
    else:
        fh, fw = layer.grid
        dev, dt = str(parts[0].device), parts[0].dtype
        acc = None
        for i, (part, r) in enumerate(zip(parts, layer.radii)):
            spec = layer.spectra[i] if layer.spectra else _spectrum(r / layer.s, layer.aperture, fh, fw, dev, dt)
            acc = _accumulate(acc, torch.fft.rfft2(part, s=None if low_hw else (fh, fw)), spec,
                              layer.aperture.symmetric, not part.requires_grad)
        out = torch.fft.irfft2(acc, s=(fh, fw))[..., :hs, :ws]
    return _upsample(out, layer.s, *out_hw)


def _blur_t(g: torch.Tensor, layer: _Layer, low_hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Transpose of :func:`_blur`: ``(K_aᵀ ∗ up_sᵀ g, K_bᵀ ∗ up_sᵀ g)`` at the layer's level."""
    g = _upsample_t(g, layer.s, *low_hw)
    hs, ws = low_hw
    if layer.taps is not None:
        return tuple(_shift_add(g, _flip_taps(t)) for t in layer.taps)
    fh, fw = layer.grid
    dev, dt = str(g.device), g.dtype
    spec_g = torch.fft.rfft2(g, s=(fh, fw))
    outs = []
    for i, r in enumerate(layer.radii):
        spec = layer.spectra[i] if layer.spectra else _spectrum(r / layer.s, layer.aperture, fh, fw, dev, dt)
        if layer.aperture.symmetric:
            prod = torch.view_as_complex(torch.view_as_real(spec_g) * spec)
        else:
            prod = spec_g * torch.view_as_complex(spec).conj()
        outs.append(torch.fft.irfft2(prod, s=(fh, fw))[..., :hs, :ws])
    return tuple(outs)


def _layer_forward(x: torch.Tensor, L: _Layer, track: bool, coverage: bool = False,
                   hidden: Optional[torch.Tensor] = None, spread: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The blurred premultiplied colour of one layer, ``x [1, C, wh, ww]`` (its window) → same shape
    (``coverage``: with one more channel, the blurred coverage, as if ``x`` had a channel of ones).

    A layer with a hidden-background extension (``L.ext``) takes one of:
    ``spread`` (``[1, C(+1), wh, ww]``): its own colour (and coverage) spread behind nearer layers,
    ``up(box(pool(x·member)))`` (:func:`_spread`); or ``hidden`` (``[1, C, wh, ww]``): the colour behind nearer
    layers, used instead of it (the explicit-hidden form)."""
    n, c, wh, ww = x.shape
    if track:
        ones = [torch.ones_like(L.wa)] if coverage else []
        part_a, part_b = torch.cat([x] + ones, 1) * L.wa, torch.cat([x] + ones, 1) * L.wb
        grids = None
    else:   # written straight into their (zero-padded, for full-resolution FFTs) buffers
        grids = L.grid if L.s == 1 and L.taps is None else None
        shape = (n, c + coverage) + (grids if grids else (wh, ww))
        bufs = [x.new_zeros(shape) if grids else x.new_empty(shape) for _ in range(2)]
        part_a, part_b = (buf[..., :wh, :ww] for buf in bufs)
        for part, weight in ((part_a, L.wa), (part_b, L.wb)):
            torch.mul(x, weight, out=part[:, :c])
            if coverage:
                part[:, c:].copy_(weight)
    if L.ext is not None and hidden is not None:   # explicit hidden colour, with coverage ``grow``
        extra = hidden * L.grow
        if coverage:
            extra = torch.cat([extra, L.grow], 1)
        part_b = part_b + extra if track else part_b.add_(extra)
    elif L.ext is not None:   # hidden background: + up(box(pool(x·member)))·factor, blurred like node b
        factor = L.ext[2]
        part_b = part_b.addcmul(spread, factor) if track else part_b.addcmul_(spread, factor)
    if grids:
        return _blur(bufs, L, (wh, ww), (wh, ww))
    return _blur((_pool(part_a, L.s), _pool(part_b, L.s)), L, (wh, ww))


def _layer_adjoint(g: torch.Tensor, L: _Layer, hidden_acc: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Transpose of :func:`_layer_forward`; with ``hidden_acc`` (the explicit-hidden form) the hidden
    colour's part is added to it in place."""
    wh, ww = g.shape[-2:]
    low = (-(-wh // L.s), -(-ww // L.s))
    qa, qb = _blur_t(g, L, low)
    qa, qb = _pool_t(qa, L.s, wh, ww), _pool_t(qb, L.s, wh, ww)
    if L.ext is not None and hidden_acc is not None:
        hidden_acc.addcmul_(qb, L.grow)
    elif L.ext is not None:   # (qa + e)·wa + (qb + e)·wb, with wa + wb the membership
        se, k, factor = L.ext
        lh, lw = -(-wh // se), -(-ww // se)
        e = _pool_t(_box_t(_upsample_t(qb * factor, se, lh, lw), k), se, wh, ww)
        out = qa * L.wa
        out.addcmul_(qb, L.wb)
        return out.addcmul_(e, L.wa + L.wb)
    out = qa * L.wa
    return out.addcmul_(qb, L.wb)


def _build_tile(coc: torch.Tensor, plan: _Plan, aperture: Aperture, origin: Tuple[int, int],
                progress=None, x: Optional[torch.Tensor] = None, keep_state: bool = False):
    """CoC-only state of one tile: ``coc [1, 1, th, tw]`` px, ``origin`` its (y, x) in the image.

    With ``x [1, 3, th, tw]`` (streaming) it renders ``x`` instead, layer by layer, without keeping the
    state: colour and coverage are blurred together as four channels (the same maths as building the
    state and then :func:`_tile_forward`, for less memory and one FFT set per layer). With ``keep_state``
    too it returns ``(render, state)``: the state falls out of the streamed render (its composite alphas
    are the blurred coverage channel), for the cost of the render alone."""
    _, _, h, w = coc.shape
    dt = coc.dtype
    bounds = torch.tensor(plan.nodes, dtype=dt, device=coc.device)
    index = torch.bucketize(coc.detach().contiguous(), bounds, right=True, out_int32=True) - 1
    # which rows / columns hold each layer
    n_idx = len(plan.nodes) + 1
    ys = torch.arange(h, device=coc.device, dtype=torch.int32).view(1, 1, h, 1)
    xs = torch.arange(w, device=coc.device, dtype=torch.int32).view(1, 1, 1, w)
    in_row = torch.zeros(n_idx * h, dtype=torch.bool, device=coc.device)
    in_col = torch.zeros(n_idx * w, dtype=torch.bool, device=coc.device)
    in_row[((index + 1) * h + ys).flatten().long()] = True
    in_col[((index + 1) * w + xs).flatten().long()] = True
    in_row, in_col = in_row.view(n_idx, h)[1:], in_col.view(n_idx, w)[1:]
    flipped = Aperture(aperture.blades, aperture.rotation + math.pi, aperture.curvature, aperture.catseye)
    track = torch.is_grad_enabled() and (coc.requires_grad or (x is not None and x.requires_grad))
    cov = torch.zeros_like(coc)
    out = None if x is None else torch.zeros_like(x)
    blocks = {}   # extension level -> layer block means (of x and the membership, or the membership only)
    layers = []
    for li, (ni, lo, hi) in enumerate(plan.layers):
        rows = torch.nonzero(in_row[ni]).flatten()
        if rows.numel() == 0:
            if progress is not None:
                progress()
            continue
        cols = torch.nonzero(in_col[ni]).flatten()
        has_nearer, reach, margin, s, a = _layer_geometry(plan, lo, hi)
        # the window it can reach, its origin on the layer's pooling grid of the whole image
        oy, ox = origin
        y0 = max(0, ((oy + int(rows[0]) - margin) // a) * a - oy)
        x0 = max(0, ((ox + int(cols[0]) - margin) // a) * a - ox)
        y1, x1 = min(h, int(rows[-1]) + 1 + margin), min(w, int(cols[-1]) + 1 + margin)
        win = (y0, y1, x0, x1)
        c_w = coc[..., y0:y1, x0:x1]
        member = (index[..., y0:y1, x0:x1] == ni).to(dt)
        r_a, r_b = abs(lo), abs(hi)
        ext = None
        hidden_cov = None
        spread = None
        if has_nearer:
            se = _ext_level(reach / 2)
            k = int(math.ceil(reach / 2 / se))
            if se not in blocks:
                blocks[se] = _layer_block_means(index, n_idx, se, dt, x)
            spread = _spread(blocks[se], ni, win, se, k)   # colour channels (streaming) + coverage
            blur_m = spread[:, -1:]
            # hidden colour = blurred colour / blurred coverage, added with coverage ``grow`` (blurred like node b)
            factor = (2 * blur_m).clamp_(0, 1).mul_(c_w.detach() >= hi).div_(blur_m.clamp_min(1e-8))
            ext = (se, k, factor)
            if x is None or keep_state:   # (streaming: the coverage channel of ``spread`` carries it)
                hidden_cov = blur_m * factor
        # hat weight of node b: t = (|c| − r_a)/(r_b − r_a) = (c − lo)/(hi − lo) for the layer's own pixels
        wb = (c_w - lo).mul_(1.0 / (hi - lo)).clamp_(0, 1).mul_(member) if not track else \
            ((c_w - lo) / (hi - lo)).clamp(0, 1) * member
        wa = member - wb
        ap = flipped if hi <= 0 else aperture
        taps_a, taps_b = _taps(r_a, ap), _taps(r_b, ap)
        taps = (taps_a, taps_b) if s == 1 and len(taps_a) + len(taps_b) <= SPATIAL_TAPS else None
        hs, ws = -(-(y1 - y0) // s), -(-(x1 - x0) // s)
        pad = max(kernel_half_size(r_a / s, ap), kernel_half_size(r_b / s, ap)) + 1
        L = _Layer(ni, win, s, (r_a, r_b), ap, taps, (_smooth_size(hs + pad), _smooth_size(ws + pad)),
                   wa, wb, ext, wa, grow=hidden_cov)
        if x is None:
            cov_b = wb if hidden_cov is None else wb + hidden_cov
            alpha = _blur((_pool(wa, s), _pool(cov_b, s)), L, (y1 - y0, x1 - x0)).clamp(0, 1)
            L.keep = 1 - alpha
            if taps is None:   # kept with the state: repeated applications never miss the cache
                L.spectra = tuple(_spectrum(r / s, ap, *L.grid, str(coc.device), dt) for r in (r_a, r_b))
            layers.append(L)
        else:   # colour and coverage (a channel of ones) through the same layer maths
            p4 = _layer_forward(x[..., y0:y1, x0:x1], L, track, coverage=True, spread=spread)
            alpha = p4[:, 3:].clamp(0, 1)
            keep = 1 - alpha
            out = _over(out, win, p4[:, :3], keep, track)
            if keep_state:
                L.keep = keep
                if taps is None:
                    L.spectra = tuple(_spectrum(r / s, ap, *L.grid, str(coc.device), dt) for r in (r_a, r_b))
                layers.append(L)
        cov = _over(cov, win, alpha, keep if x is not None else L.keep, track)
        if progress is not None:
            progress()
    if x is not None:
        inv = 1.0 / cov.clamp_min(1e-6)
        out = out * inv if track else out.mul_(inv)
        if keep_state:
            return out, _Tile(layers, index, n_idx, inv, len(plan.layers) - len(layers))
        return out
    return _Tile(layers, index, n_idx, 1.0 / cov.clamp_min(1e-6), len(plan.layers) - len(layers))


def _tile_forward(x: torch.Tensor, tile: _Tile, progress=None, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Layered render of one tile ``x [1, C, th, tw]`` (linear light) with its precomputed state
    (``hidden``: optional explicit hidden colour of the tile, same shape)."""
    track = torch.is_grad_enabled() and (x.requires_grad or tile.inv_cov.requires_grad)
    out = torch.zeros_like(x)
    blocks = {}   # extension level -> layer block means of x
    for L in tile.layers:
        y0, y1, x0, x1 = L.win
        spread = None
        if L.ext is not None and hidden is None:
            se, k, _ = L.ext
            if se not in blocks:
                blocks[se] = _layer_block_means(tile.index, tile.n_idx, se, x.dtype, x, coverage=False)
            spread = _spread(blocks[se], L.node, L.win, se, k)
        p = _layer_forward(x[..., y0:y1, x0:x1], L, track,
                           hidden=None if hidden is None else hidden[..., y0:y1, x0:x1], spread=spread)
        out = _over(out, L.win, p, L.keep, track)
        if progress is not None:
            progress()
    for _ in range(tile.skipped if progress is not None else 0):
        progress()
    return out * tile.inv_cov if track else out.mul_(tile.inv_cov)


def _tile_adjoint(g: torch.Tensor, tile: _Tile, progress=None, hidden: bool = False):
    """Exact transpose of :func:`_tile_forward`: ``g [1, C, th, tw]`` → ``[1, C, th, tw]``, or the pair
    (colour, hidden colour) of the explicit-hidden form when ``hidden``."""
    trans = g * tile.inv_cov            # g weighted by 1/coverage and the transmittance of nearer layers
    xt = torch.zeros_like(g)
    ht = torch.zeros_like(g) if hidden else None
    for L in reversed(tile.layers):     # near to far
        y0, y1, x0, x1 = L.win
        xt[..., y0:y1, x0:x1] += _layer_adjoint(trans[..., y0:y1, x0:x1], L,
                                                None if ht is None else ht[..., y0:y1, x0:x1])
        trans[..., y0:y1, x0:x1].mul_(L.keep)
        if progress is not None:
            progress()
    for _ in range(tile.skipped if progress is not None else 0):
        progress()
    return xt if ht is None else (xt, ht)


#: Working bytes per tile pixel (float32) of one streamed layered render (the CoC index, coverage and
#: output of the tile, plus one layer's window: membership, weights, four-channel parts, their spectra and
#: its blurred output), calibrated on peak resident memory at 1024² and 2048² (radius ≤ 32).
STREAM_BYTES_PER_PX = 220
#: Bytes per pixel and layer of a precomputed operator's state (four weight maps and two kernel spectra).
STATE_BYTES_PER_LAYER_PX = 24


def _plan_layers(max_radius: float) -> int:
    """Number of layers for CoC values spanning ``[-max_radius, max_radius]`` (the worst case)."""
    return 2 * (len(node_radii(max_radius)) - 1)


def working_bytes_per_px(n_layers: int, precompute: bool, element_size: int = 4) -> int:
    """Working bytes per tile pixel: streamed render, or (``precompute``) that plus the kept state."""
    per = STREAM_BYTES_PER_PX + (STATE_BYTES_PER_LAYER_PX * n_layers if precompute else 0)
    return per * element_size // 4


class LayeredOperator:
    """The layered render for a fixed signed CoC map, as an explicit linear operator with its adjoint.

    ``op(x)`` equals :func:`render_layered` ``(x, coc)`` (before its final clamp at 0, which only removes
    float rounding below zero) and ``op.adjoint(y)`` is its exact transpose:
    ``⟨op(x), y⟩ = ⟨x, op.adjoint(y)⟩`` to float precision. Everything that depends only on the CoC
    (layer windows, membership, hat weights, hidden-background factors, composite alphas, the final
    ``1/coverage``) is computed once in the constructor, so one application costs about one 3-channel
    render, forward or adjoint.

    Args:
        coc: ``[B, 1, H, W]`` signed circle of confusion in px (positive = in front of the focus plane),
            one map per image; its dtype and device are the operator's.
        aperture: kernel shape (far layers use its point reflection).
        extend_background: extend each layer behind nearer layers (hidden background).
        memory_budget: bytes for the working buffers (default :data:`DEFAULT_MEMORY_BUDGET`); images
            whose state does not fit are split into tiles with a halo of twice the largest radius
            (forward: per-tile render and crop; adjoint: its transpose, scatter-added), same result to
            float rounding.
        catseye: cat's-eye vignetting strength ``0..1`` (0 = off): the render blends, by target pixel
            position, the renders with the clipped apertures of a 3×3 grid of frame anchors (nine times
            the cost and state).
        precompute: keep the CoC-only state between applications (default). ``False`` (or a state
            larger than ``memory_budget``) rebuilds it tile by tile at each application instead
            (about 4/3 of the cost, bounded memory). ``"first"``: keep the state that the first plain
            application computes on the way (a streamed render), for a render followed by adjoints
            (a gradient) at the cost of the render alone.
        callback: ``callback(done, total)`` during the precomputation (may raise to interrupt).

    ``op(x, callback=None)``: ``x [B, 3, H, W]`` linear light (any real values: the operator is linear)
    → ``[B, 3, H, W]``. ``op.adjoint(y, callback=None)``: same shapes. ``callback(done, total)`` is called
    per layer and tile of the application (may raise to interrupt, e.g. for Cancel).

    **Explicit hidden background** (for inverting the render): ``op(x, hidden=h)`` uses ``h [B, 3, H, W]``
    (linear light: the colour of whatever lies behind the visible surface) wherever a layer extends behind
    nearer ones, instead of the normalised blur of the layer's own pixels; the map is then linear in
    ``(x, h)`` and ``op.adjoint(y, hidden=True)`` returns the pair ``(xᵀ, hᵀ)``.
    """

    def __init__(self, coc: torch.Tensor, *, aperture: Aperture = Aperture(), extend_background: bool = True,
                 memory_budget: Optional[int] = None, catseye: float = 0.0, precompute: bool = True,
                 callback: Progress = None):
        if not torch.is_tensor(coc) or coc.dim() != 4 or coc.shape[1] != 1:
            shape = tuple(coc.shape) if torch.is_tensor(coc) else type(coc).__name__
            raise ValueError(f"coc must be a [B,1,H,W] tensor of signed blur radii in px, got {shape}")
        if not torch.isfinite(coc).all():
            raise ValueError("coc contains NaN or infinite values")
        self.coc = coc
        self.shape = (coc.shape[0], 3, coc.shape[2], coc.shape[3])
        self.aperture = aperture
        self.extend = bool(extend_background)
        self.memory_budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        b, _, h, w = coc.shape
        if catseye > 0:
            from .bokeh_classical import CATSEYE_ANCHORS
            n = CATSEYE_ANCHORS
            pos_y = torch.linspace(0, n - 1, h, device=coc.device, dtype=coc.dtype).view(1, 1, h, 1)
            pos_x = torch.linspace(0, n - 1, w, device=coc.device, dtype=coc.dtype).view(1, 1, 1, w)
            self.anchors = []
            for i in range(n):
                for j in range(n):
                    wt = (1 - (pos_y - i).abs()).clamp_min(0) * (1 - (pos_x - j).abs()).clamp_min(0)
                    uy, ux = 2 * i / (n - 1) - 1, 2 * j / (n - 1) - 1
                    shift = (catseye * uy / math.sqrt(2), catseye * ux / math.sqrt(2))
                    self.anchors.append((wt, Aperture(aperture.blades, aperture.rotation, aperture.curvature,
                                                      None if shift == (0.0, 0.0) else shift)))
        else:
            self.anchors = [(None, aperture)]
        # per image: a plan and its tiles (output region, input region with halo)
        self.plans, self.tiles = [], []
        for bi in range(b):
            plan = _plan(coc[bi:bi + 1], self.extend)
            self.plans.append(plan)
            self.tiles.append(self._tiling(plan, h, w))
        self._steps = sum(len(p.layers) * len(t) for p, t in zip(self.plans, self.tiles)) * len(self.anchors)
        # keep the state only if all of it fits next to one tile's transients
        el = coc.element_size()
        state = sum(len(p.layers) * sum((yb - ya) * (xb - xa) for _, (ya, yb, xa, xb) in t)
                    for p, t in zip(self.plans, self.tiles)) * len(self.anchors) * STATE_BYTES_PER_LAYER_PX * el // 4
        biggest = max((yb - ya) * (xb - xa) for t in self.tiles for _, (ya, yb, xa, xb) in t)
        fits = state + biggest * working_bytes_per_px(0, False, el) <= self.memory_budget
        if precompute not in (True, False, "first"):
            raise ValueError(f"precompute must be True, False or 'first', got {precompute!r}")
        self.precomputed = precompute != "first" and bool(precompute) and fits
        self._keep_first = precompute == "first" and fits
        self._state = {}
        if self.precomputed:
            done = [0]
            for key, tile_coc, plan, ap, origin in self._units():
                self._state[key] = _build_tile(tile_coc, plan, ap, origin,
                                               self._ticker(callback, done, self._steps))

    # --- geometry ---------------------------------------------------------------------------------
    def _tiling(self, plan: _Plan, h: int, w: int):
        """``[(out_region, in_region)]``: tiles aligned to the plan's coarsest grid, halo ≥ 2·r_max."""
        per_px = working_bytes_per_px(0, False, self.coc.element_size())   # one tile's transients
        if h * w * per_px <= self.memory_budget:
            return [((0, h, 0, w), (0, h, 0, w))]
        a = plan.align
        halo = -(-(int(math.ceil(2 * plan.r_max)) + 8) // a) * a
        tile = a   # the largest power-of-two multiple of ``a`` whose region fits (at least ``a``)
        while tile < max(h, w) and (2 * tile + 2 * halo) ** 2 * per_px <= self.memory_budget:
            tile *= 2
        out = []
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                o = (y, min(h, y + tile), x, min(w, x + tile))
                out.append((o, (max(0, y - halo), min(h, y + tile + halo), max(0, x - halo), min(w, x + tile + halo))))
        return out

    def _units(self):
        """``(key, tile CoC, plan, aperture, origin)`` for every (anchor, image, tile)."""
        for ai, (_, ap) in enumerate(self.anchors):
            for bi, (plan, tiles) in enumerate(zip(self.plans, self.tiles)):
                for ti, (_, (ya, yb, xa, xb)) in enumerate(tiles):
                    yield (ai, bi, ti), self.coc[bi:bi + 1, :, ya:yb, xa:xb], plan, ap, (ya, xa)

    @staticmethod
    def _ticker(callback, done, total):
        if callback is None:
            return None

        def tick():
            done[0] += 1
            callback(done[0], total)
        return tick

    def _tile_state(self, key, tile_coc, plan, ap, origin, tick) -> _Tile:
        st = self._state.get(key)
        return st if st is not None else _build_tile(tile_coc, plan, ap, origin, tick)

    def _total(self, adjoint: bool) -> int:
        """Progress steps of one application (per layer and tile; twice for an adjoint that rebuilds
        the state)."""
        return 2 * self._steps if adjoint and not self.precomputed else self._steps

    def _check(self, x: torch.Tensor, name: str):
        if not torch.is_tensor(x) or tuple(x.shape) != self.shape:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{name} must be a {list(self.shape)} tensor (linear light), got {shape}")

    # --- application --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, callback: Progress = None, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The layered render ``A x``: ``x [B, 3, H, W]`` linear light → ``[B, 3, H, W]`` (with ``hidden``:
        the explicit-hidden form ``A (x, h)``, see the class docstring)."""
        self._check(x, "x")
        if hidden is not None:
            self._check(hidden, "hidden")
        out = torch.zeros_like(x) if len(self.anchors) > 1 or any(len(t) > 1 for t in self.tiles) else None
        tick = self._ticker(callback, [0], self._total(False))
        parts = []
        for key, tile_coc, plan, ap, origin in self._units():
            ai, bi, ti = key
            (y0, y1, x0, x1), (ya, yb, xa, xb) = self.tiles[bi][ti]
            x_tile = x[bi:bi + 1, :, ya:yb, xa:xb]
            if hidden is not None:
                y = _tile_forward(x_tile, self._tile_state(key, tile_coc, plan, ap, origin, tick), tick,
                                  hidden[bi:bi + 1, :, ya:yb, xa:xb])
            elif key in self._state:
                y = _tile_forward(x_tile, self._state[key], tick)
            elif self._keep_first:
                y, self._state[key] = _build_tile(tile_coc, plan, ap, origin, tick, x=x_tile, keep_state=True)
            else:
                y = _build_tile(tile_coc, plan, ap, origin, tick, x=x_tile)
            y = y[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
            wt = self.anchors[ai][0]
            if wt is not None:
                y = y * wt[..., y0:y1, x0:x1]
            if out is None:
                parts.append(y)
            else:
                out[bi:bi + 1, :, y0:y1, x0:x1] += y
        if self._keep_first and hidden is None:
            self.precomputed, self._keep_first = True, False
        if out is None:
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        return out

    def adjoint(self, y: torch.Tensor, callback: Progress = None, hidden: bool = False):
        """The exact transpose ``Aᵀ y``: ``y [B, 3, H, W]`` → ``[B, 3, H, W]`` (with ``hidden``: the pair
        ``(xᵀ, hᵀ)`` of the explicit-hidden form)."""
        self._check(y, "y")
        with torch.no_grad():
            xt = torch.zeros_like(y)
            ht = torch.zeros_like(y) if hidden else None
            tick = self._ticker(callback, [0], self._total(True))
            for (ai, bi, ti), tile_coc, plan, ap, origin in self._units():
                (y0, y1, x0, x1), (ya, yb, xa, xb) = self.tiles[bi][ti]
                st = self._tile_state((ai, bi, ti), tile_coc, plan, ap, origin, tick)
                g = y[bi:bi + 1, :, y0:y1, x0:x1]
                wt = self.anchors[ai][0]
                if wt is not None:
                    g = g * wt[..., y0:y1, x0:x1]
                g = F.pad(g, (x0 - xa, xb - x1, y0 - ya, yb - y1))   # transpose of the crop
                t = _tile_adjoint(g, st, tick, hidden)
                if hidden:
                    xt[bi:bi + 1, :, ya:yb, xa:xb] += t[0]
                    ht[bi:bi + 1, :, ya:yb, xa:xb] += t[1]
                else:
                    xt[bi:bi + 1, :, ya:yb, xa:xb] += t
        return (xt, ht) if hidden else xt


class _LayeredRender(torch.autograd.Function):
    """``op(x)`` whose backward is ``op.adjoint`` (about the cost of one render)."""

    @staticmethod
    def forward(ctx, x, op, progress=None):
        ctx.op = op
        return op(x, callback=progress)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return ctx.op.adjoint(grad.contiguous()), None, None


def render_layered(lin: torch.Tensor, coc: torch.Tensor, *, aperture: Aperture = Aperture(),
                   catseye: float = 0.0, callback: Callback = None,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, extend_background: bool = True) -> torch.Tensor:
    """Occlusion-aware lens blur (:class:`LayeredOperator` applied once, clamped at 0).

    Args:
        lin: ``[B, 3, H, W]`` linear-light colour (≥ 0; highlights may exceed 1).
        coc: ``[B, 1, H, W]`` signed circle of confusion in px (positive = in front of the focus plane).
        aperture: kernel shape (far layers use its point reflection).
        catseye: cat's-eye vignetting strength ``0..1`` (0 = off): renders with the clipped apertures of
            a 3×3 grid of frame anchors and blends them by pixel position (nine times slower).
        callback: ``callback(done, total, None)`` per layer and tile (may raise to interrupt).
        memory_budget: bytes for working buffers; larger images are processed in tiles with a halo of
            twice the largest radius.
        extend_background: extend each layer behind nearer layers (hidden background); off = plain layering.

    Returns:
        ``[B, 3, H, W]`` linear light. Gradients: w.r.t. ``lin`` through the operator's adjoint (about
        one render); w.r.t. ``coc`` (when it requires grad) by plain autograd through the same maths.
    """
    progress = None if callback is None else (lambda done, total: callback(done, total, None))
    grad = torch.is_grad_enabled()
    if grad and coc.requires_grad:     # plain autograd through the same code (slower, more memory)
        op = LayeredOperator(coc, aperture=aperture, extend_background=extend_background,
                             memory_budget=memory_budget, catseye=catseye, precompute=False)
        out = op(lin, callback=progress)
    elif grad and lin.requires_grad:   # the render keeps the state its backward (the adjoint) needs
        op = LayeredOperator(coc.detach(), aperture=aperture, extend_background=extend_background,
                             memory_budget=memory_budget, catseye=catseye, precompute="first")
        out = _LayeredRender.apply(lin, op, progress)
    else:
        with torch.no_grad():
            op = LayeredOperator(coc, aperture=aperture, extend_background=extend_background,
                                 memory_budget=memory_budget, catseye=catseye, precompute=False)
            out = op(lin, callback=progress)
    return out.clamp_min(0) if out.requires_grad else out.clamp_min_(0)

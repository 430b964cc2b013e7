"""Procedural ground-truth scenes with exact depth, deterministic from a seed and a size.

A :class:`Scene` is a stack of textured :class:`Layer` s, far -> near, each with its own colour, alpha and
*metric* depth. The all-in-focus (AIF) image is their front-to-back composite in **linear light**, and the
depth/disparity maps describe the visible surface. :mod:`diffcamera.evaluation.thin_lens` renders the same layers
through a thin lens, which gives exact defocus ground truth including partial occlusion.

Conventions are those of :mod:`diffcamera.core.conventions` (not redefined here):

* images ``[1, 3, H, W]`` sRGB ``0..1``; layer colours ``[3, H, W]`` sRGB ``0..1`` (straight, not premultiplied);
* metric depth ``z`` in metres, ``z > 0``; every scene has ``near = 1 m`` and ``far = 10 m``, and its disparity is
  ``conventions.metric_depth_to_disparity(depth, near=scene.near, far=scene.far)`` (near = 1, far = 0), so
  a layer placed "at disparity d" really has disparity ``d`` in every scene.

Kinds
-----
``"layers"``  a full textured background (fronto-parallel) and 3-5 fronto-parallel alpha shapes at ordered depths.
``"slanted"`` one full-frame slanted plane: disparity linear in the image coordinates (what a plane really gives).
``"ground"``  a sky at ``far`` and a ground plane receding to a horizon (disparity linear in the row).
``"mixed"``   sky + ground + 2-4 shapes standing on the ground + sometimes a near floating shape.

Textures carry fine detail (stripes, checkers, value noise, text-like marks) and small bright highlights
(sRGB 1.0 dots, 1-2 px radius) so that blur and bokeh balls are visible. The layout is defined in normalised
image coordinates; texture periods are in pixels (fine detail at every size). Everything is drawn at 2x
supersampling and area-averaged, with CPU ``torch.Generator`` randomness only, so a ``(seed, size, kind)``
triple always yields bit-identical tensors.
"""
from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..core import conventions as cv

#: Metric range of every procedural scene, metres (disparity 1 at NEAR, 0 at FAR).
NEAR = 1.0
FAR = 10.0
KINDS = ("layers", "slanted", "ground", "mixed")
_SS = 2  # supersampling factor
_TABLE = 97  # hash table side (prime, so the lattice pattern does not repeat visibly)
#: The ``check`` of the :func:`make_scene` call running in this thread (``None`` outside one).
_CHECK: contextvars.ContextVar = contextvars.ContextVar("diffcamera_scene_check", default=None)


def _checkpoint() -> None:
    """Call the running :func:`make_scene`'s ``check`` (it may raise to stop): between full-image operations."""
    check = _CHECK.get()
    if check is not None:
        check()


@dataclass
class Layer:
    """One surface of a scene.

    Attributes:
        color: ``[3, H, W]`` sRGB ``0..1``, straight (not premultiplied) colour; defined everywhere.
        alpha: ``[1, H, W]`` coverage ``0..1`` (antialiased edges).
        depth: ``[1, H, W]`` metric depth in metres, ``z > 0``, defined everywhere (the surface extended
            where alpha = 0). Constant for fronto-parallel layers, smooth for planes.
    """

    color: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor

    def disparity(self, near: float = NEAR, far: float = FAR) -> torch.Tensor:
        """``[1, H, W]`` normalised disparity of this layer (conventions.metric_depth_to_disparity)."""
        return cv.metric_depth_to_disparity(self.depth[None], near=near, far=far)[0]

    @property
    def is_fronto(self) -> bool:
        """True when the depth is constant (a fronto-parallel layer)."""
        return bool((self.depth.amax() - self.depth.amin()) <= 1e-6 * self.depth.amax())


@dataclass
class Scene:
    """A procedural scene with exact depth.

    Attributes:
        image: ``[1, 3, H, W]`` all-in-focus sRGB ``0..1`` (linear-light composite of ``layers``).
        depth: ``[1, 1, H, W]`` metric depth (m) of the visible surface (per pixel, the layer contributing most).
        disparity: ``[1, 1, H, W]`` ``0..1``, near = 1, = ``metric_depth_to_disparity(depth, near, far)``.
        layers: far -> near.
        near, far: metres; the disparity normalisation range.
        seed, kind: what generated it.
    """

    image: torch.Tensor
    depth: torch.Tensor
    disparity: torch.Tensor
    layers: List[Layer]
    near: float
    far: float
    seed: int
    kind: str
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> Tuple[int, int]:
        """``(H, W)`` in pixels."""
        return tuple(self.image.shape[-2:])


# ----------------------------------------------------------------------------------- small helpers
def _d_to_z(d: Union[float, torch.Tensor]):
    """Normalised disparity -> metric depth for the scene range ``NEAR..FAR``."""
    return 1.0 / (1.0 / FAR + d * (1.0 / NEAR - 1.0 / FAR))


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g))


def _i(g: torch.Generator, lo: int, hi: int) -> int:
    """Integer in ``lo..hi`` inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _pick(g: torch.Generator, options: Sequence):
    return options[_i(g, 0, len(options) - 1)]


def _color(g: torch.Generator, lo: float = 0.1, hi: float = 0.9) -> torch.Tensor:
    """A random sRGB colour ``[3]``: random hue, moderate saturation, value in ``lo..hi``."""
    h = _u(g, 0, 6)
    s = _u(g, 0.25, 0.85)
    v = _u(g, lo, hi)
    k = torch.tensor([5.0, 3.0, 1.0])
    rgb = v - v * s * torch.clamp(torch.minimum((k + h) % 6, 4 - (k + h) % 6), 0, 1)
    return rgb


class _Hash:
    """A deterministic random lookup table: integer lattice coordinates -> values in ``0..1``."""

    def __init__(self, g: torch.Generator):
        self.t = torch.rand(_TABLE, _TABLE, generator=g)
        # wrapped copy (one extra row/column) for bilinear lookups in value noise
        self.wrapped = F.pad(self.t[None, None], (0, 1, 0, 1), mode="circular")

    def __call__(self, i: torch.Tensor, j: torch.Tensor, salt: int = 0) -> torch.Tensor:
        _checkpoint()
        i = torch.remainder(i + 31 * salt, _TABLE).long()
        j = torch.remainder(j * 7 + 13 * salt, _TABLE).long()
        return self.t.view(-1)[i * _TABLE + j]


def _smooth_coord(x: torch.Tensor) -> torch.Tensor:
    """Wrap to the table and warp the fraction with smoothstep (bilinear lookup -> smooth value noise)."""
    x = torch.remainder(x, _TABLE)
    f = torch.floor(x)
    t = x - f
    return f + t * t * (3 - 2 * t)


def _value_noise(h: _Hash, u: torch.Tensor, v: torch.Tensor, period: float, salt: int) -> torch.Tensor:
    """Smooth value noise in ``0..1`` with feature size ``period`` (texture px)."""
    _checkpoint()
    x = _smooth_coord(u / period + 37.17 * salt)
    _checkpoint()
    y = _smooth_coord(v / period + 19.73 * salt)
    _checkpoint()
    grid = torch.stack([x * (2.0 / _TABLE) - 1, y * (2.0 / _TABLE) - 1], -1)[None]
    _checkpoint()
    return F.grid_sample(h.wrapped, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def _fbm(h: _Hash, u, v, base: float, octaves: int, salt: int) -> torch.Tensor:
    out = torch.zeros_like(u)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        out = out + amp * _value_noise(h, u, v, base / 2 ** o, salt + o)
        _checkpoint()
        tot += amp
        amp *= 0.55
    return out / tot


def _text_marks(h: _Hash, u, v, g: torch.Generator) -> torch.Tensor:
    """Rows of random 3x5 'glyphs' (text-like marks), ``0..1`` ink coverage."""
    gw = _u(g, 4.0, 7.0)  # glyph cell width, texture px
    gh = gw * 1.6
    line = gh * _u(g, 1.3, 1.8)
    salt = _i(g, 0, 1000)
    row = torch.floor(v / line)
    lv = (v - row * line) / gh  # 0..1 inside the glyph band, >1 in the line gap
    col = torch.floor(u / gw)
    lu = u / gw - col
    bx = torch.floor(lu * 4)  # column 3 = letter spacing
    by = torch.floor(lv * 6)  # row 5 = descender gap
    bit = h(col * 4 + bx, row * 6 + by, salt) < 0.5
    space = h(col, row, salt + 1) < 0.18  # word gaps
    block = h(torch.floor(col / 23), torch.floor(row / 7), salt + 2) < 0.75  # paragraphs
    return (bit & (bx < 3) & (by < 5) & (lv < 1) & ~space & block).float()


def _highlights(h: _Hash, u, v, g: torch.Generator, px: float) -> torch.Tensor:
    """Small bright dots (radius 0.8-2 px), ``0..1`` coverage; ``px`` = texture px per image px (for AA)."""
    cell = _u(g, 14.0, 30.0)
    p = _u(g, 0.15, 0.45)
    salt = _i(g, 0, 1000)
    ci = torch.floor(u / cell)
    cj = torch.floor(v / cell)
    on = h(ci, cj, salt) < p
    cx = (ci + 0.2 + 0.6 * h(ci, cj, salt + 1)) * cell
    cy = (cj + 0.2 + 0.6 * h(ci, cj, salt + 2)) * cell
    r = 0.8 + 1.2 * h(ci, cj, salt + 3)
    _checkpoint()
    dist = torch.sqrt((u - cx) ** 2 + (v - cy) ** 2)
    _checkpoint()
    return on.float() * torch.clamp((r - dist) / px + 0.5, 0.0, 1.0)


def _texture(g: torch.Generator, u: torch.Tensor, v: torch.Tensor, px: float = 1.0 / _SS,
             highlights: bool = True, dark: bool = False) -> torch.Tensor:
    """A random texture evaluated at texture coordinates ``u, v`` (``[h, w]``, in texture px).

    Returns ``[3, h, w]`` sRGB ``0..1``. ``px`` is the size of one sample in texture px (antialiasing width).
    """
    _checkpoint()
    hsh = _Hash(g)
    c1 = _color(g, 0.05 if dark else 0.15, 0.55 if dark else 0.9)
    c2 = _color(g, 0.05, 0.9)
    kind = _pick(g, ("stripes", "checkers", "noise", "stripes+noise", "checkers+noise"))
    if "stripes" in kind:
        th = _u(g, 0, math.pi)
        period = _u(g, 3.0, 10.0)
        t = (u * math.cos(th) + v * math.sin(th)) / period
        duty = _u(g, 0.3, 0.7)
        f = t - torch.floor(t)
        edge = px / period
        pat = torch.clamp((duty - f) / edge + 0.5, 0, 1) * torch.clamp(f / edge + 0.5, 0, 1)
    elif "checkers" in kind:
        p = _u(g, 4.0, 16.0)
        th = _u(g, 0, math.pi / 2)
        uu = u * math.cos(th) - v * math.sin(th)
        vv = u * math.sin(th) + v * math.cos(th)
        pat = torch.remainder(torch.floor(uu / p) + torch.floor(vv / p), 2)
    else:
        pat = _fbm(hsh, u, v, _u(g, 12.0, 40.0), 4, _i(g, 0, 999))
        pat = torch.clamp((pat - 0.5) * 2.5 + 0.5, 0, 1)
    if "+noise" in kind:
        pat = torch.clamp(pat * 0.7 + 0.3 * _fbm(hsh, u, v, 24.0, 3, 7), 0, 1)
    _checkpoint()
    col = c1.view(3, 1, 1) * (1 - pat) + c2.view(3, 1, 1) * pat
    grain = _fbm(hsh, u, v, _u(g, 2.0, 5.0), 2, _i(g, 0, 999))  # fine grain
    _checkpoint()
    col = col * (0.8 + 0.4 * grain)
    if _u(g) < 0.5:
        ink = _color(g, 0.02, 0.2) if _u(g) < 0.7 else _color(g, 0.85, 1.0)
        m = _text_marks(hsh, u, v, g) * _u(g, 0.6, 1.0)
        _checkpoint()
        col = col * (1 - m) + ink.view(3, 1, 1) * m
    if highlights:
        _checkpoint()
        dots = _highlights(hsh, u, v, g, px)
        tint = 0.92 + 0.08 * torch.rand(3, generator=g)
        col = col * (1 - dots) + tint.view(3, 1, 1) * dots
    return col.clamp(0.0, 1.0)


def _grid(h: int, w: int):
    """Supersampled pixel-centre coordinates (image px) ``[h*SS, w*SS]`` as (x, y)."""
    ys = (torch.arange(h * _SS, dtype=torch.float32) + 0.5) / _SS
    xs = (torch.arange(w * _SS, dtype=torch.float32) + 0.5) / _SS
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return x, y


def _down(t: torch.Tensor) -> torch.Tensor:
    """Area-average ``[C, h*SS, w*SS]`` -> ``[C, h, w]``."""
    return F.avg_pool2d(t[None], _SS)[0]


def _shape_alpha(g: torch.Generator, x, y, cx: float, cy: float, r: float, kind: str) -> torch.Tensor:
    """Coverage ``0..1`` of a random shape centred at ``(cx, cy)`` of size ``r`` (image px), antialiased."""
    _checkpoint()
    dx, dy = x - cx, y - cy
    aa = 1.0 / _SS
    if kind == "disc":
        sd = torch.sqrt(dx ** 2 + dy ** 2) - r
    elif kind == "ellipse":
        e = _u(g, 0.45, 0.9)
        th = _u(g, 0, math.pi)
        a = dx * math.cos(th) + dy * math.sin(th)
        b = -dx * math.sin(th) + dy * math.cos(th)
        sd = (torch.sqrt(a ** 2 + (b / e) ** 2) - r) * (0.5 + 0.5 * e)
    elif kind == "rect":
        hw, hh = r * _u(g, 0.6, 1.2), r * _u(g, 0.5, 1.1)
        rr = _u(g, 0.0, 0.5) * min(hw, hh)
        qx = dx.abs() - hw + rr
        qy = dy.abs() - hh + rr
        sd = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2) + torch.minimum(torch.maximum(qx, qy),
                                                                                      torch.zeros_like(qx)) - rr
    elif kind == "star":
        n = _i(g, 5, 8)
        ang = torch.atan2(dy, dx) + _u(g, 0, 6.3)
        rad = r * (0.72 + 0.28 * torch.cos(n * ang))
        sd = (torch.sqrt(dx ** 2 + dy ** 2) - rad) * 0.8
    else:  # blob
        ang = torch.atan2(dy, dx)
        rad = torch.full_like(ang, r)
        for k in (2, 3, 5):
            rad = rad + r * _u(g, 0.0, 0.18) * torch.cos(k * ang + _u(g, 0, 6.3))
        sd = (torch.sqrt(dx ** 2 + dy ** 2) - rad) * 0.85
    return torch.clamp(0.5 - sd / aa, 0.0, 1.0)


SHAPES = ("disc", "ellipse", "rect", "star", "blob")


def _fronto_layer(g, x, y, h, w, d: float, alpha_ss=None, dark=False, highlights=True) -> Layer:
    off = (_u(g, 0, 500), _u(g, 0, 500))
    texture = _texture(g, x + off[0], y + off[1], highlights=highlights, dark=dark)
    _checkpoint()
    color = _down(texture)
    alpha = torch.ones(1, h, w) if alpha_ss is None else _down(alpha_ss[None])
    return Layer(color, alpha, torch.full((1, h, w), float(_d_to_z(d))))


def _composite_linear(layers: List[Layer]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back 'over' in linear light -> (``[1,3,H,W]`` sRGB image, ``[1,1,H,W]`` visible depth)."""
    acc = torch.zeros_like(layers[0].color)
    weights = []
    rest = torch.ones_like(layers[0].alpha)
    for lay in reversed(layers):  # near -> far
        _checkpoint()
        wgt = rest * lay.alpha
        acc = acc + wgt * cv.srgb_to_linear(lay.color)
        weights.append(wgt)
        rest = rest * (1 - lay.alpha)
    weights = torch.cat(weights[::-1])  # far -> near, [L, H, W]
    depths = torch.cat([lay.depth for lay in layers])
    # visible surface: the layer with the largest contribution; ties go to the nearer layer
    idx = weights.shape[0] - 1 - torch.flip(weights, [0]).argmax(0, keepdim=True)
    depth = torch.gather(depths, 0, idx)
    return cv.linear_to_srgb(acc)[None], depth[None]


# ------------------------------------------------------------------------------------- scene kinds
def _layers_kind(g, h, w) -> Tuple[List[Layer], dict]:
    x, y = _grid(h, w)
    s = min(h, w)
    d_bg = _u(g, 0.0, 0.12)
    layers = [_fronto_layer(g, x, y, h, w, d_bg, dark=True)]
    n = _i(g, 3, 5)
    # ordered disparities, separated by at least 0.08, spanning up to 1
    gaps = torch.rand(n, generator=g) + 0.4
    ds = d_bg + 0.12 + torch.cumsum(gaps, 0) / gaps.sum() * (1.0 - d_bg - 0.12) * _u(g, 0.75, 1.0)
    ds = ds - (ds[0] - (d_bg + 0.12)) * 0.5
    for i in range(n):
        d = float(ds[i])
        r = s * _u(g, 0.1, 0.2) * (0.8 + 0.6 * d)
        cx, cy = w * _u(g, 0.15, 0.85), h * _u(g, 0.15, 0.85)
        a = _shape_alpha(g, x, y, cx, cy, r, _pick(g, SHAPES))
        layers.append(_fronto_layer(g, x, y, h, w, d, alpha_ss=a))
    return layers, {"layer_disparities": [d_bg] + [float(v) for v in ds]}


def _slanted_kind(g, h, w) -> Tuple[List[Layer], dict]:
    x, y = _grid(h, w)
    th = _u(g, 0, 2 * math.pi)
    nx, ny = math.cos(th), math.sin(th)
    s = max(h, w)
    t = ((x - w / 2) * nx + (y - h / 2) * ny) / s  # about -0.7..0.7
    tmax = (abs(nx) * w + abs(ny) * h) / (2 * s)
    lo = _u(g, 0.0, 0.25)
    hi = _u(g, 0.75, 1.0)
    d = lo + (t + tmax) / (2 * tmax) * (hi - lo)  # disparity linear in x, y: a plane
    z = _d_to_z(d)
    zc = float(_d_to_z(0.5 * (lo + hi)))
    sc = (z / zc) ** 0.5  # texture painted with a perspective feel (any painting is a valid texture)
    col = _texture(g, (x - w / 2) * sc + 300, (y - h / 2) * sc + 300, px=float(sc.max()) / _SS)
    lay = Layer(_down(col), torch.ones(1, h, w), _down(z[None]))
    return [lay], {"disparity_range": [lo, hi], "direction": [nx, ny]}


def _sky_and_ground(g, h, w):
    x, y = _grid(h, w)
    yh = h * _u(g, 0.3, 0.5)  # horizon row (image px)
    d_bottom = _u(g, 0.85, 1.0)
    # sky: smooth gradient + clouds + a few bright lights, at FAR (disparity 0)
    top, bot = _color(g, 0.2, 0.7), _color(g, 0.5, 0.95)
    hsh = _Hash(g)
    grad = (y / h).clamp(0, 1)
    sky = top.view(3, 1, 1) * (1 - grad) + bot.view(3, 1, 1) * grad
    sky = sky * (0.85 + 0.3 * _fbm(hsh, x, y * 2.5, 40.0, 4, 3))
    dots = _highlights(hsh, x, y, g, 1.0 / _SS) * (y < yh).float()
    sky = (sky * (1 - dots) + dots).clamp(0, 1)
    sky_layer = Layer(_down(sky), torch.ones(1, h, w), torch.full((1, h, w), FAR))
    # ground plane: inverse depth linear in the row below the horizon
    yp = (y - yh).clamp_min(1e-3)
    y0 = h - yh
    dgr = (d_bottom * (y - yh) / y0).clamp(0.0, 1.0)
    u = (x - w / 2) * y0 / yp + 500
    v = y0 * y0 / yp
    tex = _texture(g, u, v, px=1.0 / _SS)
    fog = _color(g, 0.5, 0.9)
    k = torch.clamp(dgr / 0.25, 0, 1)  # fade the texture to fog near the horizon
    tex = fog.view(3, 1, 1) * (1 - k) + tex * k
    a = torch.clamp((y - yh) * _SS + 0.5, 0, 1)
    ground = Layer(_down(tex), _down(a[None]), _down(_d_to_z(dgr)[None]))
    return sky_layer, ground, yh, d_bottom


def _ground_kind(g, h, w):
    sky, ground, yh, db = _sky_and_ground(g, h, w)
    return [sky, ground], {"horizon_row": yh, "disparity_bottom": db}


def _mixed_kind(g, h, w):
    sky, ground, yh, db = _sky_and_ground(g, h, w)
    x, y = _grid(h, w)
    n = _i(g, 2, 4)
    ds = sorted(_u(g, 0.15, 0.8) for _ in range(n))
    objs = []
    for d in ds:
        base = yh + d / db * (h - yh)  # the row where the ground has disparity d
        r = h * _u(g, 0.08, 0.16) * (0.6 + d)
        cx = w * _u(g, 0.1, 0.9)
        a = _shape_alpha(g, x, y, cx, base - r, r, _pick(g, SHAPES))
        a = a * torch.clamp((base - y) * _SS + 0.5, 0, 1)  # stands on the ground: cut at its base row
        objs.append(_fronto_layer(g, x, y, h, w, d, alpha_ss=a))
    if _u(g) < 0.5:  # a near floating object, often cut by the frame
        d = _u(g, 0.85, 1.0)
        r = min(h, w) * _u(g, 0.15, 0.25)
        a = _shape_alpha(g, x, y, w * _pick(g, (-0.02, 1.02)) + w * _u(g, -0.1, 0.1), h * _u(g, 0.2, 0.7), r,
                         _pick(g, SHAPES))
        objs.append(_fronto_layer(g, x, y, h, w, d, alpha_ss=a))
        ds = ds + [d]
    # Note: the ground is composited behind every standing object. That is exact here because the relative
    # parallax between the ground just below an object's base and the object is K*|grad d| < 1 px per px
    # of distance for any K < (H - horizon) / d_bottom, so the nearer ground never reaches over the base.
    return [sky, ground] + objs, {"horizon_row": yh, "disparity_bottom": db, "object_disparities": ds}


_BUILDERS = {"layers": _layers_kind, "slanted": _slanted_kind, "ground": _ground_kind, "mixed": _mixed_kind}


def make_scene(seed: int, size: Union[int, Tuple[int, int]] = 256, kind: str = "layers",
               check: Optional[Callable[[], None]] = None) -> Scene:
    """A procedural scene, bit-identical for the same ``(seed, size, kind)``.

    Args:
        seed: any integer.
        size: ``S`` (square) or ``(H, W)`` in pixels.
        kind: one of :data:`KINDS`.
        check: optional ``fn()`` called between the full-image operations (every noise octave, shape, texture
            and compositing step); raise in it to stop (ComfyUI's Cancel: a 2048² scene takes minutes on a CPU).

    Returns:
        :class:`Scene` with ``image [1,3,H,W]`` sRGB AIF, ``depth [1,1,H,W]`` metres, ``disparity [1,1,H,W]``
        ``0..1`` (near = 1) and ``layers`` far -> near; ``near = 1 m``, ``far = 10 m``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown scene kind {kind!r}; use one of {', '.join(KINDS)}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise ValueError(f"scene size must be at least 8x8 pixels, got {h}x{w}")
    g = torch.Generator().manual_seed(int(seed) * 7919 + KINDS.index(kind))
    token = _CHECK.set(check)
    try:
        layers, meta = _BUILDERS[kind](g, h, w)
        image, depth = _composite_linear(layers)
    finally:
        _CHECK.reset(token)
    disparity = cv.metric_depth_to_disparity(depth, near=NEAR, far=FAR)
    return Scene(image=image, depth=depth, disparity=disparity, layers=layers, near=NEAR, far=FAR,
                 seed=int(seed), kind=kind, meta=meta)


def scene_from_layers(layers: Sequence[Layer], near: float = NEAR, far: float = FAR, kind: str = "custom",
                      seed: int = -1) -> Scene:
    """A :class:`Scene` from hand-made layers (far -> near), e.g. for tests; the AIF image is their composite."""
    layers = list(layers)
    if not layers:
        raise ValueError("scene_from_layers needs at least one layer")
    image, depth = _composite_linear(layers)
    disparity = cv.metric_depth_to_disparity(depth, near=near, far=far)
    return Scene(image=image, depth=depth, disparity=disparity, layers=layers, near=near, far=far, seed=seed,
                 kind=kind)


def depth_for_disparity(d: Union[float, torch.Tensor], near: float = NEAR, far: float = FAR):
    """Metric depth (m) that has normalised disparity ``d`` in a scene with range ``near..far``."""
    return 1.0 / (1.0 / far + d * (1.0 / near - 1.0 / far))


def make_scenes(seeds: Sequence[int], size: Union[int, Tuple[int, int]] = 256, kind: str = "layers") -> List[Scene]:
    """:func:`make_scene` for each seed. ``kind="mixed"`` here means the kind given, not a rotation of kinds."""
    return [make_scene(s, size, kind) for s in seeds]


def scene_batch(scenes: Sequence[Scene]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack scenes of one size -> ``(images [B,3,H,W], disparities [B,1,H,W])``."""
    return torch.cat([s.image for s in scenes]), torch.cat([s.disparity for s in scenes])

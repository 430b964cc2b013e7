"""Choosing the focus: read the disparity under a point or a mask, and show what will be sharp.

Conventions (:mod:`diffcamera.core.conventions`): disparity ``[B,1,H,W]`` in ``0..1`` (near = 1); a focus point
``(x, y)`` is normalised (``0..1``, x right, y down, ``(0,0)`` the top-left corner of the top-left pixel);
``K`` is the blur radius in pixels per unit ``|d − d_f|`` at the image's own resolution.

The point widget of the FocusPicker node is a plain JSON string so that API users set it directly:
``{"x": 0.5, "y": 0.5}`` for one focus for every image of a batch, or a list
``[{"x": 0.2, "y": 0.3}, {"x": 0.7, "y": 0.5}]`` with one point per image.
"""
from __future__ import annotations

import json
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .checks import (check_batch, check_finite, check_image, check_map, check_same_size,
                     check_values)
from .conventions import as_batch, point_to_pixel
from .values import Focus

DEFAULT_POINT_JSON = '{"x": 0.5, "y": 0.5}'
#: Default in-focus tolerance of the preview tint: ``|K·(d − d_f)|`` below this many pixels counts as sharp.
IN_FOCUS_TOLERANCE_PX = 1.0
#: Disparity tolerance that groups window values into one surface (see :func:`robust_median`).
CLUSTER_TOLERANCE = 0.02
#: Bounds of the point widget's JSON: characters, and nesting depth of lists/objects (a list of points is 2).
MAX_POINTS_JSON_CHARS = 16384
MAX_POINTS_JSON_DEPTH = 4

Floats = Union[float, Sequence[float], torch.Tensor]


# ------------------------------------------------------------------------------------------ parsing
def _point_from(item, widget: str, where: str) -> Tuple[float, float]:
    if isinstance(item, dict):
        missing = [k for k in ("x", "y") if k not in item]
        if missing:
            raise ValueError(f"{widget}: {where} lacks {' and '.join(missing)}; write it as {DEFAULT_POINT_JSON}")
        x, y = item["x"], item["y"]
    elif isinstance(item, (list, tuple)) and len(item) == 2 and not any(isinstance(v, (list, dict)) for v in item):
        x, y = item
    else:
        raise ValueError(f"{widget}: {where} must be an object like {DEFAULT_POINT_JSON}, got {json.dumps(item)}")
    try:
        if isinstance(x, bool) or isinstance(y, bool):
            raise TypeError
        x, y = float(x), float(y)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an integer too large for a float
        raise ValueError(f"{widget}: {where} needs numbers in 0..1 for x and y, got x={str(x)[:40]}, "
                         f"y={str(y)[:40]}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{widget}: {where} has a non-finite coordinate (x={x}, y={y})")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"{widget}: {where} is outside the image: x={x}, y={y}; coordinates are normalised, "
                         f"0..1 from the left/top edge (e.g. {DEFAULT_POINT_JSON} is the centre)")
    return x, y


def _nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of JSON ``text`` (brackets inside strings ignored), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def parse_points_json(text: str, widget: str = "focus_point") -> List[Tuple[float, float]]:
    """Parse the point widget: one point ``{"x":..,"y":..}`` or a non-empty list of them (one per image).

    ``[x, y]`` pairs are accepted too. Coordinates are normalised and must lie in ``0..1``.

    Raises:
        ValueError: naming ``widget``, for malformed JSON, missing keys, non-numbers, out-of-range points.
    """
    if not isinstance(text, str):
        raise ValueError(f"{widget}: expected a JSON string like {DEFAULT_POINT_JSON}, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{widget}: empty; write a point like {DEFAULT_POINT_JSON}")
    if len(text) > MAX_POINTS_JSON_CHARS:
        raise ValueError(f"{widget}: {len(text)} characters is too long (at most {MAX_POINTS_JSON_CHARS}); "
                         f"give one point like {DEFAULT_POINT_JSON} or one per image")
    if _nesting_depth(text) > MAX_POINTS_JSON_DEPTH:
        raise ValueError(f"{widget}: lists/objects nested more than {MAX_POINTS_JSON_DEPTH} deep; write a point "
                         f"like {DEFAULT_POINT_JSON} or a list of them")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{widget}: not valid JSON ({exc.msg} at character {exc.pos}): {text[:80]!r}; "
                         f"write a point like {DEFAULT_POINT_JSON}") from None
    except ValueError:   # Python's own limit on the digits of an integer (4300)
        raise ValueError(f"{widget}: a number in it is too long; write a point like {DEFAULT_POINT_JSON}") from None
    if isinstance(data, dict):
        return [_point_from(data, widget, "the point")]
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{widget}: the list of points is empty; give at least one point like {DEFAULT_POINT_JSON}")
        if len(data) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
            return [_point_from(data, widget, "the point")]
        return [_point_from(item, widget, f"point {i}") for i, item in enumerate(data)]
    raise ValueError(f"{widget}: expected an object like {DEFAULT_POINT_JSON} or a list of them, got {text!r}")


def parse_point_json(text: str, widget: str = "focus_point") -> Tuple[float, float]:
    """Parse a single point ``{"x": .., "y": ..}`` -> ``(x, y)`` (see :func:`parse_points_json`)."""
    points = parse_points_json(text, widget)
    if len(points) != 1:
        raise ValueError(f"{widget}: expected one point, got a list of {len(points)}")
    return points[0]


def point_json(x: float, y: float) -> str:
    """The widget string for a point (4 decimals, the format the front end writes)."""
    return json.dumps({"x": round(float(x), 4), "y": round(float(y), 4)})


# --------------------------------------------------------------------------------------- validation
def check_disparity(disparity: torch.Tensor, name: str = "depth") -> torch.Tensor:
    """``[B,1,H,W]`` finite disparity, else a ValueError naming ``name``."""
    check_map(disparity, name)
    return check_finite(disparity, name, "re-estimate it or clean it (e.g. with DepthFromImage) before picking a focus")


def default_window(height: int, width: int) -> int:
    """Median window side in pixels: ~1 % of the long side, odd, at least 5 (5 px at 512², 11 px at 1024²)."""
    w = max(5, int(round(0.01 * max(height, width))))
    return w if w % 2 else w + 1


def _points(value: Floats, batch: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1).cpu()
    check_batch(t.numel(), batch, name, "values")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"{name}: normalised coordinates must lie in 0..1, got {t.tolist()}")
    return t.expand(batch).clone()


# ------------------------------------------------------------------------------------- reading focus
def read_disparity_at(disparity: torch.Tensor, x: Floats, y: Floats, window: Optional[int] = None,
                      cluster_tolerance: float = None) -> torch.Tensor:
    """Robust median disparity in a ``window`` × ``window`` pixel square around each image's point.

    Args:
        disparity: ``[B,1,H,W]`` 0..1.
        x, y: normalised point(s): a float for all images or ``B`` values.
        window: odd side in pixels (even values grow by one; 1 = the single pixel); ``None`` ->
            :func:`default_window`. The square is clipped at the borders.
        cluster_tolerance: see :func:`robust_median` (default :data:`CLUSTER_TOLERANCE`; 0 = plain median).

    Returns:
        ``[B]`` float32 focus disparities. The (cluster) median makes a click next to a depth edge pick the
        surface that covers most of the window instead of a flying pixel or a blend of both sides.
    """
    cluster_tolerance = CLUSTER_TOLERANCE if cluster_tolerance is None else float(cluster_tolerance)
    check_disparity(disparity)
    b, _, h, w = disparity.shape
    xs, ys = _points(x, b, "x"), _points(y, b, "y")
    win = default_window(h, w) if window is None or window <= 0 else int(window)
    half = win // 2
    out = torch.empty(b, dtype=torch.float32)
    for i in range(b):
        row, col = point_to_pixel(float(xs[i]), float(ys[i]), h, w)
        patch = disparity[i, 0, max(0, row - half):row + half + 1, max(0, col - half):col + half + 1]
        out[i] = robust_median(patch.reshape(-1).float().cpu(), cluster_tolerance)
    return out


def robust_median(values: torch.Tensor, tolerance: float = CLUSTER_TOLERANCE) -> torch.Tensor:
    """Median of the most populated disparity cluster among ``values`` (1-D).

    Each value's support is the number of values within ``± tolerance`` of it; the best-supported value
    (ties: the one nearest the plain median, then the farthest) is the surface under the click, and the
    median of the values within ``± tolerance`` of it is returned. On a smooth surface this is the plain
    median; on a depth edge it is one of the two real surfaces, never the in-between "flying" values that a
    plain median returns when the window straddles the edge evenly. ``tolerance <= 0`` gives the plain median.
    """
    v, _ = values.reshape(-1).sort()
    med = v[(v.numel() - 1) // 2]
    if tolerance <= 0 or v.numel() < 3:
        return med
    lo = torch.searchsorted(v, v - tolerance, right=False)
    hi = torch.searchsorted(v, v + tolerance, right=True)
    support = hi - lo
    best = support == support.max()
    gap = torch.where(best, (v - med).abs(), torch.full_like(v, float("inf")))
    pick = int(torch.argmin(gap))  # first minimum: the farther (smaller-disparity) one on an exact tie
    centre = v[pick]
    cluster = v[(v >= centre - tolerance) & (v <= centre + tolerance)]
    return cluster[(cluster.numel() - 1) // 2]


def focus_from_point(disparity: torch.Tensor, x: Floats, y: Floats, window: Optional[int] = None,
                     cluster_tolerance: float = None) -> Focus:
    """Focus on the surface under a point (per image or shared); see :func:`read_disparity_at`."""
    b = disparity.shape[0]
    d = read_disparity_at(disparity, x, y, window, cluster_tolerance)
    return Focus(_points(x, b, "x"), _points(y, b, "y"), d, ["point"] * b)


def _check_mask(mask: torch.Tensor, disparity: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(mask, torch.Tensor) and mask.dim() == 3:
        mask = mask.unsqueeze(1)
    check_map(mask, name, "mask (0..1; or [B,H,W])")
    check_same_size(mask, disparity.shape[-2:], name, "resize the mask to the image first")
    b = disparity.shape[0]
    check_batch(mask.shape[0], b, name, "masks")
    return mask.expand(b, -1, -1, -1)


def focus_from_mask(disparity: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5,
                    name: str = "mask") -> Focus:
    """Focus on the median disparity inside a mask ("focus on this person").

    Args:
        disparity: ``[B,1,H,W]`` 0..1.
        mask: ``[B|1,1,H,W]`` (or ``[B|1,H,W]``) 0..1, same ``H × W``; pixels ``> threshold`` count.

    Returns:
        a :class:`Focus` whose point is the centroid of each mask and whose method is ``"mask"``.

    Raises:
        ValueError: empty mask (naming the image), size or batch mismatch, NaN depth.
    """
    check_disparity(disparity)
    mask = _check_mask(mask, disparity, name)
    b, _, h, w = disparity.shape
    ds, xs, ys = [], [], []
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    for i in range(b):
        sel = mask[i, 0].float().cpu() > threshold
        if not sel.any():
            where = f" for image {i}" if b > 1 else ""
            raise ValueError(f"{name}: the mask is empty{where} (no pixel above {threshold}); draw the region to "
                             f"focus on, or disconnect the mask to use the point")
        ds.append(disparity[i, 0].float().cpu()[sel].median())
        rr, cc = torch.nonzero(sel, as_tuple=True)
        xs.append(cols[cc].mean())
        ys.append(rows[rr].mean())
    return Focus(torch.stack(xs), torch.stack(ys), torch.stack(ds), ["mask"] * b)


def focus_override(value: Floats, batch: int, x: Floats = 0.5, y: Floats = 0.5,
                   name: str = "focus disparity override") -> Focus:
    """A focus given directly as disparity (``0..1``), recording the point it is shown at."""
    d = check_values(value, batch, name, 0.0, 1.0).float().expand(batch).clone()
    return Focus(_points(x, batch, "x"), _points(y, batch, "y"), d, ["override"] * batch)


def focus_disparities(focus: Union[Focus, float], name: str = "focus") -> torch.Tensor:
    """The focus disparities ``[F]`` (one for all images/frames, or one each) of a :class:`Focus` (FocusPicker,
    RackFocus) or of a plain disparity in ``0..1``."""
    if isinstance(focus, Focus):
        return check_values(focus.disparity, focus.batch, name, 0.0, 1.0).float()
    return check_values(focus, 1, name, 0.0, 1.0).float()


def pick_focus(image: torch.Tensor, disparity: torch.Tensor, focus_point: str, window: int = 0,
               mask: Optional[torch.Tensor] = None, override: Optional[float] = None,
               widget: str = "focus_point") -> Tuple[Focus, torch.Tensor]:
    """What FocusPicker picks: ``(Focus, disparity [B,1,H,W] on the CPU)``.

    ``image`` ``[B,3,H,W]``; ``disparity`` ``[1|B,1,H,W]`` of the same size; ``focus_point`` the point widget's JSON
    (one point, or one per image; :func:`parse_points_json`); ``window`` the median window (0 = automatic);
    ``mask`` ``[1|B,1,H,W]``. Precedence: ``override`` (a disparity in ``0..1``; ``None`` or negative = off) >
    ``mask`` > ``focus_point``.
    """
    b, h, w = check_image(image)
    disparity = check_disparity(disparity, "depth")
    check_same_size(disparity, (h, w), "depth",
                    "estimate depth on this image or resize it with DepthFromImage (image input)")
    check_batch(disparity.shape[0], b, "depth", "depth maps")
    disparity = disparity.expand(b, -1, -1, -1).float().cpu()
    points = parse_points_json(focus_point, widget)
    check_batch(len(points), b, widget, "points")
    xs = torch.tensor([p[0] for p in points], dtype=torch.float32).expand(b)
    ys = torch.tensor([p[1] for p in points], dtype=torch.float32).expand(b)
    if mask is not None:
        focus = focus_from_mask(disparity, mask.float().cpu(), name="mask")
    else:
        focus = focus_from_point(disparity, xs, ys, window=int(window) or None)
    if override is not None and override >= 0:
        focus = focus_override(override, b, focus.x, focus.y, name="focus_disparity_override")
    return focus, disparity


# ------------------------------------------------------------------------------------------ preview
def in_focus_mask(disparity: torch.Tensor, focus_disparity: Floats, K: Floats,
                  tolerance_px: float = IN_FOCUS_TOLERANCE_PX) -> torch.Tensor:
    """``[B,1,H,W]`` bool: where the blur radius ``|K·(d − d_f)|`` stays below ``tolerance_px`` pixels."""
    b = disparity.shape[0]
    d_f = as_batch(torch.as_tensor(focus_disparity, dtype=torch.float32), b, disparity.float()).view(-1, 1, 1, 1)
    k = as_batch(torch.as_tensor(K, dtype=torch.float32), b, disparity.float()).view(-1, 1, 1, 1)
    return (k * (disparity.float() - d_f)).abs() < tolerance_px


def draw_marker(image: torch.Tensor, x: Floats, y: Floats, radius: Optional[float] = None) -> torch.Tensor:
    """Draw an antialiased ring with a centre dot (white on a dark outline) at each image's point.

    ``image`` ``[B,3,H,W]`` 0..1; ``radius`` in pixels (default 2 % of the long side, at least 5). Only the
    square around each marker is computed, so the cost does not grow with the image size.
    """
    b, _, h, w = image.shape
    xs, ys = _points(x, b, "x"), _points(y, b, "y")
    r = float(radius) if radius else max(5.0, 0.02 * max(h, w))
    t = max(2.0, r / 3.0)
    reach = int(math.ceil(r + t + 2))
    out = image.float().clone()

    def cover(inner_dist):  # 1 inside, antialiased over one pixel
        return (0.5 - inner_dist).clamp(0.0, 1.0)

    for i in range(b):
        px, py = float(xs[i]) * w, float(ys[i]) * h
        c0, c1 = max(0, int(px) - reach), min(w, int(px) + reach + 1)
        r0, r1 = max(0, int(py) - reach), min(h, int(py) + reach + 1)
        cols = torch.arange(c0, c1, device=image.device, dtype=torch.float32) + 0.5 - px
        rows = torch.arange(r0, r1, device=image.device, dtype=torch.float32) + 0.5 - py
        dist = torch.sqrt(rows.view(-1, 1) ** 2 + cols.view(1, -1) ** 2)
        ring = cover((dist - r).abs() - t / 2)
        dot = cover(dist - t)
        outline = torch.maximum(cover((dist - r).abs() - t / 2 - 1.0), cover(dist - t - 1.0))
        white = torch.maximum(ring, dot)
        crop = out[i, :, r0:r1, c0:c1] * (1 - outline)      # dark outline
        out[i, :, r0:r1, c0:c1] = crop * (1 - white) + white
    return out.clamp(0.0, 1.0)


def focus_preview(image: torch.Tensor, disparity: torch.Tensor, focus: Focus, K: Floats,
                  tolerance_px: float = IN_FOCUS_TOLERANCE_PX, tint=(0.15, 1.0, 0.35),
                  strength: float = 0.45) -> torch.Tensor:
    """The picker's preview: ``image`` tinted where it will be in focus, with a marker at the point.

    Args:
        image: ``[B,3,H,W]`` sRGB 0..1; disparity ``[B,1,H,W]`` of the same size.
        focus: per-image point and focus disparity.
        K: blur radius (px) per unit disparity at this resolution (``conventions.level_to_K``).
        tolerance_px: a pixel counts as in focus where ``|K·(d − d_f)| < tolerance_px``.

    Returns:
        ``[B,3,H,W]`` sRGB 0..1.
    """
    sharp = in_focus_mask(disparity, focus.disparity, K, tolerance_px).to(image.dtype)
    colour = torch.tensor(tint, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    tinted = image * (1 - strength * sharp) + colour * (strength * sharp)
    return draw_marker(tinted, focus.x, focus.y)


def resize_like(t: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """``[B,C,h,w]`` -> ``[B,C,height,width]`` (no-op when already that size)."""
    if tuple(t.shape[-2:]) == (height, width):
        return t
    return F.interpolate(t.float(), size=(height, width), mode=mode, align_corners=False if mode != "nearest" else None)

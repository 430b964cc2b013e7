"""Input checks the core's entry points share (renderer, pipeline, focus, video, the CLI), written once.

Each raises ``ValueError`` naming the input and the fix, before any work; shapes and ranges are
those of :mod:`diffcamera.core.conventions`. What ComfyUI's own types guarantee (an IMAGE is a float tensor
``[B,H,W,C]``, a FLOAT is in its min..max) is checked for nodes by :mod:`diffcamera.nodes.validation`; these are
the checks the core needs from every caller: the node layer, the CLI and Python users alike.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .conventions import K_to_level, max_K


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def check_image(image, name: str = "image") -> Tuple[int, int, int]:
    """A non-empty ``[B,3,H,W]`` tensor (sRGB 0..1); returns ``(B, H, W)``."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{name}: expected a [B,3,H,W] image tensor (sRGB 0..1), got {_shape(image)}")
    b, _, h, w = image.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{name}: the image is empty ({tuple(image.shape)}); give at least one 1x1 image")
    return b, h, w


def check_map(value, name: str = "depth", what: str = "disparity map (0..1, near = 1)") -> torch.Tensor:
    """A one-channel map ``[B,1,H,W]`` (disparity, mask)."""
    if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[1] != 1:
        raise ValueError(f"{name}: expected a [B,1,H,W] {what}, got {_shape(value)}")
    return value


def check_finite(value: torch.Tensor, name: str, fix: str = "clean it first") -> torch.Tensor:
    """No NaN or infinite value in ``value``."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise ValueError(f"{name}: contains {int(bad.sum())} NaN or infinite values; {fix}")
    return value


def check_same_size(value: torch.Tensor, size: Sequence[int], name: str = "depth",
                    fix: str = "estimate the depth from this image, or resize it to the image") -> None:
    """``value`` ``[..., h, w]`` has the image's ``size`` ``(H, W)``."""
    h, w = int(size[0]), int(size[1])
    if tuple(value.shape[-2:]) != (h, w):
        raise ValueError(f"{name} is {value.shape[-1]}×{value.shape[-2]} px but the image is {w}×{h}; {fix}")


def check_batch(count: int, batch: int, name: str, what: str = "maps", per: str = "images") -> None:
    """``count`` items (maps, masks, values, points) for ``batch`` images broadcast: one for all, or one each."""
    if int(count) not in (1, int(batch)):
        raise ValueError(f"{name}: {count} {what} for {batch} {per}; give one, or one per {per.rstrip('s')}")


def check_values(value, batch: int, name: str, lo: float = float("-inf"), hi: float = float("inf"), *,
                 lo_open: bool = False, hint: str = "") -> Optional[torch.Tensor]:
    """A number or ``[1|B]`` values (``None`` passes), finite and in ``lo..hi`` (``lo`` itself refused with
    ``lo_open``); returns them ``[n]`` float64. ``hint`` is added to the message (what a value means)."""
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    check_batch(t.numel(), batch, name, "values")
    too_low = (t <= lo) if lo_open else (t < lo)
    if not bool(torch.isfinite(t).all()) or bool(too_low.any()) or bool((t > hi).any()):
        got = f"{float(t[0]):g}" if t.numel() == 1 else str(t.tolist())
        raise ValueError(f"{name}: must be finite{_range(lo, hi, lo_open)}{hint}, got {got}")
    return t


def check_blur_strength(K, batch: int, height: int, width: int, name: str = "K") -> Optional[torch.Tensor]:
    """Blur strengths ``K`` (px per unit disparity at ``height × width``; a number or ``[1|B]`` values, ``None``
    passes): finite, ``≥ 0`` and at most :func:`~diffcamera.core.conventions.max_K` (the image's long side).
    Returns them ``[n]`` float64."""
    t = check_values(K, batch, f"{name} (blur radius in px per unit disparity)", lo=0.0)
    top = max_K(height, width)
    if t is not None and bool((t > top).any()):
        worst = float(t.max())
        raise ValueError(f"{name}: {worst:g} px per unit disparity (bokeh level {K_to_level(worst, height, width):g}) "
                         f"is more than this {width}×{height} image accepts, {top:g} px (level "
                         f"{K_to_level(top, height, width):g}); lower the level")
    return t


def _range(lo: float, hi: float, lo_open: bool = False) -> str:
    if lo > float("-inf") and hi < float("inf"):
        return f" and in ({lo:g}, {hi:g}]" if lo_open else f" and in {lo:g}..{hi:g}"
    if lo > float("-inf"):
        return f" and {'>' if lo_open else '>='} {lo:g}"
    if hi < float("inf"):
        return f" and <= {hi:g}"
    return ""


def disparity_range_problem(disparity: torch.Tensor) -> Optional[str]:
    """What is wrong with a disparity map's values (NaN / infinite, or outside ``0..1``), or ``None``: values
    outside the convention's range make blur radii (and the renderers' windows and time) grow without bound."""
    if not bool(torch.isfinite(disparity).all()):
        return "the depth map contains NaN or infinite values; re-estimate it or clean it"
    lo, hi = float(disparity.min()), float(disparity.max())
    if lo < 0.0 or hi > 1.0:
        return (f"the depth map holds values {lo:g}..{hi:g} but disparity is 0..1 (near = 1); convert it with "
                "DepthFromImage (or diffcamera.core.depth.convert_depth_map)")
    return None


def check_image_and_depth(image, disparity, name: str = "depth",
                          fix: str = "estimate the depth from this image, or resize it to the image") -> int:
    """An image ``[B,3,H,W]`` and its disparity ``[1|B,1,H,W]`` of the same size, both finite; returns ``B``."""
    b, h, w = check_image(image)
    check_map(disparity, name)
    check_same_size(disparity, (h, w), name, fix)
    check_batch(disparity.shape[0], b, name, "depth maps")
    check_finite(image, "image")
    check_finite(disparity, name, "re-estimate the depth map or clean it")
    problem = disparity_range_problem(disparity)
    if problem:
        raise ValueError(f"{name}: {problem}")
    return b

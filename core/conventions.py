"""The project's conventions, written once. Every other module imports them from here.

Tensors
-------
* **Image** (core): ``[B, 3, H, W]`` float32, **sRGB-encoded**, values in ``0..1``.
  ComfyUI's ``IMAGE`` is ``[B, H, W, C]``; the node layer converts with :func:`comfy_to_core` /
  :func:`core_to_comfy` (and MASKs with :func:`comfy_mask_to_core` / :func:`core_to_comfy_mask`), nothing else does.
* **Linear light**: blur, compositing and highlight maths run on linear RGB, obtained with
  :func:`srgb_to_linear` (kornia's exact sRGB transfer curve) and undone with :func:`linear_to_srgb`.
* **Disparity** ``d``: ``[B, 1, H, W]`` float32 in ``0..1``, **near = 1, far = 0** (normalised inverse
  depth, the convention of BokehMe and DiffCamera's simulation). Produced from metric depth by
  :func:`metric_depth_to_disparity`.
* **Metric depth** ``z``: ``[B, 1, H, W]`` in scene units (metres for the procedural scenes), ``z > 0``.
* **Mask**: ``[B, 1, H, W]`` in the core, ``[B, H, W]`` in ComfyUI.

Focus and blur
--------------
* **Focus point** ``(x, y)``: normalised image coordinates in ``0..1``, ``x`` to the right, ``y`` down;
  ``(0, 0)`` is the top-left corner of the top-left pixel, so pixel column ``i`` covers
  ``x in [i/W, (i+1)/W)``. See :func:`point_to_pixel`.
* **Focus disparity** ``d_f``: the disparity that is rendered sharp, in ``0..1``.
* **K** (the *bokeh strength* of BokehMe): blur radius in pixels **at the image's own resolution** is
  ``r = K · |d − d_f|``. The **signed circle of confusion** is ``c = K · (d − d_f)`` pixels; ``c > 0`` for
  surfaces nearer than the focus plane.
* **Bokeh level** (artist-facing, resolution-independent): the blur radius, in pixels per 1024 pixels
  of the image's long side, of a surface at ``|d − d_f| = 1``. ``K = level · long_side / 1024``
  (:func:`level_to_K`). The same level gives the same look at 512² and at 4096².

Latents (FLUX family)
---------------------
* VAE latents are ``[B, 16, H/8, W/8]``, shifted and scaled as FLUX does; the DiT sees 2×2-packed tokens
  (``H/16 · W/16`` tokens of 64 values). Images are padded to a multiple of :data:`LATENT_MULTIPLE` pixels.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch

Number = Union[float, int]

#: Pixel multiple that every DiT input is padded to (VAE ×8, then 2×2 token packing).
LATENT_MULTIPLE = 16
#: Reference long side, in pixels, that the artist-facing bokeh level is measured against.
LEVEL_REFERENCE_PIXELS = 1024
#: Largest blur strength the core accepts, in px per unit disparity: the image's long side (bokeh level 1024, a
#: blur disk as wide as the frame at a disparity difference of 0.5) or :data:`MAX_K_FLOOR` px on small images.
#: Beyond it the blur only averages the frame while the renderers' windows, FFT grids and time keep growing with
#: the radius (a level of 1e5 on an 80 px image ran for minutes). The nodes' widgets stop lower (BokehSimulate
#: at level 400).
MAX_LEVEL = float(LEVEL_REFERENCE_PIXELS)
MAX_K_FLOOR = 64.0
#: Disparity band around the focus disparity; ``|d − d_f|`` is in ``0..1``.
DISPARITY_RANGE = (0.0, 1.0)


def level_to_K(level: Number, height: int, width: int) -> float:
    """Artist bokeh level (px per 1024 px of long side) -> K at an ``height`` × ``width`` image."""
    return float(level) * max(int(height), int(width)) / LEVEL_REFERENCE_PIXELS


def K_to_level(K: Number, height: int, width: int) -> float:
    """Inverse of :func:`level_to_K`."""
    return float(K) * LEVEL_REFERENCE_PIXELS / max(int(height), int(width))


def max_K(height: int, width: int) -> float:
    """The largest ``K`` (px per unit disparity) accepted at ``height × width``: see :data:`MAX_LEVEL`."""
    return max(MAX_K_FLOOR, level_to_K(MAX_LEVEL, height, width))


def signed_coc(disparity: torch.Tensor, focus_disparity: Union[Number, torch.Tensor],
               K: Union[Number, torch.Tensor]) -> torch.Tensor:
    """Signed circle of confusion ``K·(d − d_f)`` in pixels, ``[B,1,H,W]``; positive = nearer than focus.

    ``focus_disparity`` and ``K`` are floats or ``[B]`` tensors.
    """
    b = disparity.shape[0]
    d_f = as_batch(focus_disparity, b, disparity)
    k = as_batch(K, b, disparity)
    return k.view(-1, 1, 1, 1) * (disparity - d_f.view(-1, 1, 1, 1))


def as_batch(value: Union[Number, torch.Tensor], batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or ``[1]``/``[B]`` tensor as a ``[B]`` tensor on ``like``'s device and dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"expected a scalar or {batch} values, got {t.numel()}")
    return t


def metric_depth_to_disparity(depth: torch.Tensor, near: float = None, far: float = None) -> torch.Tensor:
    """Metric depth ``z > 0`` -> normalised disparity in ``0..1`` (near = 1).

    ``1/z`` is min-max normalised per image, between ``1/far`` and ``1/near`` when given (so that
    several images share one scale), else between the image's own extremes. A constant depth map
    gives disparity 0.5 everywhere.
    """
    inv = 1.0 / depth.clamp_min(1e-6)
    b = inv.shape[0]
    flat = inv.reshape(b, -1)
    lo = flat.amin(1) if far is None else torch.full((b,), 1.0 / far, dtype=inv.dtype, device=inv.device)
    hi = flat.amax(1) if near is None else torch.full((b,), 1.0 / near, dtype=inv.dtype, device=inv.device)
    span = (hi - lo).view(-1, 1, 1, 1)
    out = (inv - lo.view(-1, 1, 1, 1)) / span.clamp_min(1e-12)
    out = torch.where(span > 1e-12, out, torch.full_like(out, 0.5))
    return out.clamp(0.0, 1.0)


def normalise_disparity(disparity: torch.Tensor) -> torch.Tensor:
    """Min-max normalise any inverse-depth-like map per image to ``0..1`` (constant -> 0.5)."""
    b = disparity.shape[0]
    flat = disparity.reshape(b, -1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1, 1)
    span = hi - lo
    out = (disparity - lo) / span.clamp_min(1e-12)
    return torch.where(span > 1e-12, out, torch.full_like(out, 0.5))


def srgb_to_linear(image: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded ``0..1`` -> linear light (exact sRGB curve, via kornia)."""
    from kornia.color import rgb_to_linear_rgb
    return rgb_to_linear_rgb(image.clamp(0.0, 1.0))


def linear_to_srgb(image: torch.Tensor) -> torch.Tensor:
    """Linear light -> sRGB-encoded ``0..1`` (values above 1 are clipped)."""
    from kornia.color import linear_rgb_to_rgb
    return linear_rgb_to_rgb(image.clamp(0.0, 1.0))


def comfy_to_core(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``IMAGE`` ``[B,H,W,C]`` (or ``[H,W,C]``; C = 1, 3 or 4) -> core image ``[B,3,H,W]`` (alpha dropped,
    grey repeated over RGB)."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image[..., :3].permute(0, 3, 1, 2).contiguous().float()


def core_to_comfy(image: torch.Tensor) -> torch.Tensor:
    """Core image ``[B,C,H,W]`` -> ComfyUI ``IMAGE`` ``[B,H,W,C]`` float32 on the CPU."""
    return image.permute(0, 2, 3, 1).contiguous().float().cpu()


def comfy_mask_to_core(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``MASK`` ``[B,H,W]`` (or ``[H,W]``) -> core mask ``[B,1,H,W]`` float32."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    return mask.unsqueeze(1).float()


def core_to_comfy_mask(mask: torch.Tensor) -> torch.Tensor:
    """Core mask ``[B,1,H,W]`` -> ComfyUI ``MASK`` ``[B,H,W]`` float32 on the CPU."""
    return mask[:, 0].contiguous().float().cpu()


def point_to_pixel(x: float, y: float, height: int, width: int) -> Tuple[int, int]:
    """Normalised focus point -> integer ``(row, col)`` of the pixel that contains it (clamped)."""
    col = min(max(int(math.floor(x * width)), 0), width - 1)
    row = min(max(int(math.floor(y * height)), 0), height - 1)
    return row, col


def pad_to_multiple(image: torch.Tensor, multiple: int = LATENT_MULTIPLE, mode: str = "replicate"):
    """Pad ``[B,C,H,W]`` on the bottom/right to a multiple of ``multiple``; returns ``(padded, (H, W))``."""
    h, w = image.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph or pw:
        image = torch.nn.functional.pad(image, (0, pw, 0, ph), mode=mode)
    return image, (h, w)

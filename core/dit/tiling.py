"""Tiled denoising: the velocity of a large latent as an overlap-blended sum of tile velocities.

Every step, the noisy latent is cut into overlapping tiles (``tile`` latent px, stride ``tile − overlap``,
the last tile flush with the border); each tile runs through the model with its *own* reference and
camera-map crops and RoPE positions starting at (0, 0) — valid because every condition is per-pixel (no
global focus coordinate, see :mod:`diffcamera.core.dit.conditions`). Tile velocities are blended with weights
that ramp linearly across the overlap (1 at a tile's image-border sides), then normalised by the summed weights
(MultiDiffusion-style). Blending the *velocity* every step, rather than finished tiles once, keeps the
trajectories of neighbouring tiles consistent, so there is no seam to hide.

Sizes are in latent pixels and even (tokens pack 2×2).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch


def tile_starts(size: int, tile: int, overlap: int, align: int = 2) -> List[int]:
    """Start offsets covering ``0..size`` with tiles of ``tile`` and at least ``overlap`` overlap."""
    if tile >= size:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, size - tile, stride))
    last = (size - tile) // align * align
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blend weights ``[length]``: linear ramps of ``overlap`` px on the requested ends, else 1."""
    i = torch.arange(length, dtype=torch.float32) + 0.5
    w = torch.ones(length)
    if overlap > 0:
        if ramp_start:
            w = torch.minimum(w, i / overlap)
        if ramp_end:
            w = torch.minimum(w, (length - i) / overlap)
    return w


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int, torch.Tensor]]:
    """Tiles of an ``h × w`` latent: ``(y0, x0, th, tw, weight [th, tw])``."""
    out = []
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y0 in ys:
        th = min(tile, h)
        wy = ramp(th, overlap, y0 > 0, y0 + th < h)
        for x0 in xs:
            tw = min(tile, w)
            wx = ramp(tw, overlap, x0 > 0, x0 + tw < w)
            out.append((y0, x0, th, tw, wy[:, None] * wx[None, :]))
    return out


class TiledVelocity:
    """Velocity of a whole latent from tile calls; condition tokens of every tile are prepared once.

    Args:
        model: a :class:`~diffcamera.core.dit.model.RefocusModel` (uses ``condition_tokens`` and
            ``velocity_from_tokens``).
        ref_latents: ``[B,C,h,w]``; camera_map ``[B,C_cam,h·f,w·f]``; ``f`` = ``model.config.vae_scale_factor``.
        tile, overlap: latent px (even). ``tile >= max(h, w)`` means one call (no tiling).
        interrupt: optional ``fn()`` that raises to stop (ComfyUI's Cancel), called before every tile.
    """

    def __init__(self, model, ref_latents: torch.Tensor, camera_map: torch.Tensor, tile: int, overlap: int,
                 guidance: float = 1.0, interrupt: Optional[Callable[[], None]] = None, prompt=None):
        self.model = model
        self.guidance = guidance
        self.prompt = prompt
        self.interrupt = interrupt or (lambda: None)
        h, w = ref_latents.shape[-2:]
        f = model.config.vae_scale_factor
        self.tiles = plan_tiles(h, w, tile, overlap)
        self.cond, self.refs = [], []
        for y0, x0, th, tw, _ in self.tiles:
            self.interrupt()
            ref = ref_latents[..., y0:y0 + th, x0:x0 + tw]
            cam = camera_map[..., y0 * f:(y0 + th) * f, x0 * f:(x0 + tw) * f]
            self.cond.append(model.condition_tokens(ref, cam))
            self.refs.append(ref)
        self.shape = ref_latents.shape

    @property
    def tokens_per_call(self) -> int:
        _, _, th, tw, _ = self.tiles[0]
        return (th // 2) * (tw // 2)

    def __call__(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.interrupt()
        if len(self.tiles) == 1:
            cond, ids = self.cond[0]
            return self.model.velocity_from_tokens(latents, sigma, cond, ids, self.guidance, prompt=self.prompt,
                                                   reference=self.refs[0])
        acc = torch.zeros(latents.shape, dtype=torch.float32, device=latents.device)
        norm = torch.zeros(latents.shape[-2:], dtype=torch.float32, device=latents.device)
        for (y0, x0, th, tw, wgt), (cond, ids), ref in zip(self.tiles, self.cond, self.refs):
            self.interrupt()
            v = self.model.velocity_from_tokens(latents[..., y0:y0 + th, x0:x0 + tw], sigma, cond, ids, self.guidance,
                                               prompt=self.prompt, reference=ref)
            wgt = wgt.to(latents.device)
            acc[..., y0:y0 + th, x0:x0 + tw] += v.to(acc.device) * wgt
            norm[y0:y0 + th, x0:x0 + tw] += wgt
        return acc / norm


TILING_MODES = ("auto", "off", "on")


def tile_size_for(model, height: int, width: int, mode: str = "auto", size: int = 0):
    """Tile side (px) for denoising an ``height × width`` image, or ``None`` for one pass.

    ``mode``: ``"off"`` one pass; ``"on"`` always tiles of ``size`` (0 = the model's trained size);
    ``"auto"`` tiles only an image over 1.5× the trained size (or over ``size`` when given).
    """
    if mode not in TILING_MODES:
        raise ValueError(f"tiling must be one of {TILING_MODES}, got {mode!r}")
    trained = int(model.config.trained_size)
    if mode == "off":
        return None
    if mode == "on":
        return int(size) or trained
    if size:
        return int(size) if max(height, width) > size else None
    m = model.config.pixel_multiple
    return max(m, trained // m * m) if max(height, width) > 1.5 * trained else None

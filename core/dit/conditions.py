"""The camera condition: a per-pixel map from depth, focus and bokeh strength, and its cheap token encoder.

Deviation from the paper (on purpose)
-------------------------------------
DiffCamera feeds the focus point as a *global* coordinate (the DiT must look up the depth there), which is
why it is tied to 512²/1024² and breaks under tiling or cropping (Genfocus §2, §4.2). Here every pixel carries
its own answer: the signed circle of confusion ``c = K·(d − d_f)`` it must end up with, so a tile, a crop or
another aspect ratio sees exactly the local information it needs. The focus point survives as a small
mark (needed when depth is dropped) and the strength ``K`` as a constant channel.

Channels of :func:`build_camera_map` (``C_cam = 6``), all float32:

==  =========================  ===========================================  ==================
ch  name                       value                                        under depth dropout
==  =========================  ===========================================  ==================
0   signed CoC                 ``K·(d − d_f) / coc_scale``                  0
1   absolute CoC               ``|K·(d − d_f)| / coc_scale``                0
2   disparity                  ``d`` (0..1, near = 1)                       0
3   focus mark                 Gaussian blob at the focus point (0..1)      kept
4   strength                   ``K / coc_scale`` everywhere                 kept
5   depth present              1 (0 when the depth channels were dropped)   0
==  =========================  ===========================================  ==================

Ranges: ``|d − d_f| ≤ 1``, so channels 0, 1 and 4 span ``±K_max / coc_scale``: ``±2`` for the toy
(``coc_scale`` 8 px = one token, levels up to 256 at 64²: ``K ≤ 16`` px) and ``±1.5`` for FLUX at 512²
(``coc_scale`` 32, levels up to 96: ``K ≤ 48`` px; ``±3`` at 1024²). Over the disparities of a real scene they
stay well inside that (a test measures them).

``K`` is the blur radius in pixels per unit disparity *at the map's resolution*; the sampler computes the map
at the working (padded) resolution of the whole image and crops it for tiles, so pixels mean the same thing
in every tile.

Encoding (cheaper than a VAE pass)
----------------------------------
:class:`CameraEncoder` area-downsamples the map to ``camera_subgrid²`` cells per token (4×4 = 2-px cells for
FLUX's 16-px tokens), flattens each token's cells (``6·16 = 96`` values) and maps them with a two-layer MLP
into *latent token space* (``4·latent_channels`` values, what the transformer's ``x_embedder`` reads). The last
layer is zero-initialised: an untrained encoder adds exactly nothing. Cost at 1024²: 4096 tokens × (96·128 +
128·64) MACs ≈ 0.08 GFLOP, nothing next to one FLUX step (~10⁴ GFLOP); a VAE encode of a 3-channel depth image
would cost ~10³ GFLOP and 4096 extra tokens.
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conventions import as_batch

CAMERA_CHANNELS = 6
DEPTH_CHANNELS = (0, 1, 2, 5)
#: Focus mark standard deviation as a fraction of the image's long side (at least 1.5 px).
MARK_SIGMA = 0.015


def build_camera_map(disparity: torch.Tensor, focus_disparity: Union[float, torch.Tensor],
                     K: Union[float, torch.Tensor], focus_xy: torch.Tensor,
                     depth_dropout: Union[bool, torch.Tensor] = False, coc_scale: float = 32.0) -> torch.Tensor:
    """Per-pixel camera condition ``[B, 6, H, W]`` (channels in the module docstring).

    Args:
        disparity: ``[B,1,H,W]`` in 0..1, near = 1.
        focus_disparity: ``[B]`` (or float) ``d_f`` in 0..1.
        K: ``[B]`` (or float) blur radius in px per unit disparity at this resolution.
        focus_xy: ``[B,2]`` (or ``[2]``) normalised focus point (x right, y down, 0..1).
        depth_dropout: bool or ``[B]`` bool: blank the depth-derived channels (0, 1, 2, 5) of those samples.
        coc_scale: px of CoC that map to 1.0.
    """
    if disparity.dim() != 4 or disparity.shape[1] != 1:
        raise ValueError(f"disparity must be [B,1,H,W], got {tuple(disparity.shape)}")
    b, _, h, w = disparity.shape
    d = disparity.float()
    d_f = as_batch(focus_disparity, b, d).view(b, 1, 1, 1)
    k = as_batch(K, b, d).view(b, 1, 1, 1)
    coc = k * (d - d_f) / coc_scale
    xy = torch.as_tensor(focus_xy, dtype=d.dtype, device=d.device).reshape(-1, 2)
    if xy.shape[0] == 1:
        xy = xy.expand(b, 2)
    if xy.shape[0] != b:
        raise ValueError(f"focus_xy has {xy.shape[0]} points for a batch of {b}")
    ys = (torch.arange(h, device=d.device, dtype=d.dtype) + 0.5).view(1, h, 1)
    xs = (torch.arange(w, device=d.device, dtype=d.dtype) + 0.5).view(1, 1, w)
    px = (xy[:, 0] * w).view(b, 1, 1)
    py = (xy[:, 1] * h).view(b, 1, 1)
    sigma = max(1.5, MARK_SIGMA * max(h, w))
    mark = torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma ** 2)).unsqueeze(1)
    strength = (k / coc_scale).expand(b, 1, h, w)
    present = torch.ones_like(d)
    cam = torch.cat([coc, coc.abs(), d, mark, strength, present], dim=1)
    drop = torch.as_tensor(depth_dropout, device=d.device).reshape(-1).bool()
    if drop.numel() == 1:
        drop = drop.expand(b)
    if drop.any():
        keep = torch.ones(b, CAMERA_CHANNELS, 1, 1, dtype=d.dtype, device=d.device)
        for c in DEPTH_CHANNELS:
            keep[drop, c] = 0.0
        cam = cam * keep
    return cam


class CameraEncoder(nn.Module):
    """Camera map ``[B, C_cam, H, W]`` -> tokens ``[B, (H/P)(W/P), token_dim]`` in latent-token space.

    ``P`` = pixels per token (16 for FLUX, 8 for the toy). The map is area-downsampled to ``subgrid`` cells
    per token side, the ``C_cam·subgrid²`` cell values of a token are flattened (same channel-major order
    as :func:`~diffcamera.core.dit.packing.pack_latents`) and an MLP (Linear–SiLU–Linear, last layer zero)
    projects them. Trainable; saved with the LoRA under ``diffcamera.camera_encoder.*``.
    """

    def __init__(self, camera_channels: int, token_pixels: int, token_dim: int, subgrid: int = 4,
                 hidden: int = 128):
        super().__init__()
        if token_pixels % subgrid:
            raise ValueError(f"camera_subgrid {subgrid} must divide the token size {token_pixels} px")
        self.token_pixels = token_pixels
        self.subgrid = subgrid
        self.fc1 = nn.Linear(camera_channels * subgrid * subgrid, hidden)
        self.fc2 = nn.Linear(hidden, token_dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, camera_map: torch.Tensor) -> torch.Tensor:
        b, c, h, w = camera_map.shape
        p = self.token_pixels
        if h % p or w % p:
            raise ValueError(f"camera map {h}×{w} is not a multiple of the {p}-px token size")
        cell = p // self.subgrid
        x = F.avg_pool2d(camera_map, cell) if cell > 1 else camera_map
        x = F.pixel_unshuffle(x, self.subgrid)  # [B, C·s², H/p, W/p], channel-major
        x = x.flatten(2).transpose(1, 2)
        x = x.to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(x)))

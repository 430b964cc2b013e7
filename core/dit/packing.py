"""2×2 latent packing into FLUX tokens and their RoPE position ids.

Packing order is the one of diffusers' ``FluxPipeline._pack_latents`` and ComfyUI's FLUX ``process_img``
(``b c (h 2) (w 2) -> b (h w) (c 2 2)``), so token ``i = row·(w/2) + col`` holds latent pixels
``[2row:2row+2, 2col:2col+2]`` of every channel, channel-major.
"""
from __future__ import annotations

import torch


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` (h, w even) -> tokens ``[B, (h/2)(w/2), 4C]``."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height/width must be even to pack 2×2 tokens, got {h}×{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens ``[B, (h/2)(w/2), 4C]`` -> latents ``[B, C, h, w]`` (inverse of :func:`pack_latents`)."""
    b, n, d = tokens.shape
    c = d // 4
    if n != (h // 2) * (w // 2):
        raise ValueError(f"{n} tokens do not fill a {h}×{w} latent")
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def token_ids(rows: int, cols: int, index: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """RoPE ids ``[rows·cols, 3]`` = ``(index, row, col)`` for a ``rows × cols`` token grid.

    ``index`` is the first RoPE axis: 0 for the noisy target, 1 for the reference image, 2 for camera tokens
    (ComfyUI's ``reference_latents`` method ``"index"`` uses the same layout for reference 1, 2, …).
    Positions are local to the grid (a tile starts at (0, 0)): no global coordinate enters the model.
    """
    r = torch.arange(rows, device=device, dtype=dtype)
    c = torch.arange(cols, device=device, dtype=dtype)
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    ids = torch.stack([torch.full_like(rr, float(index)), rr, cc], dim=-1)
    return ids.reshape(rows * cols, 3)

"""Image <-> latent autoencoders behind one interface (``encode`` / ``decode`` / ``preview``).

* :class:`PixelShuffleAutoencoder` (toy family): exactly invertible, parameter-free: ``z = pixel_unshuffle(2·x − 1, 4)``,
  latents ``[B, 48, H/4, W/4]`` in −1..1. Lets the toy DiT train on a CPU at 64×64 (64 tokens per image).
* :class:`FluxAutoencoder` (FLUX / tiny-FLUX families): a diffusers ``AutoencoderKL`` with FLUX's latent
  normalisation ``z' = (z − shift_factor)·scaling_factor`` (FLUX.1: shift 0.1159, scale 0.3611), the posterior
  *mode* (deterministic, as the Kontext pipeline encodes its reference), and diffusers' tiled VAE
  (``enable_tiling``) so 4K images encode/decode in 1024-px tiles with blended overlaps.

Images are ``[B, 3, H, W]`` sRGB 0..1 (H, W multiples of the scale factor); latents ``[B, C, H/f, W/f]``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class PixelShuffleAutoencoder(nn.Module):
    """Parameter-free invertible "autoencoder": pixel-unshuffle by ``factor`` (toy family)."""

    def __init__(self, factor: int = 4, channels: int = 3):
        super().__init__()
        self.factor = int(factor)
        self.latent_channels = channels * self.factor ** 2
        self.scale_factor = self.factor
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries device/dtype

    @property
    def dtype(self):
        return self._anchor.dtype

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """sRGB 0..1 ``[B,3,H,W]`` -> ``[B, 3f², H/f, W/f]`` in −1..1."""
        return F.pixel_unshuffle(image.float() * 2.0 - 1.0, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`, clamped to 0..1."""
        return ((F.pixel_shuffle(latents.float(), self.factor) + 1.0) * 0.5).clamp(0.0, 1.0)

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """Exact decode (it is cheap)."""
        return self.decode(latents)

    def mask_to_latent(self, mask: torch.Tensor) -> torch.Tensor:
        """A pixel mask ``[B,1,H,W]`` -> ``[B, 3f², H/f, W/f]``, exactly: ``M↓·encode(a) + (1 − M↓)·encode(b) ==
        encode(M·a + (1 − M)·b)`` (the latent is a permutation of the pixels)."""
        return F.pixel_unshuffle(mask.float().expand(-1, 3, -1, -1), self.factor)


class FluxAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` with FLUX's shift/scale; ``vae`` is the wrapped module."""

    def __init__(self, vae, scaling_factor: Optional[float] = None, shift_factor: Optional[float] = None,
                 tiling: bool = True):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else cfg.scaling_factor)
        self.shift_factor = float(shift_factor if shift_factor is not None
                                  else (getattr(cfg, "shift_factor", None) or 0.0))
        self.latent_channels = int(cfg.latent_channels)
        self.scale_factor = 2 ** (len(cfg.block_out_channels) - 1)
        self._rgb_fit: Optional[torch.Tensor] = None
        if tiling:
            vae.enable_tiling()

    @property
    def dtype(self):
        return self.vae.dtype

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """sRGB 0..1 ``[B,3,H,W]`` -> normalised latents ``[B,16,H/8,W/8]`` float32."""
        x = (image * 2.0 - 1.0).to(device=self.vae.device, dtype=self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        return ((z.float() - self.shift_factor) * self.scaling_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> sRGB 0..1 image float32."""
        z = latents.float() / self.scaling_factor + self.shift_factor
        x = self.vae.decode(z.to(device=self.vae.device, dtype=self.vae.dtype)).sample
        return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)

    def mask_to_latent(self, mask: torch.Tensor) -> torch.Tensor:
        """A pixel mask ``[B,1,H,W]`` -> ``[B,1,H/8,W/8]`` by area averaging (fractional at boundaries; the VAE is
        not linear, so a latent blend only approximates the encoded pixel blend)."""
        f = self.scale_factor
        return F.adaptive_avg_pool2d(mask.float(), (mask.shape[-2] // f, mask.shape[-1] // f))

    def fit_preview(self, latents: torch.Tensor, image: torch.Tensor) -> None:
        """Fit the cheap latent->RGB preview (least squares, ``C+1 -> 3``) on a known latent/image pair."""
        f = self.scale_factor
        small = F.avg_pool2d(image.float().to(latents.device), f)
        a = torch.cat([latents.float().flatten(2), torch.ones_like(latents[:, :1].float()).flatten(2)], 1)
        a = a.permute(0, 2, 1).reshape(-1, a.shape[1])
        y = small.flatten(2).permute(0, 2, 1).reshape(-1, 3)
        self._rgb_fit = torch.linalg.lstsq(a.cpu(), y.cpu()).solution  # [C+1, 3]

    def preview(self, latents: torch.Tensor) -> torch.Tensor:
        """Cheap latent->RGB approximation ``[B,3,h,w]`` 0..1 (linear map fitted by :meth:`fit_preview`)."""
        lat = latents.float().cpu()
        if self._rgb_fit is None:
            rgb = lat[:, :3]
            return ((rgb - rgb.amin()) / (rgb.amax() - rgb.amin()).clamp_min(1e-6))
        a = torch.cat([lat, torch.ones_like(lat[:, :1])], 1)
        rgb = torch.einsum("bchw,cd->bdhw", a, self._rgb_fit)
        return rgb.clamp(0.0, 1.0)

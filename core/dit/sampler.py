"""Rectified-flow Euler sampling of a refocused image (diffusers ``FlowMatchEulerDiscreteScheduler``).

``refocus(model, image, disparity, focus, K)``:

1. check inputs (sizes agree, at least one token, steps ≥ 1, 0 < denoise ≤ 1) before any heavy work;
2. pad image and disparity (replicate) on the bottom/right to a multiple of 16 px, build the camera map
   (:func:`~diffcamera.core.dit.conditions.build_camera_map`) at that working resolution, encode the reference;
3. sigmas ``linspace(1, 1/steps, steps)`` shifted by FLUX's resolution-dependent ``mu``
   (``calculate_shift`` on the number of image tokens per model call, FLUX's constants 256→0.5, 4096→1.15);
4. ``denoise < 1`` skips the first ``steps·(1−denoise)`` steps and starts from the *noised input latent*
   ``σ·noise + (1−σ)·ref`` (``scheduler.scale_noise``), as FLUX img2img;
5. Euler steps ``x ← x + (σ_next − σ)·v`` via ``scheduler.step``, with ``callback(done, total, preview)``
   after every step (the callback may raise to interrupt: exactly ``k`` model steps run if it raises at ``k``);
6. decode, crop the padding. Noise comes from a CPU ``torch.Generator`` seeded with ``seed``: the same seed
   gives the same image (bitwise on the CPU).

Above the trained size, ``tile_size`` (pixels) turns on tiled denoising (:mod:`diffcamera.core.dit.tiling`,
whose ``tile_size_for`` picks it).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from ..conventions import as_batch
from ..values import Focus
from .conditions import build_camera_map
from .tiling import TiledVelocity

Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]

#: FLUX.1 scheduler constants (scheduler_config.json of FLUX.1 [dev] / Kontext [dev]).
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def make_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)


def flux_mu(image_seq_len: int) -> float:
    """FLUX's resolution-dependent shift ``mu`` for ``image_seq_len`` tokens per model call.

    The linear rule of diffusers' ``pipelines.flux.pipeline_flux.calculate_shift`` (tested equal), written out
    here because importing that pipeline module pulls in ``transformers`` (seconds at start-up).
    """
    c = FLUX_SCHEDULER
    m = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
    b = c["base_shift"] - m * c["base_image_seq_len"]
    return float(image_seq_len * m + b)


def time_shift(t: torch.Tensor, image_seq_len: int) -> torch.Tensor:
    """FLUX's resolution shift of step positions ``t`` (0..1) to noise levels ``σ = e^μ / (e^μ + 1/t − 1)``
    (``μ = flux_mu(image_seq_len)``): the map :func:`schedule` applies to its grid ``linspace(1, 1/steps)`` (the
    scheduler's ``time_shift``, tested equal), which training uses to draw the same noise levels."""
    e = math.exp(flux_mu(image_seq_len))
    t = torch.as_tensor(t, dtype=torch.float64)
    return (e * t / (e * t + (1.0 - t))).float()


def schedule(steps: int, image_seq_len: int, denoise: float = 1.0):
    """``(scheduler, timesteps)`` for ``steps`` Euler steps, skipping the first ``steps·(1−denoise)``."""
    sched = make_scheduler()
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    sched.set_timesteps(steps, sigmas=sigmas, mu=flux_mu(image_seq_len))
    t_start = int(max(steps - min(steps * denoise, steps), 0))
    t_start = min(t_start, steps - 1)
    sched.set_begin_index(t_start)
    return sched, sched.timesteps[t_start:]


def check_inputs(model, image: torch.Tensor, disparity: torch.Tensor, focus: Focus, K, steps: int,
                 denoise: float) -> None:
    """ValueError naming the bad input (before any heavy work)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B,3,H,W], got {tuple(image.shape)}")
    if disparity.dim() != 4 or disparity.shape[1] != 1:
        raise ValueError(f"depth must be [B,1,H,W], got {tuple(disparity.shape)}")
    if tuple(disparity.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(f"depth is {disparity.shape[-1]}×{disparity.shape[-2]} px but the image is "
                         f"{image.shape[-1]}×{image.shape[-2]}; estimate the depth from this image (or resize it)")
    b = image.shape[0]
    if disparity.shape[0] not in (1, b):
        raise ValueError(f"depth has a batch of {disparity.shape[0]}, the image {b}")
    if focus.batch not in (1, b):
        raise ValueError(f"focus has {focus.batch} entries for a batch of {b} images")
    p = model.config.token_pixels
    if min(image.shape[-2:]) < p:
        raise ValueError(f"image is {image.shape[-1]}×{image.shape[-2]} px, smaller than one latent token "
                         f"({p}×{p} px); use a larger image")
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 < float(denoise) <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    k = torch.as_tensor(K, dtype=torch.float32).reshape(-1)
    if k.numel() not in (1, b) or (k < 0).any():
        raise ValueError(f"K must be one non-negative value or one per image, got {k.tolist()}")


#: Block lists of a diffusers ``FluxTransformer2DModel`` (the toy and FLUX share the class).
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


@contextlib.contextmanager
def interrupt_hooks(model, interrupt: Optional[Callable[[], None]]) -> Iterator[None]:
    """While active, ``interrupt()`` (raise to stop, e.g. ComfyUI's Cancel) runs before every transformer block of
    ``model.transformer`` (forward pre-hooks), so even one huge model call stops within a block. No-op when
    ``interrupt`` is ``None`` or the model has no transformer of its own (a ComfyUI FLUX ``MODEL``)."""
    transformer = getattr(model, "transformer", None)
    blocks = [b for name in BLOCK_LISTS for b in (getattr(transformer, name, None) or [])] if interrupt else []
    handles = [b.register_forward_pre_hook(lambda module, args: interrupt()) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def refocus(model, image: torch.Tensor, disparity: torch.Tensor, focus: Focus, K: Union[float, torch.Tensor], *,
            steps: int = 28, seed: int = 0, guidance: float = 1.0, denoise: float = 1.0,
            tile_size: Optional[int] = None, tile_overlap: Optional[int] = None, callback: Callback = None,
            preview: bool = False, depth_dropout: bool = False,
            interrupt: Optional[Callable[[], None]] = None, init_image: Optional[torch.Tensor] = None,
            prompt=None) -> torch.Tensor:
    """Refocus ``image`` ``[B,3,H,W]`` sRGB 0..1 to ``focus`` with blur strength ``K`` (px per unit disparity at
    this resolution, ``conventions.level_to_K``). ``disparity`` ``[B,1,H,W]`` 0..1 near = 1.

    Args:
        steps: Euler steps (FLUX default 28). seed: noise seed. guidance: distilled guidance (FLUX dev/Kontext).
        denoise: 1 = from pure noise; < 1 = from the noised latent of ``init_image`` (default: the input),
            skipping the first ``steps·(1 − denoise)`` steps: the model refines that image.
        tile_size: pixels per tile (multiple of 16) for tiled denoising, or ``None`` (one call).
        tile_overlap: pixels of overlap (default a quarter of the tile).
        callback: ``callback(done, total, preview)`` after each step; raise in it to stop.
        preview: pass a cheap ``[B,3,h,w]`` x0 preview to the callback (else ``None``).
        depth_dropout: sample as if depth were unknown (only the focus mark and level are given).
        interrupt: ``fn()`` that raises to stop (ComfyUI's Cancel): called before every tile of every step and
            before every transformer block (:func:`interrupt_hooks`), so Cancel acts within one block.
        init_image: ``[B,3,H,W]`` sRGB 0..1 to start from when ``denoise < 1`` (the physics estimate, for
            DiffCameraRefocus); the model is still conditioned on ``image``.
        prompt: ``(sequence [1,T,D], pooled [1,P])`` text condition for this call (default: the model's own).
    Returns:
        ``[B,3,H,W]`` float32 sRGB 0..1 on the CPU.
    """
    check_inputs(model, image, disparity, focus, K, steps, denoise)
    b, _, h, w = image.shape
    m = model.config.pixel_multiple
    f = model.config.vae_scale_factor
    dev = model.device
    img = image.float().to(dev)
    disp = disparity.float().to(dev).expand(b, -1, -1, -1)
    ph, pw = (-h) % m, (-w) % m
    start = None if init_image is None else init_image.float().to(dev)
    if start is not None and tuple(start.shape) != tuple(image.shape):
        raise ValueError(f"init_image {tuple(start.shape)} differs from image {tuple(image.shape)}")
    if ph or pw:
        img = torch.nn.functional.pad(img, (0, pw, 0, ph), mode="replicate")
        disp = torch.nn.functional.pad(disp, (0, pw, 0, ph), mode="replicate")
        if start is not None:
            start = torch.nn.functional.pad(start, (0, pw, 0, ph), mode="replicate")
    d_f = as_batch(focus.disparity.float(), b, disp)
    xy = torch.stack([as_batch(focus.x.float(), b, disp), as_batch(focus.y.float(), b, disp)], 1)
    xy = xy * torch.tensor([w / (w + pw), h / (h + ph)], device=dev)  # the point in padded coordinates
    k = as_batch(torch.as_tensor(K, dtype=torch.float32), b, disp)
    cam = build_camera_map(disp, d_f, k, xy, depth_dropout=depth_dropout, coc_scale=model.config.coc_scale)

    check = interrupt or (lambda: None)
    with torch.no_grad(), interrupt_hooks(model, interrupt):
        check()
        ref = model.autoencoder.encode(img).float()
        if preview and hasattr(model.autoencoder, "fit_preview"):
            model.autoencoder.fit_preview(ref, img)
        lh, lw = ref.shape[-2:]
        if tile_size is not None:
            tile = max(2, int(tile_size) // f // 2 * 2)
            ov = tile // 4 if tile_overlap is None else int(tile_overlap) // f // 2 * 2
            ov = min(ov, tile - 2)
        else:
            tile, ov = max(lh, lw), 0
        vel = TiledVelocity(model, ref, cam, tile, ov, guidance, interrupt=interrupt, prompt=prompt)
        sched, timesteps = schedule(int(steps), vel.tokens_per_call, float(denoise))
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(ref.shape, generator=gen, dtype=torch.float32).to(dev)
        if float(denoise) >= 1.0:
            x = noise
        else:
            x0 = ref if start is None else model.autoencoder.encode(start).float()
            x = sched.scale_noise(x0, timesteps[:1].to(dev), noise).float()
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            sigma = (t / 1000.0).to(dev).float().expand(b)
            v = vel(x, sigma)
            x = sched.step(v, t, x, return_dict=False)[0].float()
            if callback is not None:
                pv = None
                if preview:
                    x0 = x if i + 1 == total else x - sched.sigmas[sched.step_index].item() * v
                    pv = model.autoencoder.preview(x0)[..., : -(-h // f), : -(-w // f)].cpu()
                callback(i + 1, total, pv)
        check()
        out = model.autoencoder.decode(x)
    return out[..., :h, :w].float().cpu().clamp(0.0, 1.0)

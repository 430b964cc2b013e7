"""Configs of the built-in model families: the CPU-trainable toy, and real FLUX.1 bases.

The toy uses the real diffusers ``FluxTransformer2DModel``, so its code path is FLUX.1's. Numbers follow
``shared/reference/toy-model-notes.md``: inner width 256 (4 heads × 64) is the smallest that learned to use the
reference at 64×64; 128 did not. :func:`toy_config` is the one definition of the toy: the training config
``training/configs/toy.json`` takes it as is, and the shipped ``assets/toy_refocus`` model was trained from it
(a test checks both). Test-only models (the tiny random FLUX) live in ``tests/tiny_dit.py``.
"""
from __future__ import annotations

from .config import RefocusModelConfig

#: Toy DiT: 1 double + 2 single blocks, inner dim 256, tokens of 192 values (48 latent channels × 2×2),
#: 4.8 M parameters (9.7 MB as fp16); no guidance embedding.
TOY_TRANSFORMER = dict(patch_size=1, in_channels=192, num_layers=1, num_single_layers=2, attention_head_dim=64,
                       num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
                       guidance_embeds=False, axes_dims_rope=[8, 28, 28])
TOY_AUTOENCODER = dict(kind="pixel_shuffle", factor=4)


def toy_config(**changes) -> RefocusModelConfig:
    """The toy config: full training (no LoRA), fused layout, trained at 64 px, a residual over the physics
    estimate (``prediction="residual"``, zero-initialised output), camera CoC in units of one 8-px token."""
    base = dict(family="toy", condition_layout="fused", latent_channels=48, vae_scale_factor=4,
                camera_subgrid=4, camera_hidden=128, coc_scale=8.0, prediction="residual", lora_rank=0,
                trained_size=64, transformer=dict(TOY_TRANSFORMER), autoencoder=dict(TOY_AUTOENCODER))
    base.update(changes)
    return RefocusModelConfig(**base)


def flux_config(family: str = "flux1-kontext-dev", **changes) -> RefocusModelConfig:
    """Config for a real FLUX.1 base (transformer/VAE configs come from the checkpoint or ``assets/configs``)."""
    base = dict(family=family, condition_layout="fused", latent_channels=16, vae_scale_factor=8,
                camera_subgrid=4, camera_hidden=128, lora_rank=32, trained_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159)
    base.update(changes)
    return RefocusModelConfig(**base)

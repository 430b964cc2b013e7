"""Configs of the small models: the CPU-trainable toy and the tiny random FLUX used by tests.

Both use the real diffusers classes (``FluxTransformer2DModel``; ``AutoencoderKL`` for tiny-FLUX), so tests
exercise the exact code path of full FLUX.1. Numbers follow ``shared/reference/toy-model-notes.md``: inner
width 256 (4 heads × 64) is the smallest that learned to use the reference at 64×64; 128 did not.
"""
from __future__ import annotations

from .config import RefocusModelConfig

#: Toy DiT: 2 double + 4 single blocks, inner dim 256, tokens of 192 values (48 latent channels × 2×2),
#: ~9 M parameters; no guidance embedding.
TOY_TRANSFORMER = dict(patch_size=1, in_channels=192, num_layers=2, num_single_layers=4, attention_head_dim=64,
                       num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
                       guidance_embeds=False, axes_dims_rope=[8, 28, 28])
TOY_AUTOENCODER = dict(kind="pixel_shuffle", factor=4)

#: Tiny FLUX: 1 double + 1 single block, inner dim 32, FLUX's 64-value tokens, guidance embedding as FLUX.1 [dev].
TINY_FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                             num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                             guidance_embeds=True, axes_dims_rope=[4, 6, 6])
#: Tiny AutoencoderKL with FLUX's structure: 4 levels (×8), 16 latent channels, no quant convs.
TINY_FLUX_VAE = dict(kind="autoencoder_kl", in_channels=3, out_channels=3,
                     down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                     block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4, latent_channels=16,
                     sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                     use_post_quant_conv=False, mid_block_add_attention=True)


def toy_config(**changes) -> RefocusModelConfig:
    """Default toy config (full training, no LoRA, fused layout, trained at 64 px)."""
    base = dict(family="toy", condition_layout="fused", latent_channels=48, vae_scale_factor=4,
                camera_subgrid=4, camera_hidden=128, lora_rank=0, trained_size=64,
                transformer=dict(TOY_TRANSFORMER), autoencoder=dict(TOY_AUTOENCODER))
    base.update(changes)
    return RefocusModelConfig(**base)


def tiny_flux_config(**changes) -> RefocusModelConfig:
    """Default tiny-FLUX config (LoRA rank 4, fused layout, trained at 64 px)."""
    base = dict(family="tiny-flux", condition_layout="fused", latent_channels=16, vae_scale_factor=8,
                camera_subgrid=4, camera_hidden=32, lora_rank=4, trained_size=64,
                transformer=dict(TINY_FLUX_TRANSFORMER), autoencoder=dict(TINY_FLUX_VAE),
                scaling_factor=0.3611, shift_factor=0.1159)
    base.update(changes)
    return RefocusModelConfig(**base)


def flux_config(family: str = "flux1-kontext-dev", **changes) -> RefocusModelConfig:
    """Config for a real FLUX.1 base (transformer/VAE configs come from the checkpoint or ``assets/configs``)."""
    base = dict(family=family, condition_layout="fused", latent_channels=16, vae_scale_factor=8,
                camera_subgrid=4, camera_hidden=128, lora_rank=32, trained_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159)
    base.update(changes)
    return RefocusModelConfig(**base)

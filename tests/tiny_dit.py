"""Tiny refocus models for tests (all helpers, all tiers). Random weights, built from configs in milliseconds.

* :func:`tiny_flux` / :func:`toy` — build models (``core.dit.model`` builders with fixed seeds).
* :func:`randomise_lora` — give a model non-zero LoRA B / camera-encoder weights (a "trained" LoRA).
* :func:`save_tiny_flux_lora` — a tiny FLUX LoRA file (what the real-ComfyUI tier loads with ComfyUI's stock
  ``LoraLoaderModelOnly``), returns ``(path, model)``.
* :func:`save_tiny_flux_bundle` — tiny FLUX transformer + VAE as diffusers folders (``diffusion_models/`` and
  ``vae/`` layout) and a LoRA in ``loras/`` under a ComfyUI-like models folder.
* :func:`save_toy_model` — a toy whole-model file in ``diffcamera/``.
* :func:`comfy_flux_unet_config` / :func:`diffusers_to_bfl` — the ComfyUI ``model_base.Flux`` unet_config and the
  original (BFL / ComfyUI) state dict for the same tiny transformer, so tier c can build the same model in ComfyUI
  (``comfy.supported_models.Flux(unet_config)``) and compare predictions.
"""
from __future__ import annotations

import os

import torch

from diffcamera.core.dit.model import build_tiny_flux_model, build_toy_model
from diffcamera.core.dit.toy import tiny_flux_config, toy_config


def tiny_flux(layout: str = "fused", seed: int = 0, lora_rank: int = 4):
    return build_tiny_flux_model(tiny_flux_config(condition_layout=layout, lora_rank=lora_rank), seed=seed)


def toy(layout: str = "fused", seed: int = 0, full: bool = False, **changes):
    """A toy-family model; ``full=False`` (tests) uses 1 double + 1 single block instead of 2 + 4."""
    if not full and "transformer" not in changes:
        from diffcamera.core.dit.toy import TOY_TRANSFORMER
        changes["transformer"] = dict(TOY_TRANSFORMER, num_layers=1, num_single_layers=1)
    return build_toy_model(toy_config(condition_layout=layout, **changes), seed=seed)


def randomise_lora(model, seed: int = 1, std: float = 0.05):
    """Fill LoRA B matrices and the camera encoder with seeded noise (so they change the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.transformer.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        for p in model.camera_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def save_tiny_flux_lora(path: str, layout: str = "fused", seed: int = 0):
    """Save a tiny FLUX refocus LoRA with non-zero weights to ``path``; returns ``(path, model)``."""
    from diffcamera.core.dit.lora import save_refocus_lora
    model = randomise_lora(tiny_flux(layout, seed))
    return save_refocus_lora(model, path), model


def save_tiny_flux_bundle(models_dir: str, layout: str = "fused", seed: int = 0):
    """Write ``diffusion_models/tiny-flux/`` (diffusers transformer folder), ``vae/tiny-flux-vae/`` (diffusers VAE
    folder) and ``loras/tiny_refocus.safetensors`` under ``models_dir``; returns ``(paths dict, model)``."""
    from diffcamera.core.dit.lora import save_refocus_lora
    model = randomise_lora(tiny_flux(layout, seed))
    tdir = os.path.join(models_dir, "diffusion_models", "tiny-flux")
    vdir = os.path.join(models_dir, "vae", "tiny-flux-vae")
    base = base_transformer_state_dict(model)
    from diffusers import FluxTransformer2DModel
    t = FluxTransformer2DModel(**model.transformer.config)
    t.load_state_dict(base)
    t.save_pretrained(tdir)
    model.autoencoder.vae.save_pretrained(vdir)
    lora = save_refocus_lora(model, os.path.join(models_dir, "loras", "tiny_refocus.safetensors"))
    return {"transformer": tdir, "vae": vdir, "lora": lora}, model


def save_toy_model(path: str, layout: str = "fused", seed: int = 0):
    """A toy whole-model file (``.safetensors`` + sidecar JSON); returns ``(path, model)``."""
    from diffcamera.core.dit.lora import save_refocus_model
    model = toy(layout, seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 7)
        for p in model.camera_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return save_refocus_model(model, path), model


def base_transformer_state_dict(model) -> dict:
    """Transformer weights without the LoRA (peft's ``base_layer`` names folded back)."""
    return {k.replace(".base_layer", ""): v for k, v in model.transformer.state_dict().items() if "lora_" not in k}


def comfy_flux_unet_config(transformer_config) -> dict:
    """ComfyUI ``model_base.Flux`` unet_config for a diffusers ``FluxTransformer2DModel`` config."""
    c = transformer_config
    hidden = c.num_attention_heads * c.attention_head_dim
    return dict(image_model="flux", in_channels=c.in_channels // 4, out_channels=(c.out_channels or c.in_channels) // 4,
                vec_in_dim=c.pooled_projection_dim, context_in_dim=c.joint_attention_dim, hidden_size=hidden,
                mlp_ratio=4.0, num_heads=c.num_attention_heads, depth=c.num_layers,
                depth_single_blocks=c.num_single_layers, axes_dim=list(c.axes_dims_rope), theta=10000, qkv_bias=True,
                guidance_embed=bool(c.guidance_embeds), patch_size=2)


def diffusers_to_bfl(state_dict: dict, transformer_config) -> dict:
    """Diffusers FLUX transformer weights -> original BFL/ComfyUI names (``double_blocks.0.img_attn.qkv.weight`` …).

    Written from the public structure of both formats (the inverse of ComfyUI's ``flux_to_diffusers`` map):
    q/k/v are concatenated into ``qkv`` (single blocks: q, k, v and ``proj_mlp`` into ``linear1``) and the final
    ``norm_out.linear`` halves are swapped (diffusers stores scale, shift; BFL shift, scale).
    """
    c = transformer_config
    sd = {k: v for k, v in state_dict.items()}
    out = {}

    def take(k):
        return sd.pop(k)

    basic = {"x_embedder": "img_in", "context_embedder": "txt_in",
             "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
             "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
             "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
             "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
             "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
             "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
             "proj_out": "final_layer.linear"}
    for a, b in basic.items():
        for end in ("weight", "bias"):
            if f"{a}.{end}" in sd:
                out[f"{b}.{end}"] = take(f"{a}.{end}")
    for end in ("weight", "bias"):
        w = take(f"norm_out.linear.{end}")
        scale, shift = w.chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{end}"] = torch.cat([shift, scale], 0)
    for i in range(c.num_layers):
        p, q = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for end in ("weight", "bias"):
            out[q + f"img_attn.qkv.{end}"] = torch.cat([take(p + f"attn.to_{x}.{end}") for x in "qkv"], 0)
            out[q + f"txt_attn.qkv.{end}"] = torch.cat([take(p + f"attn.add_{x}_proj.{end}") for x in "qkv"], 0)
            for a, b in (("attn.to_out.0", "img_attn.proj"), ("norm1.linear", "img_mod.lin"),
                         ("norm1_context.linear", "txt_mod.lin"), ("attn.to_add_out", "txt_attn.proj"),
                         ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                         ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):
                out[q + f"{b}.{end}"] = take(p + f"{a}.{end}")
        for a, b in (("attn.norm_q", "img_attn.norm.query_norm"), ("attn.norm_k", "img_attn.norm.key_norm"),
                     ("attn.norm_added_q", "txt_attn.norm.query_norm"), ("attn.norm_added_k", "txt_attn.norm.key_norm")):
            out[q + f"{b}.scale"] = take(p + f"{a}.weight")
    for i in range(c.num_single_layers):
        p, q = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for end in ("weight", "bias"):
            out[q + f"linear1.{end}"] = torch.cat([take(p + f"attn.to_{x}.{end}") for x in "qkv"]
                                                  + [take(p + f"proj_mlp.{end}")], 0)
            out[q + f"linear2.{end}"] = take(p + f"proj_out.{end}")
            out[q + f"modulation.lin.{end}"] = take(p + f"norm.linear.{end}")
        out[q + "norm.query_norm.scale"] = take(p + "attn.norm_q.weight")
        out[q + "norm.key_norm.scale"] = take(p + "attn.norm_k.weight")
    if sd:
        raise ValueError(f"unconverted keys: {sorted(sd)[:5]}")
    return out

"""FLUX transformer weight names: diffusers <-> original BFL layout (what ComfyUI's single files use).

Written from the public structure of both layouts (the relation ComfyUI's ``comfy.utils.flux_to_diffusers``
describes): BFL fuses q/k/v into ``qkv`` (single blocks: q, k, v and ``proj_mlp`` into ``linear1``), names norms
``query_norm.scale``, and stores the final AdaLN modulation as (shift, scale) where diffusers stores (scale, shift).
Our own converter (rather than diffusers' ``from_single_file`` mapping) works for any width — diffusers' mapping
assumes FLUX.1's 3072 — so the tiny test models go through the very code that loads a real ComfyUI file.
"""
from __future__ import annotations

from typing import Dict

import torch

_BASIC = {"x_embedder": "img_in", "context_embedder": "txt_in",
          "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
          "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
          "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
          "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
          "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
          "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
          "proj_out": "final_layer.linear"}
_DOUBLE = (("attn.to_out.0", "img_attn.proj"), ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
           ("attn.to_add_out", "txt_attn.proj"), ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
           ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"))
_DOUBLE_NORMS = (("attn.norm_q", "img_attn.norm.query_norm"), ("attn.norm_k", "img_attn.norm.key_norm"),
                 ("attn.norm_added_q", "txt_attn.norm.query_norm"), ("attn.norm_added_k", "txt_attn.norm.key_norm"))
#: Prefixes of full checkpoints (``checkpoints/``) and of ComfyUI's own saves.
PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def _swap(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], 0)


def count_blocks(bfl: Dict[str, torch.Tensor]):
    """``(double, single)`` block counts of a BFL state dict."""
    def n(prefix):
        idx = {int(k.split(".")[1]) for k in bfl if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0
    return n("double_blocks."), n("single_blocks.")


def strip_prefix(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for p in PREFIXES:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return sd


def diffusers_to_bfl(sd: Dict[str, torch.Tensor], num_layers: int, num_single_layers: int) -> Dict[str, torch.Tensor]:
    """Diffusers FLUX transformer weights -> BFL names."""
    sd = dict(sd)
    out = {}
    for a, b in _BASIC.items():
        for end in ("weight", "bias"):
            if f"{a}.{end}" in sd:
                out[f"{b}.{end}"] = sd.pop(f"{a}.{end}")
    for end in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{end}"] = _swap(sd.pop(f"norm_out.linear.{end}"))
    for i in range(num_layers):
        p, q = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for end in ("weight", "bias"):
            out[q + f"img_attn.qkv.{end}"] = torch.cat([sd.pop(p + f"attn.to_{x}.{end}") for x in "qkv"], 0)
            out[q + f"txt_attn.qkv.{end}"] = torch.cat([sd.pop(p + f"attn.add_{x}_proj.{end}") for x in "qkv"], 0)
            for a, b in _DOUBLE:
                out[q + f"{b}.{end}"] = sd.pop(p + f"{a}.{end}")
        for a, b in _DOUBLE_NORMS:
            out[q + f"{b}.scale"] = sd.pop(p + f"{a}.weight")
    for i in range(num_single_layers):
        p, q = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for end in ("weight", "bias"):
            out[q + f"linear1.{end}"] = torch.cat([sd.pop(p + f"attn.to_{x}.{end}") for x in "qkv"]
                                                  + [sd.pop(p + f"proj_mlp.{end}")], 0)
            out[q + f"linear2.{end}"] = sd.pop(p + f"proj_out.{end}")
            out[q + f"modulation.lin.{end}"] = sd.pop(p + f"norm.linear.{end}")
        out[q + "norm.query_norm.scale"] = sd.pop(p + "attn.norm_q.weight")
        out[q + "norm.key_norm.scale"] = sd.pop(p + "attn.norm_k.weight")
    if sd:
        raise ValueError(f"unconverted diffusers keys: {sorted(sd)[:5]}")
    return out


def bfl_to_diffusers(bfl: Dict[str, torch.Tensor], hidden_size: int) -> Dict[str, torch.Tensor]:
    """BFL (ComfyUI single-file) FLUX weights -> diffusers ``FluxTransformer2DModel`` names."""
    sd = dict(strip_prefix(bfl))
    n_double, n_single = count_blocks(sd)
    out = {}
    for a, b in _BASIC.items():
        for end in ("weight", "bias"):
            if f"{b}.{end}" in sd:
                out[f"{a}.{end}"] = sd.pop(f"{b}.{end}")
    for end in ("weight", "bias"):
        out[f"norm_out.linear.{end}"] = _swap(sd.pop(f"final_layer.adaLN_modulation.1.{end}"))
    h = hidden_size
    for i in range(n_double):
        p, q = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for end in ("weight", "bias"):
            for x, t in zip("qkv", sd.pop(q + f"img_attn.qkv.{end}").split(h, 0)):
                out[p + f"attn.to_{x}.{end}"] = t
            for x, t in zip("qkv", sd.pop(q + f"txt_attn.qkv.{end}").split(h, 0)):
                out[p + f"attn.add_{x}_proj.{end}"] = t
            for a, b in _DOUBLE:
                out[p + f"{a}.{end}"] = sd.pop(q + f"{b}.{end}")
        for a, b in _DOUBLE_NORMS:
            out[p + f"{a}.weight"] = sd.pop(q + f"{b}.scale")
    for i in range(n_single):
        p, q = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for end in ("weight", "bias"):
            w = sd.pop(q + f"linear1.{end}")
            parts = w.split([h, h, h, w.shape[0] - 3 * h], 0)
            for x, t in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts):
                out[p + f"{x}.{end}"] = t
            out[p + f"proj_out.{end}"] = sd.pop(q + f"linear2.{end}")
            out[p + f"norm.linear.{end}"] = sd.pop(q + f"modulation.lin.{end}")
        out[p + "attn.norm_q.weight"] = sd.pop(q + "norm.query_norm.scale")
        out[p + "attn.norm_k.weight"] = sd.pop(q + "norm.key_norm.scale")
    if sd:
        raise ValueError(f"this file has weights a FLUX.1 transformer does not ({sorted(sd)[:3]}…); "
                         "it is not a plain FLUX.1 [dev]/Kontext checkpoint (scaled-fp8 and GGUF files: load them "
                         "with ComfyUI's own loader and connect its MODEL to DiffCameraRefocus instead)")
    return out

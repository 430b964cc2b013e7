"""Run the refocus conditions on a FLUX transformer that someone else holds (ComfyUI's own MODEL).

A user who already runs FLUX (fp8, GGUF, …) in ComfyUI for text-to-image should not load it a second time.
:class:`ExternalRefocusModel` keeps everything of ours that is not the transformer — autoencoder, camera encoder,
prompt embedding, config — and hands each model call to ``velocity_fn``; the sampler cannot tell the
difference (it uses ``config``, ``autoencoder``, ``device``, ``condition_tokens``, ``velocity_from_tokens``).

The conditions become ordinary Kontext reference latents, ComfyUI's ``reference_latents`` with method ``"index"``
(reference ``i`` gets RoPE index ``i``, no spatial offset): ``fused`` = one reference (the reference latent plus
the camera projection, unpacked from tokens back to a ``[B,C,h,w]`` latent), ``separate`` = two (reference, then
the camera tokens as a latent with index 2). Since the patch embedder is linear and the packing order is the
same, this is exactly the token sequence :class:`~diffcamera.core.dit.model.RefocusModel` builds.

``velocity_fn(noisy [B,C,h,w], sigma [B], refs: list of [B,C,h,w], txt [B,T,D], pooled [B,P], guidance: float)
-> v [B,C,h,w]`` (FLUX-normalised latents, rectified-flow velocity). ``comfy_adapter.flux_velocity_fn`` builds one
from a ComfyUI MODEL with our LoRA applied by ComfyUI's own patcher.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from .packing import unpack_latents

VelocityFn = Callable[..., torch.Tensor]


def reference_latents(model, ref_latents: torch.Tensor, camera_map: torch.Tensor) -> List[torch.Tensor]:
    """The Kontext reference latents (``[B,C,h,w]`` each, in order of RoPE index 1, 2, …) for ``model``'s layout."""
    cond, _ = model.condition_tokens(ref_latents, camera_map)
    return split_condition_tokens(cond, *ref_latents.shape[-2:])


def split_condition_tokens(cond: torch.Tensor, h: int, w: int) -> List[torch.Tensor]:
    n = (h // 2) * (w // 2)
    return [unpack_latents(cond[:, i:i + n], h, w) for i in range(0, cond.shape[1], n)]


class ExternalRefocusModel:
    """The sampler-facing surface of a RefocusModel whose transformer calls go to ``velocity_fn``."""

    def __init__(self, bundle, velocity_fn: VelocityFn):
        self.bundle = bundle
        self.velocity_fn = velocity_fn
        self.config = bundle.config
        self.autoencoder = bundle.autoencoder

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    def condition_tokens(self, ref_latents, camera_map):
        return self.bundle.condition_tokens(ref_latents, camera_map)

    def velocity_from_tokens(self, noisy_latents, sigma, cond_tokens, cond_ids, guidance: float = 1.0, prompt=None,
                             reference=None):
        from .model import check_prompt, velocity_from_output
        h, w = noisy_latents.shape[-2:]
        b = noisy_latents.shape[0]
        refs = [r.expand(b, -1, -1, -1) for r in split_condition_tokens(cond_tokens, h, w)]
        seq, pool = self.bundle.prompt_embeds, self.bundle.pooled_prompt_embeds
        if prompt is not None:
            seq, pool = check_prompt(prompt, seq.shape[-1], pool.shape[-1])
        txt = seq.expand(b, -1, -1)
        pooled = pool.expand(b, -1)
        sig = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(b)
        out = self.velocity_fn(noisy_latents.float(), sig, refs, txt, pooled, float(guidance)).float()
        return velocity_from_output(self.config.prediction, out, noisy_latents, sig, reference)

    def velocity(self, noisy_latents, sigma, ref_latents, camera_map, guidance: float = 1.0):
        cond, ids = self.condition_tokens(ref_latents, camera_map)
        return self.velocity_from_tokens(noisy_latents, sigma, cond, ids, guidance, reference=ref_latents)


def diffusers_velocity_fn(transformer) -> VelocityFn:
    """A ``velocity_fn`` over a diffusers ``FluxTransformer2DModel`` (the reference for parity tests)."""
    from .packing import pack_latents, token_ids

    def fn(noisy, sigma, refs, txt, pooled, guidance):
        dev = next(transformer.parameters()).device
        dt = next(transformer.parameters()).dtype
        h, w = noisy.shape[-2:]
        toks = [pack_latents(noisy.to(dev))] + [pack_latents(r.to(dev)) for r in refs]
        ids = [token_ids(h // 2, w // 2, i, device=dev) for i in range(len(toks))]
        g = torch.full((noisy.shape[0],), guidance, device=dev, dtype=dt) if transformer.config.guidance_embeds else None
        out = transformer(hidden_states=torch.cat(toks, 1).to(dt), encoder_hidden_states=txt.to(dev, dt),
                          pooled_projections=pooled.to(dev, dt), timestep=sigma.to(dev, dt),
                          img_ids=torch.cat(ids, 0), txt_ids=torch.zeros(txt.shape[1], 3, device=dev), guidance=g,
                          return_dict=False)[0]
        return unpack_latents(out[:, :toks[0].shape[1]].float(), h, w)
    return fn


def load_condition_bundle(lora: str, vae: str, device=None):
    """Everything but the transformer, for :class:`ExternalRefocusModel`: config, camera encoder and prompt
    embedding from a DiffCamera LoRA file, the FLUX VAE from ``vae``. ``bundle.lora_tensors`` holds the LoRA's
    ``transformer.*`` tensors for the external model's own LoRA loader."""
    import os
    from .autoencoder import FluxAutoencoder
    from .loading import _missing, load_vae
    from .files import load_extras, read_file
    from .model import RefocusModel
    if not lora or not os.path.isfile(lora):
        raise _missing(lora or "(none)", "LoRA")
    tensors, cfg, fmt = read_file(lora)
    if cfg.family == "toy":
        raise ValueError("the toy family has no ComfyUI counterpart; load the toy model as the base instead")
    vae_module = load_vae(vae)
    bundle = RefocusModel(cfg, None, FluxAutoencoder(vae_module, cfg.scaling_factor, cfg.shift_factor))
    load_extras(bundle, tensors)
    bundle.lora_tensors = {k: v for k, v in tensors.items() if k.startswith("transformer.")}
    bundle.lora_path = lora
    if device is not None:
        bundle.to(device)
    return bundle.eval()

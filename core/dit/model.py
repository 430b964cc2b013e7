"""The refocus model bundle: a FLUX-architecture DiT conditioned Kontext-style on a reference and a camera map.

Conditioning layout (the stock diffusers ``FluxTransformer2DModel.forward``, no custom attention)
-------------------------------------------------------------------------------------------------
``hidden_states = [noisy tokens ; reference tokens (; camera tokens)]`` with RoPE ids ``(0,row,col)``,
``(1,row,col)`` (and ``(2,row,col)``): every block shares the same (row, col), i.e. the conditions are spatially
aligned with the target, exactly what ComfyUI's FLUX does for ``reference_latents`` with method ``"index"``.
All tokens share the denoising timestep (Kontext); the output is sliced back to the noisy tokens.

* ``"fused"`` layout: ``reference tokens = pack(ref_latents) + CameraEncoder(camera_map)``. FLUX's ``x_embedder``
  is linear, so this is one ordinary Kontext reference latent: zero extra tokens, and ComfyUI's stock FLUX path
  can run it (unpack the sum back to a latent and pass it as ``reference_latents``).
* ``"separate"`` layout: the camera tokens are a third block with RoPE index 2 (the paper's "one token
  sequence" reading). One extra token per noisy token.

Deviations from the paper (documented on purpose): the condition branch is not a separate OminiControl branch
(no per-branch timestep/LoRA switching, no attention mask) because the stock forward is faster, works with
ComfyUI's FLUX unchanged and needs no re-implemented attention; the camera condition is a per-pixel map, not a
global focus coordinate (see :mod:`diffcamera.core.dit.conditions`).

Rectified flow: ``x_t = (1 − σ)·x0 + σ·noise`` and the velocity ``v = noise − x0``; diffusers' FLUX
transformer takes ``timestep = σ`` (it multiplies by 1000 inside) and, for guidance-distilled bases
(FLUX.1 [dev] / Kontext), ``guidance`` = the distilled guidance scale. What the transformer's output means is
the config's ``prediction`` (:func:`velocity_from_output`): the velocity itself (FLUX bases), or a residual
over the reference latent (the toy: ``x̂0 = reference + output``, its output layer zero-initialised, so an
untrained model returns the reference — the physics estimate — exactly). Every ``velocity*`` method returns
the velocity either way.

Whole-model files (:func:`save_refocus_model`, :func:`load_model_file`; the toy family) use the file format
of :mod:`diffcamera.core.dit.files`.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn

from .autoencoder import FluxAutoencoder, PixelShuffleAutoencoder
from .conditions import CameraEncoder
from .config import FLUX1_INNER_DIM, RefocusModelConfig
from .files import MODEL_FORMAT, extras, load_extras, read_file, write_file
from .lora import add_lora
from .packing import pack_latents, token_ids, unpack_latents

#: Text tokens of the deterministic stand-in prompt embedding of toy / tiny models.
TOY_TEXT_TOKENS = 4
#: Conditions a model adopts from a LoRA file or a training config (:meth:`RefocusModel.adopt_conditions`).
CONDITION_FIELDS = ("condition_layout", "coc_scale", "prediction", "camera_channels", "camera_subgrid",
                    "camera_hidden", "prompt", "trained_size")


def velocity_from_output(prediction: str, output: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor,
                         reference: Optional[torch.Tensor]) -> torch.Tensor:
    """The rectified-flow velocity ``[B,C,h,w]`` from the transformer's ``output`` (same shape).

    ``prediction == "velocity"``: ``output`` itself. ``"residual"``: ``x̂0 = reference + output`` and
    ``v = (noisy − x̂0)/σ`` (``sigma`` ``[B]`` or scalar, > 0; ``reference`` the reference latent the model
    was conditioned on), so an Euler step to ``σ'`` gives ``x̂0 + (σ'/σ)·(noisy − x̂0)`` and the last step
    (``σ' = 0``) exactly ``x̂0``.
    """
    if prediction == "velocity":
        return output
    if prediction != "residual":
        raise ValueError(f"unknown prediction {prediction!r}")
    if reference is None:
        raise ValueError("a residual-prediction model needs the reference latent to give a velocity")
    b = noisy.shape[0]
    sig = torch.as_tensor(sigma, dtype=torch.float32, device=noisy.device).reshape(-1)
    sig = (sig.expand(b) if sig.numel() == 1 else sig).view(b, 1, 1, 1)
    ref = reference.to(noisy.device).float()
    if ref.shape[0] != b:
        ref = ref.expand(b, -1, -1, -1)
    return (noisy.float() - (ref + output.float())) / sig.clamp_min(1e-6)


def check_prompt(prompt, seq_dim: int, pooled_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A per-call prompt ``(sequence [1,T,D] or [T,D], pooled [1,P] or [P])`` checked against the model's sizes."""
    seq, pooled = prompt
    seq = seq if seq.dim() == 3 else seq.unsqueeze(0)
    pooled = pooled if pooled.dim() == 2 else pooled.unsqueeze(0)
    if (seq.shape[-1], pooled.shape[-1]) != (seq_dim, pooled_dim):
        raise ValueError(f"prompt embedding sizes {seq.shape[-1]}/{pooled.shape[-1]} do not match the model "
                         f"({seq_dim}/{pooled_dim}); use the text encoders of this model's base")
    return seq[:1].float(), pooled[:1].float()


class RefocusModel(nn.Module):
    """Base DiT (+ LoRA) + autoencoder + camera encoder + prompt embedding.

    Attributes:
        config: :class:`RefocusModelConfig`.
        transformer: diffusers ``FluxTransformer2DModel`` (peft LoRA adapter ``"diffcamera"`` when ``lora_rank>0``).
        autoencoder: ``encode(img [B,3,H,W] 0..1) -> [B,C,H/f,W/f]``, ``decode``, ``preview``.
        camera_encoder: :class:`~diffcamera.core.dit.conditions.CameraEncoder` (trainable).
        prompt_embeds: ``[1, T, joint_attention_dim]`` text sequence (T5 for FLUX); ``pooled_prompt_embeds``
            ``[1, pooled_projection_dim]`` (CLIP pooled for FLUX). Buffers; the LoRA file carries them.
        compute_dtype: dtype activations run in (differs from the weights' dtype under fp8 storage).
    """

    def __init__(self, config: RefocusModelConfig, transformer: nn.Module, autoencoder: nn.Module,
                 prompt_embeds: Optional[torch.Tensor] = None, pooled_prompt_embeds: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = config
        self.transformer = transformer  # None: conditions only (the transformer is external, core/dit/external.py)
        self.autoencoder = autoencoder
        tcfg = transformer.config if transformer is not None else None
        if tcfg is not None and int(tcfg.in_channels) != config.token_dim:
            raise ValueError(f"transformer in_channels {tcfg.in_channels} != 4 × latent_channels "
                             f"({config.latent_channels}) of the {config.family} config")
        self.camera_encoder = CameraEncoder(config.camera_channels, config.token_pixels, config.token_dim,
                                            config.camera_subgrid, config.camera_hidden)
        if prompt_embeds is None:
            prompt_embeds, pooled_prompt_embeds = default_prompt_embeddings(tcfg, config.family)
        self.register_buffer("prompt_embeds", prompt_embeds.float(), persistent=False)
        self.register_buffer("pooled_prompt_embeds", pooled_prompt_embeds.float(), persistent=False)
        self.compute_dtype = torch.float32
        self.storage = "default"    # weight storage and offload mode: set by memory.apply_memory_options
        self.offload_mode = "none"
        self.onload_device = None  # set under group offloading (weights on the CPU, compute elsewhere)

    # ----------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Where the transformer's weights live (its first parameter; the onload device under group offloading)."""
        if getattr(self, "onload_device", None) is not None:
            return self.onload_device
        for p in (self.transformer or self.camera_encoder).parameters():
            return p.device
        return torch.device("cpu")

    @device.setter
    def device(self, value) -> None:
        # ComfyUI's ModelPatcher writes ``model.device``; the weights themselves say where they are.
        self.__dict__["_patcher_device"] = value

    @property
    def has_lora(self) -> bool:
        return self.config.lora_rank > 0

    def set_prompt_embeddings(self, prompt_embeds: torch.Tensor, pooled_prompt_embeds: torch.Tensor,
                              prompt: Optional[str] = None) -> None:
        """Replace the text condition: ``prompt_embeds [1,T,D]`` and ``pooled [1,P]`` (e.g. from ComfyUI CONDITIONING)."""
        if prompt_embeds.dim() == 2:
            prompt_embeds = prompt_embeds.unsqueeze(0)
        if pooled_prompt_embeds.dim() == 1:
            pooled_prompt_embeds = pooled_prompt_embeds.unsqueeze(0)
        want = (self.prompt_embeds.shape[-1], self.pooled_prompt_embeds.shape[-1])
        if (prompt_embeds.shape[-1], pooled_prompt_embeds.shape[-1]) != want:
            raise ValueError(f"prompt embedding sizes {prompt_embeds.shape[-1]}/{pooled_prompt_embeds.shape[-1]} do not "
                             f"match the model ({want[0]}/{want[1]})")
        self.prompt_embeds = prompt_embeds[:1].float().to(self.prompt_embeds.device)
        self.pooled_prompt_embeds = pooled_prompt_embeds[:1].float().to(self.prompt_embeds.device)
        if prompt is not None:
            self.config.prompt = prompt

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """LoRA weights (or the whole transformer when ``lora_rank == 0``) and the camera encoder."""
        if self.has_lora:
            for name, p in self.transformer.named_parameters():
                if "lora_" in name:
                    yield p
        else:
            yield from self.transformer.parameters()
        yield from self.camera_encoder.parameters()

    # ----------------------------------------------------------------------------------- forward
    def encode_camera(self, camera_map: torch.Tensor) -> torch.Tensor:
        """Camera map ``[B,C_cam,H,W]`` -> latent-space tokens ``[B, N, 4C]`` (float32)."""
        enc_dev = self.camera_encoder.fc1.weight.device
        return self.camera_encoder(camera_map.to(enc_dev)).float().to(self.device)

    def condition_tokens(self, ref_latents: torch.Tensor, camera_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and RoPE ids that follow the noisy tokens: ``([B, M, 4C], [M, 3])``.

        ``fused``: ``M = N`` (reference + camera projection, index 1); ``separate``: ``M = 2N`` (index 1, 2).
        Constant over sampling steps, so the sampler computes them once per tile.
        """
        ref = ref_latents.to(self.device).float()
        h, w = ref.shape[-2:]
        ref_tok = pack_latents(ref)
        cam_tok = self.encode_camera(camera_map)
        if cam_tok.shape[1] != ref_tok.shape[1]:
            raise ValueError(f"camera map gives {cam_tok.shape[1]} tokens but the reference latent {ref_tok.shape[1]}; "
                             "the camera map must have the image's (padded) size")
        ids1 = token_ids(h // 2, w // 2, 1, device=self.device)
        if self.config.condition_layout == "fused":
            return ref_tok + cam_tok, ids1
        ids2 = token_ids(h // 2, w // 2, 2, device=self.device)
        return torch.cat([ref_tok, cam_tok], 1), torch.cat([ids1, ids2], 0)

    def fused_reference_latents(self, ref_latents: torch.Tensor, camera_map: torch.Tensor) -> torch.Tensor:
        """``fused`` layout only: the single Kontext reference latent ``[B,C,h,w]`` (reference + camera projection)."""
        if self.config.condition_layout != "fused":
            raise ValueError("fused_reference_latents needs the 'fused' condition layout")
        tok, _ = self.condition_tokens(ref_latents, camera_map)
        return unpack_latents(tok, *ref_latents.shape[-2:])

    def velocity_from_tokens(self, noisy_latents: torch.Tensor, sigma: torch.Tensor, cond_tokens: torch.Tensor,
                             cond_ids: torch.Tensor, guidance: float = 1.0,
                             prompt: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                             reference: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Velocity for prepared condition tokens (see :meth:`condition_tokens`); returns ``[B,C,h,w]`` float32.
        ``reference``: the reference latent ``[B|1,C,h,w]`` the tokens were made from (needed by a residual model,
        :func:`velocity_from_output`)."""
        dev, dt = self.device, self.compute_dtype
        x = noisy_latents.to(dev)
        b, _, h, w = x.shape
        tok = pack_latents(x.float())
        n = tok.shape[1]
        if cond_tokens.shape[0] != b:
            cond_tokens = cond_tokens.expand(b, -1, -1)
        hidden = torch.cat([tok, cond_tokens.to(dev).float()], 1).to(dt)
        img_ids = torch.cat([token_ids(h // 2, w // 2, 0, device=dev), cond_ids.to(dev).float()], 0)
        seq, pool = self.prompt_embeds, self.pooled_prompt_embeds
        if prompt is not None:   # a per-call prompt (e.g. ComfyUI CONDITIONING); the model's own stays
            seq, pool = check_prompt(prompt, seq.shape[-1], pool.shape[-1])
        txt = seq.to(dev, dt).expand(b, -1, -1)
        pooled = pool.to(dev, dt).expand(b, -1)
        txt_ids = torch.zeros(txt.shape[1], 3, device=dev)
        sig = torch.as_tensor(sigma, device=dev, dtype=torch.float32).reshape(-1)
        sig = sig.expand(b) if sig.numel() == 1 else sig
        g = None
        if getattr(self.transformer.config, "guidance_embeds", False):
            g = torch.full((b,), float(guidance), device=dev, dtype=dt)
        out = self.transformer(hidden_states=hidden, encoder_hidden_states=txt, pooled_projections=pooled,
                               timestep=sig.to(dt), img_ids=img_ids, txt_ids=txt_ids, guidance=g,
                               return_dict=False)[0]
        return velocity_from_output(self.config.prediction, unpack_latents(out[:, :n].float(), h, w), x, sig,
                                    reference)

    def velocity(self, noisy_latents: torch.Tensor, sigma: torch.Tensor, ref_latents: torch.Tensor,
                 camera_map: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """Rectified-flow velocity ``v ≈ noise − x0``.

        Args:
            noisy_latents: ``[B,C,h,w]`` ``x_t``.
            sigma: ``[B]`` (or scalar) noise level in 0..1.
            ref_latents: ``[B,C,h,w]`` latents of the input image (``autoencoder.encode``).
            camera_map: ``[B,C_cam,H,W]`` at pixel resolution ``H = h·f``, ``W = w·f``.
            guidance: distilled guidance scale (ignored by bases without a guidance embedding).
        Returns:
            ``[B,C,h,w]`` float32.
        """
        if noisy_latents.shape != ref_latents.shape:
            raise ValueError(f"noisy latents {tuple(noisy_latents.shape)} and reference latents "
                             f"{tuple(ref_latents.shape)} differ")
        cond, ids = self.condition_tokens(ref_latents, camera_map)
        return self.velocity_from_tokens(noisy_latents, sigma, cond, ids, guidance, reference=ref_latents)

    def adopt_conditions(self, config: RefocusModelConfig) -> None:
        """Take the condition settings (:data:`CONDITION_FIELDS`) of ``config`` — a LoRA file's, or what a training
        run asks for — and rebuild the camera encoder (zero-initialised) when its shape changes."""
        c = self.config
        rebuild = (c.camera_channels, c.camera_subgrid, c.camera_hidden) != \
            (config.camera_channels, config.camera_subgrid, config.camera_hidden)
        for key in CONDITION_FIELDS:
            setattr(c, key, getattr(config, key))
        if rebuild:
            self.camera_encoder = CameraEncoder(c.camera_channels, c.token_pixels, c.token_dim, c.camera_subgrid,
                                                c.camera_hidden).to(self.device)


# ------------------------------------------------------------------------------------------ builders
def default_prompt_embeddings(transformer_config, family: str):
    """Text condition used when no LoRA/prompt supplies one.

    Toy, and transformers narrower than FLUX.1 (the tests' tiny models): a fixed pseudo-random sequence of
    :data:`TOY_TEXT_TOKENS` tokens (seeded, so every build agrees). Real FLUX: zeros ``[1, 512, 4096]`` /
    ``[1, 768]`` (no text encoder at hand; trained LoRAs carry the real one).
    """
    if transformer_config is None:  # conditions-only bundle of a FLUX family
        return torch.zeros(1, 512, 4096), torch.zeros(1, 768)
    d, p = int(transformer_config.joint_attention_dim), int(transformer_config.pooled_projection_dim)
    inner = int(transformer_config.num_attention_heads) * int(transformer_config.attention_head_dim)
    if family == "toy" or inner != FLUX1_INNER_DIM:
        g = torch.Generator().manual_seed(1234)
        return 0.5 * torch.randn(1, TOY_TEXT_TOKENS, d, generator=g), 0.5 * torch.randn(1, p, generator=g)
    return torch.zeros(1, 512, d), torch.zeros(1, p)


def build_autoencoder(config: RefocusModelConfig) -> nn.Module:
    """The toy pixel-shuffle autoencoder or a tiny ``AutoencoderKL`` wrapped for FLUX, from ``config.autoencoder``."""
    spec = dict(config.autoencoder or {})
    kind = spec.pop("kind", "pixel_shuffle")
    if kind == "pixel_shuffle":
        return PixelShuffleAutoencoder(spec.get("factor", config.vae_scale_factor))
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(**spec)
    return FluxAutoencoder(vae, config.scaling_factor, config.shift_factor)


def build_from_config(config: RefocusModelConfig, seed: int = 0) -> RefocusModel:
    """A random-init model from ``config.transformer`` / ``config.autoencoder`` (the toy, or a FLUX-architecture
    model of another size). A residual-prediction model without a LoRA gets a zero output layer (``proj_out``), so
    it returns its reference exactly until trained."""
    from diffusers import FluxTransformer2DModel
    if config.transformer is None:
        raise ValueError(f"family {config.family!r} has no transformer config; load it with loading.load_refocus_model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**config.transformer)
        autoencoder = build_autoencoder(config)
        model = RefocusModel(config, transformer, autoencoder)
        if config.prediction == "residual" and config.lora_rank == 0:
            nn.init.zeros_(transformer.proj_out.weight)
            nn.init.zeros_(transformer.proj_out.bias)
        if config.lora_rank > 0:
            add_lora(model)
    return model.eval()


def build_toy_model(config: Optional[RefocusModelConfig] = None, seed: int = 0) -> RefocusModel:
    """Tiny FLUX-architecture DiT + invertible pixel-shuffle autoencoder (see :mod:`diffcamera.core.dit.toy`)."""
    from .toy import toy_config
    return build_from_config(config or toy_config(), seed)


def save_refocus_model(model: RefocusModel, path: str, dtype: torch.dtype = torch.float32) -> str:
    """Save a whole model (full transformer weights + extras + config) in ``dtype`` (fp16 halves the file; loading
    casts back to float32): ``path`` is a ``.safetensors`` file or a folder (then ``<folder>/model.safetensors`` +
    ``<folder>/model.json``). Meant for the small toy family."""
    if not path.endswith((".safetensors", ".sft")):
        path = os.path.join(path, "model.safetensors")
    sd = {"transformer." + k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in model.transformer.state_dict().items()}
    return write_file({**sd, **extras(model, dtype)}, model.config, path, MODEL_FORMAT)


def load_model_file(path: str) -> RefocusModel:
    """Rebuild a whole model saved by :func:`save_refocus_model` (float32 weights)."""
    tensors, cfg, fmt = read_file(path)
    if fmt != MODEL_FORMAT:
        raise ValueError(f"{os.path.basename(path)} is a DiffCamera LoRA, not a whole model; select a base model "
                         "and put this file in the LoRA input")
    model = build_from_config(cfg)
    sd = {k[len("transformer."):]: v.float() for k, v in tensors.items() if k.startswith("transformer.")}
    missing, unexpected = model.transformer.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{os.path.basename(path)} does not match its own config "
                         f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    load_extras(model, tensors)
    return model.eval()

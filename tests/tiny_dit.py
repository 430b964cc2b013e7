"""Tiny refocus models for tests (all helpers, all tiers). Random weights, built from configs in milliseconds.

* :data:`TINY_FLUX_TRANSFORMER`, :data:`TINY_FLUX_VAE`, :func:`tiny_flux_config` — the tiny random FLUX (test-only:
  production code knows only the toy and real FLUX.1 bases). It has FLUX.1 [dev]'s architecture (guidance
  embedding, 16 latent channels, ×8 VAE) at a tiny size, so it carries the ``flux1-dev`` family.
* :func:`tiny_flux` / :func:`toy` — build models (``core.dit.model.build_from_config`` with fixed seeds).
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

from diffcamera.core.dit.config import RefocusModelConfig
from diffcamera.core.dit.model import build_from_config, build_toy_model
from diffcamera.core.dit.toy import toy_config

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


def tiny_flux_config(**changes) -> RefocusModelConfig:
    """The tiny-FLUX config (LoRA rank 4, fused layout, trained at 64 px, velocity prediction)."""
    base = dict(family="flux1-dev", condition_layout="fused", latent_channels=16, vae_scale_factor=8,
                camera_subgrid=4, camera_hidden=32, lora_rank=4, trained_size=64,
                transformer=dict(TINY_FLUX_TRANSFORMER), autoencoder=dict(TINY_FLUX_VAE),
                scaling_factor=0.3611, shift_factor=0.1159)
    base.update(changes)
    return RefocusModelConfig(**base)


def tiny_flux_model_entry(**changes) -> dict:
    """The ``model`` entry of a training config that builds the tiny random FLUX (``model_kind: "flux"``, no base)."""
    cfg = tiny_flux_config(**changes).to_dict()
    return {k: cfg[k] for k in ("family", "latent_channels", "vae_scale_factor", "camera_hidden", "lora_rank",
                                "transformer", "autoencoder", "scaling_factor", "shift_factor")}


def tiny_flux(layout: str = "fused", seed: int = 0, lora_rank: int = 4):
    return build_from_config(tiny_flux_config(condition_layout=layout, lora_rank=lora_rank), seed=seed)


def toy(layout: str = "fused", seed: int = 0, full: bool = False, **changes):
    """A toy-family model; ``full=False`` (tests) uses 1 double + 1 single block instead of the toy's 1 + 2.
    Velocity prediction by default (a random DiT whose output depends on every input); pass
    ``prediction="residual"`` for the shipped toy's parameterisation (an untrained one returns its reference)."""
    changes.setdefault("prediction", "velocity")
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
    from diffcamera.core.dit.model import save_refocus_model
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
    """Diffusers FLUX transformer weights -> original BFL/ComfyUI names (``double_blocks.0.img_attn.qkv.weight`` …)."""
    from diffcamera.core.dit.flux_keys import diffusers_to_bfl as convert
    return convert(state_dict, transformer_config.num_layers, transformer_config.num_single_layers)


def save_tiny_flux_single_files(models_dir: str, layout: str = "fused", seed: int = 0):
    """ComfyUI-style single files: ``diffusion_models/tiny-flux.safetensors`` (BFL layout) plus
    ``diffcamera/configs/tiny-flux/transformer/config.json`` (its diffusers config), ``vae/tiny-flux-vae/`` and
    ``loras/tiny_refocus.safetensors``; returns ``(paths, model)``."""
    from safetensors.torch import save_file
    paths, model = save_tiny_flux_bundle(models_dir, layout, seed)
    sd = diffusers_to_bfl(base_transformer_state_dict(model), model.transformer.config)
    f = os.path.join(models_dir, "diffusion_models", "tiny-flux.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, f)
    cfg_dir = os.path.join(models_dir, "diffcamera", "configs", "tiny-flux")
    os.makedirs(os.path.join(cfg_dir, "transformer"), exist_ok=True)
    import shutil
    shutil.copy(os.path.join(paths["transformer"], "config.json"), os.path.join(cfg_dir, "transformer", "config.json"))
    paths.update(single_file=f, config_dir=cfg_dir)
    return paths, model


def comfy_parity_case(models_dir: str, layout: str = "fused", seed: int = 0):
    """Everything the real-ComfyUI tier needs to show that ComfyUI's FLUX (+ our LoRA via its stock loader) and our
    diffusers path predict the same velocity for the same weights and inputs.

    Returns a dict:
        ``unet_config``: for ``comfy.supported_models.Flux(unet_config)`` (then ``set_inference_dtype(torch.float32,
        None)``, ``get_model({})`` and ``load_model_weights(bfl_state_dict, "")``, wrap in a ModelPatcher);
        ``bfl_state_dict``: the tiny base transformer in BFL/ComfyUI names (also saved as
        ``diffusion_models/tiny-flux.safetensors``);
        ``lora_path``: our LoRA file (``loras/tiny_refocus.safetensors``; load it with ``comfy.utils.load_torch_file``
        and ``comfy.sd.load_lora_for_models`` or ``comfy_adapter.flux_velocity_fn``: every ``transformer.*`` LoRA key
        must be mapped, i.e. none reported "not loaded");
        ``inputs``: ``noisy [1,16,8,6]``, ``sigma [1]``, ``refs`` (list of reference latents, FLUX-normalised),
        ``txt [1,4,32]``, ``pooled [1,16]``, ``guidance`` — the arguments of a ``velocity_fn``;
        ``expected``: our velocity ``[1,16,8,6]`` (diffusers transformer with the LoRA, fp32).
    ComfyUI's velocity: ``patcher, fn = comfy_adapter.flux_velocity_fn(model_patcher, lora_tensors)``,
    ``comfy_adapter.load_models([patcher])``, ``fn(**inputs)``; expect agreement to ~1e-4 (different RoPE/attention
    kernels). A wrong key mapping or ids layout gives errors of order 1.
    """
    from diffcamera.core.dit.conditions import build_camera_map
    from diffcamera.core.dit.external import reference_latents
    paths, model = save_tiny_flux_single_files(models_dir, layout, seed)
    g = torch.Generator().manual_seed(seed + 11)
    img = torch.rand(1, 3, 64, 48, generator=g)
    disp = torch.rand(1, 1, 64, 48, generator=g)
    with torch.no_grad():
        ref = model.autoencoder.encode(img)
        cam = build_camera_map(disp, 0.4, 24.0, torch.tensor([0.3, 0.6]))
        refs = reference_latents(model, ref, cam)
        noisy = torch.randn(ref.shape, generator=g)
        sigma = torch.tensor([0.6])
        expected = model.velocity(noisy, sigma, ref, cam, 3.5)
    bfl = diffusers_to_bfl(base_transformer_state_dict(model), model.transformer.config)
    return {"unet_config": comfy_flux_unet_config(model.transformer.config), "bfl_state_dict": bfl,
            "lora_path": paths["lora"], "paths": paths,
            "inputs": {"noisy": noisy, "sigma": sigma, "refs": refs, "txt": model.prompt_embeds,
                       "pooled": model.pooled_prompt_embeds, "guidance": 3.5},
            "expected": expected, "model": model}


def comfy_flux_patcher(case: dict):
    """Inside a real-ComfyUI process: ComfyUI's own FLUX (``comfy.supported_models.Flux``) built from a
    :func:`comfy_parity_case`, with its BFL weights, in float32 on the CPU, wrapped in a ``ModelPatcher``."""
    import comfy.model_patcher
    import comfy.supported_models
    mc = comfy.supported_models.Flux(case["unet_config"])
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    model.load_model_weights(case["bfl_state_dict"], "")
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def run_comfy_parity(models_dir: str, layouts=("fused", "separate")) -> dict:
    """Inside a process where real ComfyUI is imported (``tests/comfyui/inproc/bootstrap.py``): build ComfyUI's own
    FLUX from :func:`comfy_parity_case`, apply our LoRA file through ComfyUI's stock LoRA loader
    (``comfy.utils.load_torch_file`` + ``comfy.sd.load_lora_for_models`` inside ``comfy_adapter.flux_velocity_fn``)
    and compare velocities with our diffusers path. Returns ``{layout: {"base": err, "lora": err, "effect": e}}``
    (max abs errors; ``effect`` = how much the LoRA changes the output, so a LoRA that did not load shows as
    ``lora ≈ effect``). Measured with ComfyUI v0.3.64 on the CPU: base ≤ 4e-7, lora ≤ 8e-7, effect ≈ 0.28.
    """
    import comfy.utils
    from diffusers import FluxTransformer2DModel

    import diffcamera.comfy_adapter as ca
    from diffcamera.core.dit.external import diffusers_velocity_fn
    out = {}
    for layout in layouts:
        case = comfy_parity_case(os.path.join(models_dir, layout), layout)
        mp = comfy_flux_patcher(case)
        assert ca.is_comfy_flux_model(mp)
        lora = comfy.utils.load_torch_file(case["lora_path"], safe_load=True)
        base = FluxTransformer2DModel(**case["model"].transformer.config)
        base.load_state_dict(base_transformer_state_dict(case["model"]))
        p0, f0 = ca.flux_velocity_fn(mp, None)
        ca.load_models([p0])
        with torch.no_grad():
            v_base_ours = diffusers_velocity_fn(base)(**case["inputs"])
            v_base_comfy = f0(**case["inputs"])
        p1, f1 = ca.flux_velocity_fn(mp, lora)  # the whole file, as LoraLoaderModelOnly passes it
        ca.load_models([p1])
        with torch.no_grad():
            v_lora_comfy = f1(**case["inputs"])
        out[layout] = {"base": float((v_base_ours - v_base_comfy).abs().max()),
                       "lora": float((case["expected"] - v_lora_comfy).abs().max()),
                       "effect": float((case["expected"] - v_base_ours).abs().max())}
    return out

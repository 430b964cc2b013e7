"""Load a refocus model from local files only: toy bundles, diffusers folders, ComfyUI single files.

``load_refocus_model(base, vae=None, lora=None, *, family=None, dtype="auto", storage="default",
offload="none", device=None)`` accepts for ``base``:

* ``"toy"`` — the bundled toy model ``assets/toy_refocus/model.safetensors`` (trained by the pack's trainer);
* a DiffCamera whole-model file (``format = "diffcamera-model"``) or a folder holding ``model.safetensors``;
* a diffusers ``FluxTransformer2DModel`` folder (``config.json`` + weights) or a diffusers FLUX pipeline folder
  (``transformer/`` and ``vae/`` subfolders: the VAE is taken from there when ``vae`` is not given);
* a single-file FLUX transformer in the original BFL layout (what ComfyUI keeps in ``models/diffusion_models/``,
  bf16 or fp8), converted by diffusers' ``from_single_file`` with the config shipped in ``assets/configs/``
  (no download).

``vae``: a diffusers ``AutoencoderKL`` folder or a single-file ``ae.safetensors`` (``models/vae/``). ``lora``: a
DiffCamera LoRA (:func:`~diffcamera.core.dit.lora.load_refocus_lora`; refused when made for another family).

The family of a FLUX base is ``family`` if given, else guessed from its name (``"kontext"`` ->
``flux1-kontext-dev``, else ``flux1-dev``). Missing files raise ``FileNotFoundError`` naming the file and the
folder it was looked for in.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .config import RefocusModelConfig
from .files import CONFIGS, MODEL_FORMAT, TOY_BUNDLE, file_format


def _missing(path: str, what: str) -> FileNotFoundError:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    return FileNotFoundError(f"{what} {os.path.basename(path)!r} not found in {folder}; put the file there "
                             "(or choose another in the loader)")


def toy_bundle_file(path: str = TOY_BUNDLE) -> str:
    """The toy model file inside a bundle folder (``model.safetensors``)."""
    f = os.path.join(path, "model.safetensors")
    if not os.path.isfile(f):
        raise FileNotFoundError(f"toy refocus model 'model.safetensors' not found in {path}; train it with "
                                "`diffcamera train --toy` (or reinstall the pack, which ships it)")
    return f


def is_diffcamera_model(path: str) -> bool:
    """Whether ``path`` is a DiffCamera whole-model file or a folder holding one."""
    f = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    if not os.path.isfile(f) or not f.endswith((".safetensors", ".sft")):
        return False
    return file_format(f) == MODEL_FORMAT


def guess_family(name: str) -> str:
    """The FLUX family of a base from its file or folder name (``"kontext"`` in it: Kontext [dev])."""
    return "flux1-kontext-dev" if "kontext" in os.path.basename(os.path.normpath(name)).lower() else "flux1-dev"


def load_transformer(path: str, family: Optional[str] = None, dtype: torch.dtype = torch.bfloat16,
                     config_dir: Optional[str] = None):
    """``FluxTransformer2DModel`` from a diffusers folder, a pipeline folder or a single BFL-format file
    (config: ``config_dir/transformer/config.json``, default the shipped one of the family)."""
    from diffusers import FluxTransformer2DModel
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "transformer", "config.json")):
            return FluxTransformer2DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype,
                                                          local_files_only=True)
        if os.path.isfile(os.path.join(path, "config.json")):
            return FluxTransformer2DModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        raise FileNotFoundError(f"no FLUX transformer in folder {path}: expected config.json (diffusers transformer "
                                "folder) or transformer/config.json (diffusers pipeline folder)")
    if not os.path.isfile(path):
        raise _missing(path, "base model")
    family = family or guess_family(path)
    cfg_dir = config_dir or os.path.join(CONFIGS, family if family in ("flux1-dev", "flux1-kontext-dev") else "flux1-dev")
    return single_file_transformer(path, cfg_dir, "transformer", dtype)


def single_file_transformer(path: str, config_dir: str, subfolder: Optional[str], dtype: torch.dtype):
    """Single-file (BFL layout, bf16/fp8) transformer with a local diffusers config
    (``config_dir[/subfolder]/config.json``), converted by :mod:`~diffcamera.core.dit.flux_keys`.

    The module is built on the meta device (accelerate) and the converted tensors are assigned, cast to ``dtype``:
    no second full-size copy in memory.
    """
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from .files import read_safetensors
    from .flux_keys import bfl_to_diffusers, count_blocks, strip_prefix
    cfg_path = os.path.join(config_dir, subfolder or "", "config.json")
    if not os.path.isfile(cfg_path):
        raise _missing(cfg_path, "transformer config")
    cfg = FluxTransformer2DModel.load_config(os.path.join(config_dir, subfolder or ""))
    raw = strip_prefix(read_safetensors(path, "FLUX.1 transformer")[0])
    if "img_in.weight" not in raw:
        raise ValueError(f"{os.path.basename(path)} is not a FLUX transformer in the original (BFL/ComfyUI) layout "
                         "(no img_in.weight)")
    n_double, n_single = count_blocks(raw)
    cfg["num_layers"], cfg["num_single_layers"] = n_double, n_single
    cfg["guidance_embeds"] = "guidance_in.in_layer.weight" in raw
    hidden = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    if raw["img_in.weight"].shape[0] != hidden:
        raise ValueError(f"{os.path.basename(path)} has width {raw['img_in.weight'].shape[0]}, the config in "
                         f"{config_dir} {hidden}; pick the matching config")
    sd = {k: v.to(dtype) for k, v in bfl_to_diffusers(raw, hidden).items()}
    del raw
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(dtype)


def load_vae(path: str, dtype: torch.dtype = torch.float32):
    """``AutoencoderKL`` from a diffusers folder (or pipeline folder) or a single ``ae.safetensors``."""
    from diffusers import AutoencoderKL
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "vae", "config.json")):
            return AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, local_files_only=True)
        if os.path.isfile(os.path.join(path, "config.json")):
            return AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        raise FileNotFoundError(f"no VAE in folder {path}: expected config.json or vae/config.json")
    if not os.path.isfile(path):
        raise _missing(path, "VAE")
    return AutoencoderKL.from_single_file(path, config=os.path.join(CONFIGS, "flux1-vae"), subfolder="vae",
                                          torch_dtype=dtype, local_files_only=True)


def load_refocus_model(base: str, vae: Optional[str] = None, lora: Optional[str] = None, *,
                       family: Optional[str] = None, dtype: str = "auto", storage: str = "default",
                       offload: str = "none", device=None, config_dir: Optional[str] = None):
    """Build a :class:`~diffcamera.core.dit.model.RefocusModel` from local files (see the module docstring).

    ``dtype``/``storage``/``offload``: :mod:`~diffcamera.core.dit.memory`. ``config_dir``: a folder with
    ``transformer/config.json`` for a single-file base whose architecture is not FLUX.1's (tests, tiny models).
    """
    from .autoencoder import FluxAutoencoder
    from .lora import load_refocus_lora
    from .memory import apply_memory_options, resolve_dtype
    from .model import RefocusModel, load_model_file
    from .toy import flux_config
    device = torch.device(device) if device is not None else torch.device("cpu")
    cdtype = resolve_dtype(dtype, device)
    if base == "toy":
        base = toy_bundle_file()
    if os.path.isdir(base) and os.path.isfile(os.path.join(base, "model.safetensors")) and is_diffcamera_model(base):
        base = os.path.join(base, "model.safetensors")
    if not os.path.exists(base):
        raise _missing(base, "base model")
    if is_diffcamera_model(base):
        model = load_model_file(base)
    else:
        transformer = load_transformer(base, family, cdtype, config_dir)
        fam = family or guess_family(base)
        if vae is None and os.path.isdir(base) and os.path.isfile(os.path.join(base, "vae", "config.json")):
            vae = base
        if vae is None:
            raise FileNotFoundError(f"the FLUX base {os.path.basename(os.path.normpath(base))!r} needs a VAE: put "
                                    "the FLUX VAE (ae.safetensors) in ComfyUI's models/vae folder and select it")
        vae_module = load_vae(vae, torch.float32 if cdtype == torch.float32 else torch.bfloat16)
        cfg: RefocusModelConfig = flux_config(fam, lora_rank=0)
        cfg.latent_channels = int(vae_module.config.latent_channels)
        model = RefocusModel(cfg, transformer, FluxAutoencoder(vae_module, cfg.scaling_factor, cfg.shift_factor))
    if lora:
        if not os.path.isfile(lora):
            raise _missing(lora, "LoRA")
        load_refocus_lora(model, lora)
    if model.has_lora and storage == "default":
        from .lora import merge_lora
        # inference: zero LoRA overhead per step (fp8 storage keeps it separate, in the compute dtype). Before the
        # offloading hooks, which may keep their own (pinned) copies of the weights.
        merge_lora(model)
    apply_memory_options(model, cdtype, storage, offload, device)
    return model.eval()


def describe(model) -> str:
    """One line about a loaded model (for node output / CLI logs)."""
    c = model.config
    n = sum(p.numel() for p in model.transformer.parameters())
    return (f"{c.family} ({n / 1e6:.1f} M params), layout {c.condition_layout}, LoRA rank {c.lora_rank}, "
            f"{str(model.compute_dtype).replace('torch.', '')}, storage {getattr(model, 'storage', 'default')}, "
            f"offload {model.offload_mode}")


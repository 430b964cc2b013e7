"""LoRA adapters (peft) on the FLUX transformer: inject, merge / unmerge / remove, save and load refocus LoRAs.

The file format (keys ComfyUI's and diffusers' stock LoRA loaders read, the DiffCamera extras, metadata) is owned
by :mod:`diffcamera.core.dit.files`; whole-model files (the toy) are saved and rebuilt by
:mod:`diffcamera.core.dit.model`. This module does not import the model module (the model imports it).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch

from .config import RefocusModelConfig, family_compatible
from .files import LORA_FORMAT, MODEL_FORMAT, extras, load_extras, read_file, write_file

ADAPTER = "diffcamera"


def add_lora(model, rank: Optional[int] = None, alpha: Optional[float] = None, targets=None) -> None:
    """Inject a peft LoRA (adapter ``"diffcamera"``, B = 0 so the output is unchanged) and freeze the base."""
    from peft import LoraConfig, inject_adapter_in_model
    cfg = model.config
    rank = int(rank or cfg.lora_rank or 16)
    alpha = float(alpha if alpha is not None else (cfg.lora_alpha or rank))
    targets = list(targets or cfg.lora_targets)
    for p in model.transformer.parameters():
        p.requires_grad_(False)
    lcfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True, lora_dropout=0.0)
    inject_adapter_in_model(lcfg, model.transformer, adapter_name=ADAPTER)
    cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets = rank, alpha, targets


def has_adapter(model) -> bool:
    return any(f"lora_A.{ADAPTER}" in n for n, _ in model.transformer.named_parameters())


def lora_state_dict(model) -> Dict[str, torch.Tensor]:
    """The LoRA tensors in diffusers/ComfyUI naming (``transformer.<module>.lora_A.weight`` …, ``.alpha``).
    (Merging does not change them, so a merged model saves the same file.)"""
    from peft.utils import get_peft_model_state_dict
    sd = get_peft_model_state_dict(model.transformer, adapter_name=ADAPTER)
    out = {}
    alpha = float(model.config.lora_alpha or model.config.lora_rank)
    for k, v in sd.items():
        out["transformer." + k] = v.detach().float().cpu().contiguous()
        if k.endswith(".lora_A.weight"):
            out["transformer." + k[:-len(".lora_A.weight")] + ".alpha"] = torch.tensor(alpha)
    return out


def save_refocus_lora(model, path: str) -> str:
    """Save LoRA + camera encoder + prompt embedding + config to ``path`` (``.safetensors``); returns the path."""
    if not has_adapter(model):
        raise ValueError(f"this {model.config.family} model has no LoRA (lora_rank=0, full training); "
                         "save it with model.save_refocus_model instead")
    if not path.endswith((".safetensors", ".sft")):
        path += ".safetensors"
    return write_file({**lora_state_dict(model), **extras(model)}, model.config, path, LORA_FORMAT)


def check_compatible(base: RefocusModelConfig, lora: RefocusModelConfig, name: str = "LoRA") -> None:
    """Raise ``ValueError`` naming both sides when ``lora`` was made for another family or condition layout."""
    if not family_compatible(base.family, lora.family):
        raise ValueError(f"{name} was trained for base family {lora.family!r} but the loaded base is "
                         f"{base.family!r}; load a {lora.family} base or a LoRA trained for {base.family}")
    if base.latent_channels != lora.latent_channels:
        raise ValueError(f"{name} expects {lora.latent_channels} latent channels, the base has {base.latent_channels}")


def load_refocus_lora(model_or_base, path: str):
    """Apply a saved refocus LoRA to a model (a :class:`RefocusModel`, with or without a LoRA yet).

    The base's family must match the file's (else ``ValueError`` naming both); the model adopts the file's
    condition layout, camera encoder, prompt embedding and LoRA weights. Returns the model.
    """
    from peft.utils import set_peft_model_state_dict
    model = model_or_base
    tensors, cfg, fmt = read_file(path)
    if fmt == MODEL_FORMAT:
        raise ValueError(f"{os.path.basename(path)} is a whole DiffCamera model, not a LoRA; select it as the base")
    check_compatible(model.config, cfg)
    # a bare base adopts the file's layout; a model that already has a LoRA (or whole trained toy weights) is
    # tied to its own layout
    if model.config.condition_layout != cfg.condition_layout and (has_adapter(model) or model.config.family == "toy"):
        raise ValueError(f"LoRA uses condition layout {cfg.condition_layout!r} but this model is set up for "
                         f"{model.config.condition_layout!r}; reload the base without a LoRA or use a "
                         f"{model.config.condition_layout!r} LoRA")
    same = (has_adapter(model) and model.config.lora_rank == cfg.lora_rank
            and list(model.config.lora_targets) == list(cfg.lora_targets))
    if has_adapter(model):
        unmerge_lora(model)
    if has_adapter(model) and not same:
        remove_lora(model)
    model.adopt_conditions(cfg)
    if not same:
        add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    model.config.lora_alpha = cfg.lora_alpha
    sd = {k[len("transformer."):]: v for k, v in tensors.items()
          if k.startswith("transformer.") and not k.endswith(".alpha")}
    dev = model.device
    result = set_peft_model_state_dict(model.transformer, {k: v.to(dev) for k, v in sd.items()}, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"{os.path.basename(path)}: {len(unexpected)} LoRA keys do not match this transformer "
                         f"(e.g. {unexpected[0]}); it was made for another model size")
    load_extras(model, tensors)
    model.camera_encoder.to(dev)
    return model


def lora_layers(model) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer
    return [m for m in model.transformer.modules() if isinstance(m, BaseTunerLayer)]


def merge_lora(model) -> None:
    """Fold the LoRA into the base weights for inference (a step then costs exactly a plain FLUX step);
    the LoRA matrices are kept, :func:`unmerge_lora` restores the base. Idempotent."""
    for m in lora_layers(model):
        if not m.merged:
            m.merge(adapter_names=[ADAPTER])


def unmerge_lora(model) -> None:
    for m in lora_layers(model):
        while m.merged:
            m.unmerge()


def remove_lora(model) -> None:
    """Remove the ``"diffcamera"`` adapter (restores the plain base layers)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import _get_submodules
    unmerge_lora(model)
    names = [n for n, m in model.transformer.named_modules() if isinstance(m, BaseTunerLayer)]
    for n in names:
        parent, target, attr = _get_submodules(model.transformer, n)
        setattr(parent, attr, target.get_base_layer())
    model.config.lora_rank = 0

"""LoRA adapters (peft) on the FLUX transformer; save/load of refocus LoRAs and whole small models.

File format (``.safetensors``)
------------------------------
* ``transformer.<diffusers module>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha`` — the diffusers/peft FLUX
  LoRA naming. ComfyUI's stock LoRA loader maps exactly these: ``comfy/lora.py`` ``model_lora_keys_unet`` adds
  ``"transformer." + k`` for every diffusers key ``k`` of ``comfy.utils.flux_to_diffusers`` (q/k/v slices of the
  fused qkv / linear1 included) and ``comfy/weight_adapter/lora.py`` reads ``lora_A/lora_B`` + ``alpha``.
  diffusers' ``load_lora_weights`` reads them too (alpha keys become ``network_alphas``).
* ``diffcamera.camera_encoder.*`` (the camera projection), ``diffcamera.prompt_embeds`` ``[1,T,D]`` and
  ``diffcamera.pooled_prompt_embeds`` ``[1,P]`` (the training prompt's T5/CLIP embedding, so inference needs no
  text encoder). Stock loaders ignore these keys (ComfyUI logs them as not loaded).
* metadata ``diffcamera_config`` = :class:`RefocusModelConfig` JSON, ``format = "diffcamera-lora"``; the same
  JSON is written next to the file as ``<name>.json``.

Whole models (:func:`save_refocus_model`, the toy family) store the full transformer state dict under
``transformer.*`` plus the same extras, ``format = "diffcamera-model"``.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import torch

from .config import RefocusModelConfig, family_compatible

ADAPTER = "diffcamera"
EXTRA_PREFIX = "diffcamera."
LORA_FORMAT = "diffcamera-lora"
MODEL_FORMAT = "diffcamera-model"


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


def _extras(model) -> Dict[str, torch.Tensor]:
    out = {EXTRA_PREFIX + "camera_encoder." + k: v.detach().float().cpu().contiguous()
           for k, v in model.camera_encoder.state_dict().items()}
    out[EXTRA_PREFIX + "prompt_embeds"] = model.prompt_embeds.detach().float().cpu().contiguous()
    out[EXTRA_PREFIX + "pooled_prompt_embeds"] = model.pooled_prompt_embeds.detach().float().cpu().contiguous()
    return out


def _write(tensors: dict, config: RefocusModelConfig, path: str, fmt: str) -> str:
    from safetensors.torch import save_file

    from ..safe_paths import atomic_write
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    text = config.to_json()
    with atomic_write(path) as tmp:  # a reader (or a crash) never sees half a file
        save_file(tensors, tmp, metadata={"diffcamera_config": text, "format": fmt})
    with atomic_write(os.path.splitext(path)[0] + ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def save_refocus_lora(model, path: str) -> str:
    """Save LoRA + camera encoder + prompt embedding + config to ``path`` (``.safetensors``); returns the path."""
    if not has_adapter(model):
        raise ValueError(f"this {model.config.family} model has no LoRA (lora_rank=0, full training); "
                         "save it with save_refocus_model instead")
    if not path.endswith((".safetensors", ".sft")):
        path += ".safetensors"
    return _write({**lora_state_dict(model), **_extras(model)}, model.config, path, LORA_FORMAT)


def save_refocus_model(model, path: str) -> str:
    """Save a whole model (full transformer weights + extras + config): ``path`` is a ``.safetensors`` file or a folder
    (then ``<folder>/model.safetensors`` + ``<folder>/model.json``). Meant for the small toy family."""
    if not path.endswith((".safetensors", ".sft")):
        path = os.path.join(path, "model.safetensors")
    sd = {"transformer." + k: v.detach().float().cpu().contiguous() for k, v in model.transformer.state_dict().items()}
    return _write({**sd, **_extras(model)}, model.config, path, MODEL_FORMAT)


def read_file(path: str) -> Tuple[Dict[str, torch.Tensor], RefocusModelConfig, str]:
    """``(tensors, config, format)`` of a DiffCamera safetensors file (config from metadata, else the sidecar)."""
    from safetensors import safe_open
    if not os.path.isfile(path):
        raise FileNotFoundError(f"refocus LoRA/model file {os.path.basename(path)!r} not found in "
                                f"{os.path.dirname(os.path.abspath(path))}")
    tensors = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    text = meta.get("diffcamera_config")
    if text is None:
        side = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(side):
            raise ValueError(f"{os.path.basename(path)} has no DiffCamera config (no 'diffcamera_config' metadata and "
                             f"no {os.path.basename(side)} next to it); it is not a DiffCamera refocus LoRA")
        with open(side) as fh:
            text = fh.read()
    return tensors, RefocusModelConfig.from_json(text), meta.get("format", LORA_FORMAT)


def check_compatible(base: RefocusModelConfig, lora: RefocusModelConfig, name: str = "LoRA") -> None:
    """Raise ``ValueError`` naming both sides when ``lora`` was made for another family or condition layout."""
    if not family_compatible(base.family, lora.family):
        raise ValueError(f"{name} was trained for base family {lora.family!r} but the loaded base is "
                         f"{base.family!r}; load a {lora.family} base or a LoRA trained for {base.family}")
    if base.latent_channels != lora.latent_channels:
        raise ValueError(f"{name} expects {lora.latent_channels} latent channels, the base has {base.latent_channels}")


def load_extras(model, tensors: dict) -> None:
    cam = {k[len(EXTRA_PREFIX + "camera_encoder."):]: v for k, v in tensors.items()
           if k.startswith(EXTRA_PREFIX + "camera_encoder.")}
    if cam:
        model.camera_encoder.load_state_dict(cam)
    pe, pp = tensors.get(EXTRA_PREFIX + "prompt_embeds"), tensors.get(EXTRA_PREFIX + "pooled_prompt_embeds")
    if pe is not None and pp is not None:  # the file's own embedding (sizes checked against the transformer)
        tcfg = getattr(model.transformer, "config", None)
        if tcfg is not None and (pe.shape[-1], pp.shape[-1]) != (tcfg.joint_attention_dim, tcfg.pooled_projection_dim):
            raise ValueError(f"the file's prompt embedding ({pe.shape[-1]}/{pp.shape[-1]}) does not fit this "
                             f"transformer ({tcfg.joint_attention_dim}/{tcfg.pooled_projection_dim})")
        dev = model.prompt_embeds.device
        model.prompt_embeds = pe.float().to(dev)
        model.pooled_prompt_embeds = pp.float().to(dev)


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
    if model.config.camera_channels != cfg.camera_channels or model.config.camera_subgrid != cfg.camera_subgrid \
            or model.config.camera_hidden != cfg.camera_hidden:
        from .conditions import CameraEncoder
        model.camera_encoder = CameraEncoder(cfg.camera_channels, cfg.token_pixels, cfg.token_dim,
                                             cfg.camera_subgrid, cfg.camera_hidden).to(model.device)
    same = (has_adapter(model) and model.config.lora_rank == cfg.lora_rank
            and list(model.config.lora_targets) == list(cfg.lora_targets))
    if has_adapter(model):
        unmerge_lora(model)
    if has_adapter(model) and not same:
        remove_lora(model)
    model.config.condition_layout = cfg.condition_layout
    model.config.coc_scale = cfg.coc_scale
    model.config.camera_channels, model.config.camera_subgrid = cfg.camera_channels, cfg.camera_subgrid
    model.config.camera_hidden, model.config.prompt = cfg.camera_hidden, cfg.prompt
    model.config.trained_size = cfg.trained_size
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


def _lora_nonzero(model) -> bool:
    return any(p.abs().sum() > 0 for n, p in model.transformer.named_parameters() if f"lora_B.{ADAPTER}" in n)


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


def load_model_file(path: str):
    """Rebuild a whole model saved by :func:`save_refocus_model` (toy / tiny families)."""
    from .model import build_from_config
    tensors, cfg, fmt = read_file(path)
    if fmt != MODEL_FORMAT:
        raise ValueError(f"{os.path.basename(path)} is a DiffCamera LoRA, not a whole model; select a base model "
                         "and put this file in the LoRA input")
    model = build_from_config(cfg)
    sd = {k[len("transformer."):]: v for k, v in tensors.items() if k.startswith("transformer.")}
    missing, unexpected = model.transformer.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{os.path.basename(path)} does not match its own config "
                         f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    load_extras(model, tensors)
    return model.eval()


def read_config(path: str) -> Optional[RefocusModelConfig]:
    """The config of a DiffCamera file, or ``None`` if it is not one (cheap: metadata only)."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            text = (f.metadata() or {}).get("diffcamera_config")
        if text is None:
            side = os.path.splitext(path)[0] + ".json"
            if os.path.isfile(side):
                with open(side) as fh:
                    text = fh.read()
        return RefocusModelConfig.from_json(text) if text else None
    except Exception:  # noqa: BLE001 - not ours / unreadable
        return None


def _json_ok(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False

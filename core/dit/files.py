"""The DiffCamera model file format (``.safetensors``): one owner for what LoRA and whole-model files hold.

Two kinds of file, told apart by the metadata entry ``format``:

* ``"diffcamera-lora"`` (:data:`LORA_FORMAT`, :func:`diffcamera.core.dit.lora.save_refocus_lora`):
  ``transformer.<diffusers module>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha`` — the diffusers/peft FLUX
  LoRA naming. ComfyUI's stock LoRA loader maps exactly these: ``comfy/lora.py`` ``model_lora_keys_unet`` adds
  ``"transformer." + k`` for every diffusers key ``k`` of ``comfy.utils.flux_to_diffusers`` (q/k/v slices of the
  fused qkv / linear1 included) and ``comfy/weight_adapter/lora.py`` reads ``lora_A/lora_B`` + ``alpha``.
  diffusers' ``load_lora_weights`` reads them too (alpha keys become ``network_alphas``).
* ``"diffcamera-model"`` (:data:`MODEL_FORMAT`, :func:`diffcamera.core.dit.model.save_refocus_model`, the toy
  family): the full transformer state dict under ``transformer.*``.

Both also hold the extras (:func:`extras`): ``diffcamera.camera_encoder.*`` (the camera projection),
``diffcamera.prompt_embeds`` ``[1,T,D]`` and ``diffcamera.pooled_prompt_embeds`` ``[1,P]`` (the training
prompt's T5/CLIP embedding, so inference needs no text encoder); stock loaders ignore these keys (ComfyUI
logs them as not loaded). Metadata ``diffcamera_config`` is the
:class:`~diffcamera.core.dit.config.RefocusModelConfig` JSON; the same JSON is written next to the file as
``<name>.json``.

It also names where the pack's own files lie (:data:`ASSETS`: the shipped FLUX configs and the toy bundle).
This module imports no model code (``model``, ``lora``, ``loading`` and ``memory`` import it).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch

from .config import RefocusModelConfig

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The pack's shipped files: ``configs/`` (FLUX.1 transformer and VAE configs), ``toy_refocus/`` (the toy bundle).
ASSETS = os.path.join(PACKAGE_DIR, "assets")
CONFIGS = os.path.join(ASSETS, "configs")
TOY_BUNDLE = os.path.join(ASSETS, "toy_refocus")

EXTRA_PREFIX = "diffcamera."
LORA_FORMAT = "diffcamera-lora"
MODEL_FORMAT = "diffcamera-model"
_CAMERA = EXTRA_PREFIX + "camera_encoder."


def extras(model, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """The extras of ``model`` (camera encoder, prompt embedding) as file tensors in ``dtype``."""
    out = {_CAMERA + k: v.detach().to(dtype).cpu().contiguous() for k, v in model.camera_encoder.state_dict().items()}
    out[EXTRA_PREFIX + "prompt_embeds"] = model.prompt_embeds.detach().to(dtype).cpu().contiguous()
    out[EXTRA_PREFIX + "pooled_prompt_embeds"] = model.pooled_prompt_embeds.detach().to(dtype).cpu().contiguous()
    return out


def load_extras(model, tensors: Dict[str, torch.Tensor]) -> None:
    """Load a file's extras into ``model`` (the prompt embedding's sizes are checked against its transformer)."""
    cam = {k[len(_CAMERA):]: v.float() for k, v in tensors.items() if k.startswith(_CAMERA)}
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


def write_file(tensors: Dict[str, torch.Tensor], config: RefocusModelConfig, path: str, fmt: str) -> str:
    """Write ``tensors`` with ``config`` as metadata and sidecar JSON, atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    from ..safe_paths import atomic_write
    if fmt not in (LORA_FORMAT, MODEL_FORMAT):
        raise ValueError(f"unknown DiffCamera file format {fmt!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = config.to_json()
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata={"diffcamera_config": text, "format": fmt})
    with atomic_write(os.path.splitext(path)[0] + ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def read_safetensors(path: str, what: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file (never pickle). A file that is not one (another format, truncated,
    a corrupt header) raises ``ValueError`` naming it and ``what`` it should be, instead of the library's error."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except SafetensorError as exc:
        raise ValueError(f"{os.path.basename(path)} is not a readable .safetensors file ({exc}); "
                         f"give a {what} in safetensors format") from None


def read_file(path: str) -> Tuple[Dict[str, torch.Tensor], RefocusModelConfig, str]:
    """``(tensors, config, format)`` of a DiffCamera safetensors file (config from metadata, else the sidecar)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"refocus LoRA/model file {os.path.basename(path)!r} not found in "
                                f"{os.path.dirname(os.path.abspath(path))}")
    tensors, meta = read_safetensors(path, "refocus LoRA/model file")
    text = meta.get("diffcamera_config")
    if text is None:
        side = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(side):
            raise ValueError(f"{os.path.basename(path)} has no DiffCamera config (no 'diffcamera_config' metadata and "
                             f"no {os.path.basename(side)} next to it); it is not a DiffCamera refocus LoRA")
        with open(side) as fh:
            text = fh.read()
    return tensors, RefocusModelConfig.from_json(text), meta.get("format", LORA_FORMAT)


def file_format(path: str) -> Optional[str]:
    """The ``format`` metadata of a safetensors file (cheap: the header only), or ``None`` if unreadable/absent."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as h:
            return (h.metadata() or {}).get("format")
    except Exception:  # noqa: BLE001 - not a safetensors file, or unreadable: not ours
        return None

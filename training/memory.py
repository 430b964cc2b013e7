"""Will a training run fit? The trainer's up-front memory check.

:func:`plan` estimates one training step of a :class:`~diffcamera.training.config.TrainConfig` on a device with
:func:`diffcamera.core.dit.memory.estimate_training_bytes` (exact parameter counts, activations from the
architecture); :func:`check_fits` compares it with the device's free memory (:func:`free_bytes`, the pack's one
query in :mod:`diffcamera.runtime`; skipped where it is unknown) and raises
:class:`~diffcamera.core.dit.memory.InsufficientMemoryError` before any weight is loaded, naming the setting that
would make it fit (gradient checkpointing, fp8 base storage, batch size, resolution). ``memory_check: false`` in the
config skips it.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import torch

from ..core.dit.memory import GiB, InsufficientMemoryError, TrainingMemory, estimate_training_bytes
from .config import TrainConfig


def _folder_config(path: Optional[str], sub: str) -> Optional[dict]:
    """``config.json`` of a diffusers folder (``path/config.json`` or ``path/<sub>/config.json``), else ``None``."""
    if not path or not os.path.isdir(path):
        return None
    for f in (os.path.join(path, sub, "config.json"), os.path.join(path, "config.json")):
        if os.path.isfile(f):
            with open(f, encoding="utf-8") as fh:
                return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}
    return None


def plan(config: TrainConfig, device) -> TrainingMemory:
    """The estimated memory of one optimiser micro-step of ``config`` on ``device`` (per process)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    mcfg = config.refocus_config()
    tcfg = vcfg = None
    if config.model_kind == "flux":  # the real base's own config when it is a diffusers folder, else the shipped one
        tcfg = _folder_config(config.base_path, "transformer")
        vcfg = _folder_config(config.vae_path, "vae") or _folder_config(config.base_path, "vae")
    weight_dtype = torch.float32
    if config.model_kind != "toy" and cuda:
        weight_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    mixed = cuda and config.resolved_mixed_precision != "no"
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return estimate_training_bytes(mcfg, config.size, config.batch_size, transformer_config=tcfg, vae_config=vcfg,
                                   weight_dtype=weight_dtype, mixed_precision=mixed, device_type=device.type,
                                   storage=config.base_storage, gradient_checkpointing=config.gradient_checkpointing,
                                   processes=processes)


def free_bytes(device) -> Optional[int]:
    """Free memory of ``device`` in bytes, or ``None`` where unknown: the pack's one query,
    :func:`diffcamera.runtime.free_memory` (ComfyUI's own inside ComfyUI; ``torch.cuda.mem_get_info`` on CUDA and
    ``MemAvailable`` of ``/proc/meminfo`` for a Linux CPU outside it; capped by ``DIFFCAMERA_MEMORY_LIMIT_MB``)."""
    from .. import runtime
    return runtime.free_memory(torch.device(device))


def _alternatives(config: TrainConfig) -> List[Tuple[str, TrainConfig]]:
    """Changes that lower the memory need, in the order they cost the least quality/speed."""
    out = []
    if not config.gradient_checkpointing:
        out.append(('"gradient_checkpointing": true', config.replace(gradient_checkpointing=True)))
    cur = out[-1][1] if out else config
    if config.model_kind != "toy" and config.base_storage == "default":
        out.append(('"base_storage": "fp8_e4m3fn"', cur.replace(base_storage="fp8_e4m3fn")))
        cur = out[-1][1]
    if config.batch_size > 1:
        acc = config.grad_accum * config.batch_size
        out.append((f'"batch_size": 1 (with "grad_accum": {acc} for the same effective batch)',
                    cur.replace(batch_size=1, grad_accum=acc)))
        cur = out[-1][1]
    if config.size > 512:
        out.append(('"size": 512 (simulate a 512 px dataset)', cur.replace(size=512)))
    return out


def check_fits(config: TrainConfig, device, free: Optional[int] = None) -> Optional[TrainingMemory]:
    """Raise :class:`InsufficientMemoryError` when ``config``'s estimated need exceeds ``free`` bytes (default: the
    device's free memory, :func:`free_bytes`); returns the estimate (``None`` when the check is off or the free
    memory is unknown). The message names the setting(s) that would fit, cumulatively, and how to skip the check."""
    if not config.memory_check:
        return None
    free = free_bytes(device) if free is None else int(free)
    if free is None:
        return None
    need = plan(config, device)
    if need.total <= free:
        return need
    fix = None
    changes = []
    for label, alt in _alternatives(config):
        changes.append(label)
        if plan(alt, device).total <= free:
            fix = changes
            break
    what = f"{config.model_kind} LoRA" if config.model_kind != "toy" else "the toy model"
    msg = (f"training {what} at {config.size} px, batch {config.batch_size}, needs about {need.total / GiB:.1f} GiB "
           f"on {torch.device(device)} ({need.describe()}; an estimate) but only {free / GiB:.1f} GiB are free. ")
    if fix:
        msg += "To fit, set " + ", then ".join(fix) + " in the training config (or --set key=value). "
    else:
        msg += ("Even with " + ", ".join(changes) + " it would not fit; use a device with more memory. "
                if changes else "Use a device with more memory. ")
    msg += "Set \"memory_check\": false to try anyway."
    raise InsufficientMemoryError(msg)

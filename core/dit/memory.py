"""Precision, weight storage and offloading of the refocus model; out-of-memory advice.

* **dtype** (compute): ``"auto"`` = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on the CPU; or
  ``"bf16" | "fp16" | "fp32"``. The VAE never runs in fp16 (FLUX's VAE overflows): it uses bf16/fp32.
* **storage** ``"fp8_e4m3fn"`` / ``"fp8_e5m2"``: transformer weights kept in 8 bits and up-cast per layer at
  forward time with diffusers' layerwise casting (``enable_layerwise_casting``; norms and RoPE stay in the compute
  dtype). Halves the transformer's memory (FLUX.1: ~24 GB bf16 -> ~12 GB).
* **offload**: ``"none"`` (everything on the GPU; ComfyUI's model management loads it fully and frees other models
  first), ``"group"`` (diffusers block-level group offloading: one transformer block on the GPU at a time, weights on
  the CPU, CUDA-stream prefetch) or ``"leaf"`` (leaf-level: lowest memory, slowest).

When CUDA runs out of memory, :func:`oom_message` names the next mode to try (fp8 storage, then group, then leaf
offloading, then a smaller tile size); the node frees what we loaded before raising it.
"""
from __future__ import annotations

from typing import Optional

import torch

DTYPES = ("auto", "bf16", "fp16", "fp32")
STORAGES = ("default", "fp8_e4m3fn", "fp8_e5m2")
OFFLOAD_MODES = ("none", "group", "leaf")
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype for ``name`` on ``device`` (``"auto"``: bf16/fp16 on CUDA, fp32 elsewhere)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name != "auto":
        return _TORCH[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def apply_memory_options(model, dtype: torch.dtype, storage: str = "default", offload: str = "none",
                         device: Optional[torch.device] = None) -> None:
    """Cast and place ``model`` (a RefocusModel) for inference on ``device``.

    Order matters: cast to the compute dtype, then fp8 storage (layerwise casting hooks), then offloading hooks.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    device = torch.device(device or "cpu")
    t = model.transformer
    _cast(t, dtype)
    model.camera_encoder.to(dtype=torch.float32)
    ae = model.autoencoder
    if hasattr(ae, "vae"):
        _cast(ae.vae, torch.float32 if dtype == torch.float32 else torch.bfloat16)
    model.compute_dtype = dtype
    if storage != "default":
        # LoRA matrices are small: keep them (and norms / RoPE, diffusers' defaults) in the compute dtype
        t.enable_layerwise_casting(storage_dtype=getattr(torch, "float8_" + storage.split("_", 1)[1]),
                                   compute_dtype=dtype, skip_modules_pattern=("pos_embed", "norm", "lora_"))
    if offload == "none":
        model.to(device)
        model.onload_device = None
    else:
        kind = "block_level" if offload == "group" else "leaf_level"
        kw = dict(onload_device=device, offload_device=torch.device("cpu"), offload_type=kind,
                  use_stream=device.type == "cuda")
        if kind == "block_level":
            kw["num_blocks_per_group"] = 1
        t.enable_group_offload(**kw)
        model.camera_encoder.to(device)
        model.autoencoder.to(device)
        model.onload_device = device
    model.storage, model.offload_mode = storage, offload


def _cast(module, dtype) -> None:
    if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def next_memory_option(storage: str, offload: str) -> str:
    """Advice: which setting to try after an out-of-memory error."""
    if storage == "default":
        return "set the loader's weight storage to fp8_e4m3fn (halves the transformer's memory)"
    if offload == "none":
        return "set the loader's offload mode to 'group' (one transformer block on the GPU at a time)"
    if offload == "group":
        return "set the loader's offload mode to 'leaf' (lowest memory, slowest)"
    return "enable tiling with a smaller tile size, or use a smaller image"


def oom_message(storage: str, offload: str, where: str = "refocus") -> str:
    return (f"out of GPU memory during {where} (weight storage {storage!r}, offload {offload!r}); the models were "
            f"unloaded. To fit, {next_memory_option(storage, offload)}.")

"""Shared node-layer pieces: the pack's custom socket types and IMAGE/MASK conversions.

Custom types (``io.Custom``):
    DEPTH            :class:`diffcamera.core.values.DepthMap` (normalised disparity + its source)
    FOCUS            :class:`diffcamera.core.values.Focus`
    DEPTH_MODEL      a model handle (``ModelPatcher`` inside ComfyUI) around a Depth Anything V2 model
    DIFFCAMERA_MODEL the refocus model bundle (base DiT + VAE + LoRA + its config)
    DIFFCAMERA_DATASET a simulated training dataset (folder + manifest)
"""
from __future__ import annotations

import torch

from ..comfy_adapter import io
from ..core.conventions import comfy_to_core, core_to_comfy  # noqa: F401 - re-exported for nodes

CATEGORY = "DiffCamera"

Depth = io.Custom(io_type="DEPTH")
FocusType = io.Custom(io_type="FOCUS")
DepthModel = io.Custom(io_type="DEPTH_MODEL")
DiffCameraModel = io.Custom(io_type="DIFFCAMERA_MODEL")
DiffCameraDataset = io.Custom(io_type="DIFFCAMERA_DATASET")


def mask_to_core(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``MASK`` ``[B,H,W]`` or ``[H,W]`` -> core ``[B,1,H,W]`` float32."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    return mask.unsqueeze(1).float()


def core_to_mask(mask: torch.Tensor) -> torch.Tensor:
    """Core ``[B,1,H,W]`` -> ComfyUI ``MASK`` ``[B,H,W]`` float32 on the CPU."""
    return mask[:, 0].contiguous().float().cpu()

"""Shared node-layer pieces: the pack's custom socket types, the one-of-several depth inputs, progress, ui merging.

Custom types (``io.Custom``):
    DEPTH            :class:`diffcamera.core.values.DepthMap` (normalised disparity + its source)
    FOCUS            :class:`diffcamera.core.values.Focus`
    DEPTH_MODEL      a model handle (``ModelPatcher`` inside ComfyUI) around a Depth Anything V2 model
    DIFFCAMERA_MODEL the refocus model bundle (base DiT + VAE + LoRA + its config), or ``PhysicsOnly``
    DIFFCAMERA_DATASET a simulated training dataset (folder + manifest)

IMAGE/MASK layouts are converted by :mod:`diffcamera.core.conventions` (``comfy_to_core``, ``comfy_mask_to_core``
and back); inputs are checked by :mod:`diffcamera.nodes.validation` before ``execute`` runs.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch

from .. import runtime as rt
from ..core.conventions import comfy_mask_to_core, comfy_to_core
from ..core.values import DepthMap, Focus
from ..runtime import io

CATEGORY = "DiffCamera"

Depth = io.Custom(io_type="DEPTH")
FocusType = io.Custom(io_type="FOCUS")
DepthModel = io.Custom(io_type="DEPTH_MODEL")
DiffCameraModel = io.Custom(io_type="DIFFCAMERA_MODEL")
DiffCameraDataset = io.Custom(io_type="DIFFCAMERA_DATASET")


def one_depth_input(**inputs) -> Tuple[str, Union[DepthMap, torch.Tensor]]:
    """The one connected depth input among ``inputs`` (input name -> a DEPTH, IMAGE or MASK, ``None`` when not
    connected), as ``(name, value)``. Raises ``ValueError`` unless exactly one is connected."""
    given = [(name, value) for name, value in inputs.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"{' / '.join(inputs)}: connect exactly one depth input "
                         f"(got {', '.join(n for n, _ in given) if given else 'none'})")
    return given[0]


def frames_of(value) -> int:
    """How many images (frames) a DEPTH, FOCUS, IMAGE ``[B,H,W,C]`` or MASK ``[B,H,W]`` / ``[H,W]`` carries."""
    if isinstance(value, (DepthMap, Focus)):
        return value.batch
    return int(value.shape[0]) if value.dim() >= 3 else 1


def depth_values(value: Union[DepthMap, torch.Tensor]) -> torch.Tensor:
    """A depth input as a core map ``[F,1,H,W]``: a DEPTH's disparity, an IMAGE's mean over RGB, a MASK as it is."""
    if isinstance(value, DepthMap):
        return value.disparity.float()
    if value.dim() == 4:  # IMAGE [B,H,W,C]
        return comfy_to_core(value).mean(1, keepdim=True)
    return comfy_mask_to_core(value)


def node_progress(cls, total: int, desc: str) -> rt.Progress:
    """The host's progress bar of this node (ComfyUI's, under the node's id), as a context manager."""
    return rt.Progress(total, desc=desc, node_id=getattr(cls.hidden, "unique_id", None))


def combine_ui(*parts) -> dict:
    """Merge several ``ui.*`` outputs (e.g. a preview image and a text) into one ``ui`` dict."""
    merged: dict = {}
    for p in parts:
        if p is None:
            continue
        merged.update(p.as_dict() if hasattr(p, "as_dict") else dict(p))
    return merged

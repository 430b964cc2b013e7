"""Values that travel between nodes and core functions: a depth map that knows its convention, and a focus.

Both are plain dataclasses over CPU tensors so that ComfyUI can cache them and the CLI can build them.
Conventions (disparity range, focus coordinates) are those of :mod:`diffcamera.core.conventions`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch


@dataclass
class DepthMap:
    """Normalised disparity of a batch of images.

    Attributes:
        disparity: ``[B, 1, H, W]`` float32 in ``0..1``, near = 1, far = 0, at the image's resolution.
        source: where it came from (``"depth_anything_v2"``, ``"converted:metric"``, ``"scene"``, ...).
    """

    disparity: torch.Tensor
    source: str = "unknown"

    def __post_init__(self):
        d = self.disparity
        if d.dim() != 4 or d.shape[1] != 1:
            raise ValueError(f"DepthMap.disparity must be [B,1,H,W], got {tuple(d.shape)}")
        if not torch.isfinite(d).all():
            raise ValueError("DepthMap.disparity contains NaN or infinite values; clean the depth map first")

    @property
    def batch(self) -> int:
        return self.disparity.shape[0]

    @property
    def size(self):
        """``(H, W)`` in pixels."""
        return tuple(self.disparity.shape[-2:])


@dataclass
class Focus:
    """Where to focus, per image.

    Attributes:
        x, y: ``[B]`` normalised point coordinates (``0..1``, x right, y down) the focus was read at.
        disparity: ``[B]`` focus disparity ``d_f`` in ``0..1``.
        method: per image, how ``d_f`` was chosen (``"point"``, ``"mask"``, ``"override"``).
    """

    x: torch.Tensor
    y: torch.Tensor
    disparity: torch.Tensor
    method: List[str] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return int(self.disparity.numel())

    @classmethod
    def from_disparity(cls, value: float, batch: int = 1) -> "Focus":
        """A focus given directly as a disparity (no point): the point is left at the image centre."""
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"focus disparity must be in 0..1, got {value}")
        half = torch.full((batch,), 0.5)
        return cls(half.clone(), half.clone(), torch.full((batch,), float(value)), ["override"] * batch)


@dataclass(frozen=True)
class SimulatedDataset:
    """A dataset written by the simulator (``diffcamera.training.simulate``): what DIFFCAMERA_DATASET carries.

    Attributes:
        folder: the dataset folder (holds ``manifest.json`` and the shards).
        size: square training size in pixels. groups: number of training groups.
    """

    folder: str
    size: int
    groups: int

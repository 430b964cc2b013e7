"""ComfyUI nodes (V3 schema): thin adapters over :mod:`diffcamera.core` and :mod:`diffcamera.training`."""
from __future__ import annotations

import importlib

from ..runtime import ComfyExtension, register_model_folders

#: Modules under ``nodes/`` whose ``NODES`` lists are exposed, in menu order.
NODE_MODULES = ("depth", "focus", "video", "bokeh", "refocus", "training")


def all_nodes() -> list:
    """Every node class of the pack, in menu order."""
    out = []
    for name in NODE_MODULES:
        out.extend(importlib.import_module(f".{name}", __name__).NODES)
    return out


class DiffCameraExtension(ComfyExtension):
    """The pack's single ``ComfyExtension``."""

    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list:
        register_model_folders()
        return all_nodes()

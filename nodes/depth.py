"""Depth nodes: load Depth Anything V2, estimate disparity, and convert depth maps from other packs.

Model folders: ComfyUI's ``models/depth_anything/<name>/`` with ``config.json`` + ``model.safetensors``
(transformers format). Depth Anything V2 **Small** (``depth-anything/Depth-Anything-V2-Small-hf``) is
Apache-2.0; **Base** and **Large** are CC-BY-NC-4.0 (non-commercial use only).
"""
from __future__ import annotations

import os

import torch

from .. import comfy_adapter as ca
from ..comfy_adapter import io, ui
from ..core import depth as core_depth
from ..core.conventions import comfy_to_core, core_to_comfy
from ..core.values import DepthMap
from .common import CATEGORY, Depth, DepthModel, mask_to_core
from .validation import checked_inputs, require_memory

MODEL_FOLDER = "depth_anything"
NONE_FOUND = "(no model found: see tooltip)"
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LICENCE_TEXT = ("Depth Anything V2 Small (depth-anything/Depth-Anything-V2-Small-hf) is Apache-2.0; "
                "Base and Large are CC-BY-NC-4.0 (non-commercial use only).")


def _model_choices() -> list:
    found = ca.list_model_dirs(MODEL_FOLDER)
    return found or [NONE_FOUND]


def _image_batch(image, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected a ComfyUI IMAGE [B,H,W,C], got {shape}")
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return comfy_to_core(image)


class DepthModelLoader(io.ComfyNode):
    """Load a Depth Anything V2 folder (transformers format) as a DEPTH_MODEL."""

    @classmethod
    def define_schema(cls):
        folders = ", ".join(ca.model_folder_paths(MODEL_FOLDER)) or "models/depth_anything"
        return io.Schema(
            node_id="DiffCamera_DepthModelLoader",
            display_name="DepthModelLoader",
            category=f"{CATEGORY}/depth",
            description=("Loads a Depth Anything V2 model (transformers format: config.json + model.safetensors) "
                         f"from ComfyUI's models/depth_anything folder or a given path. {LICENCE_TEXT}"),
            inputs=[
                io.Combo.Input(id="model_name", options=_model_choices(), default=_model_choices()[0],
                               tooltip=("A sub-folder of " + folders + " holding config.json + model.safetensors. "
                                        "Download e.g. depth-anything/Depth-Anything-V2-Small-hf into "
                                        "models/depth_anything/Depth-Anything-V2-Small-hf. " + LICENCE_TEXT)),
                io.String.Input(id="path", default="", optional=True,
                                tooltip=("Optional: a model folder inside models/depth_anything (its name, or its "
                                         "full path); when set it is used instead of model_name. Folders elsewhere "
                                         "only with DIFFCAMERA_ALLOW_EXTERNAL_MODELS=1 (README: Security).")),
                io.Combo.Input(id="dtype", options=list(DTYPES), default="auto",
                               tooltip="Weight precision. auto = float16 on a GPU, float32 on the CPU."),
                io.Combo.Input(id="device", options=["auto", "cpu"], default="auto",
                               tooltip="auto = ComfyUI's GPU (the model is offloaded when others need memory); "
                                       "cpu = always run on the CPU."),
            ],
            outputs=[DepthModel.Output(display_name="depth_model")],
        )

    @classmethod
    @checked_inputs
    def execute(cls, model_name, dtype="auto", device="auto", path=""):
        path = (path or "").strip()
        if path:
            folder = ca.find_model(MODEL_FOLDER, path, "path", kind="dir")
        elif model_name == NONE_FOUND:
            raise core_depth.DepthModelError(
                "model_name: no Depth Anything model found in " + ", ".join(ca.model_folder_paths(MODEL_FOLDER))
                + ".\n" + core_depth.download_hint())
        else:
            folder = ca.find_model(MODEL_FOLDER, model_name, "model_name", kind="dir")
        load_device = torch.device("cpu") if device == "cpu" else ca.compute_device()
        torch_dtype = DTYPES.get(dtype)
        if torch_dtype is None:
            torch_dtype = torch.float16 if load_device.type == "cuda" else torch.float32
        model = core_depth.load_depth_model(folder, dtype=torch_dtype)
        offload = torch.device("cpu") if device == "cpu" else ca.offload_device()
        return io.NodeOutput(ca.wrap_model(model, load_device=load_device, offload_device_=offload))


def run_depth_model(handle, image: torch.Tensor, process_res: int, batch_size: int, node_id=None) -> torch.Tensor:
    """Load ``handle`` through ComfyUI's model management, estimate disparity ``[B,1,H,W]``, offload.

    Inside ComfyUI the model stays where model management put it (it is freed when another model
    needs the memory); outside ComfyUI it goes back to its offload device right after use.
    """
    ca.load_models([handle])
    model = handle.model
    target = torch.device(handle.load_device)
    if any(p.device != target for p in model.parameters()):  # partial (low-VRAM) loads: run it whole
        model.to(target)
    progress = ca.Progress(image.shape[0], desc="depth", node_id=node_id)
    try:
        try:
            return core_depth.estimate_disparity(model, image, process_res, batch_size, callback=progress)
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            ca.free_memory_for([handle])
            ca.load_models([handle])
            return core_depth.estimate_disparity(model, image, process_res, 1, callback=progress)
    finally:
        progress.close()
        ca.offload_models([handle])


class DepthEstimate(io.ComfyNode):
    """Estimate normalised disparity (near = 1) with Depth Anything V2."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_DepthEstimate",
            display_name="DepthEstimate",
            category=f"{CATEGORY}/depth",
            description=("Runs Depth Anything V2 on an image batch and outputs normalised disparity (near = 1, "
                         "far = 0, per image) as DEPTH, plus a grey IMAGE preview (near = white) that ControlNet "
                         "depth nodes accept."),
            inputs=[
                DepthModel.Input(id="depth_model", tooltip="From DepthModelLoader."),
                io.Image.Input(id="image", tooltip="The images to estimate depth for (any size, any batch)."),
                io.Int.Input(id="process_res", default=core_depth.DEFAULT_PROCESS_RES, min=14, max=4102, step=14,
                             tooltip="Short side of the network input in pixels (a multiple of 14; aspect ratio "
                                     "kept). 518 is the model's training size; larger = finer edges, slower."),
                io.Int.Input(id="batch_size", default=4, min=1, max=64,
                             tooltip="Images per forward pass; lower it if you run out of memory."),
            ],
            outputs=[Depth.Output(display_name="depth"), io.Image.Output(display_name="depth_image")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked_inputs
    def execute(cls, depth_model, image, process_res=core_depth.DEFAULT_PROCESS_RES, batch_size=4):
        img = _image_batch(image, "image")
        chunk = min(int(batch_size), img.shape[0])
        need = core_depth.estimate_depth_bytes(depth_model.model, img.shape[0], chunk, img.shape[-2], img.shape[-1],
                                               int(process_res))
        require_memory(need, depth_model.load_device, f"DepthEstimate ({img.shape[0]} image(s) "
                       f"{img.shape[-1]}x{img.shape[-2]}, process_res {process_res}, batch_size {batch_size})",
                       "lower process_res or batch_size, or use smaller images")
        disparity = run_depth_model(depth_model, img, int(process_res), int(batch_size),
                                    node_id=getattr(cls.hidden, "unique_id", None))
        name = os.path.basename(getattr(depth_model.model, "diffcamera_info", {}).get("path", "")) or "model"
        depth = DepthMap(disparity, source=f"depth_anything_v2:{name}")
        preview = core_to_comfy(core_depth.disparity_preview(disparity))
        return io.NodeOutput(depth, preview, ui=ui.PreviewImage(image=preview, cls=cls))


class DepthFromImage(io.ComfyNode):
    """Convert a depth map from any pack (IMAGE or MASK) into DiffCamera's DEPTH."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_DepthFromImage",
            display_name="DepthFromImage",
            category=f"{CATEGORY}/depth",
            description=("Turns a depth map from another node (Depth Anything / MiDaS / Marigold / ZoeDepth "
                         "previews, ComfyUI's own depth nodes, a loaded 16-bit PNG) into DEPTH: normalised "
                         "disparity, near = 1. Connect exactly one of depth_image or depth_mask."),
            inputs=[
                io.Combo.Input(id="convention", options=list(core_depth.CONVENTIONS),
                               default=core_depth.CONVENTIONS[0],
                               tooltip=("How the map encodes distance. 'disparity (near bright)': most depth "
                                        "preprocessors and ControlNet depth images (used as is). 'depth (near dark)': "
                                        "a depth image where far is bright (inverted). 'metric depth': distances "
                                        "in metres or any unit (1/z is taken; inf = sky).")),
                io.Image.Input(id="depth_image", optional=True,
                               tooltip="A depth map as IMAGE (grey; colour images are averaged over RGB)."),
                io.Mask.Input(id="depth_mask", optional=True, tooltip="A depth map as MASK."),
                io.Image.Input(id="image", optional=True,
                               tooltip="The image the depth belongs to: the depth is resized to its size."),
                io.Boolean.Input(id="normalise", default=True,
                                 tooltip="Stretch each map to the full 0..1 range (recommended; always on for "
                                         "metric depth unless near and far are set)."),
                io.Float.Input(id="near", default=0.0, min=0.0, max=1e6, step=0.01,
                               tooltip="Metric depth only: distance mapped to disparity 1 (0 = the map's nearest)."),
                io.Float.Input(id="far", default=0.0, min=0.0, max=1e6, step=0.01,
                               tooltip="Metric depth only: distance mapped to disparity 0 (0 = the map's farthest)."),
            ],
            outputs=[Depth.Output(display_name="depth"), io.Image.Output(display_name="depth_image")],
        )

    @classmethod
    @checked_inputs
    def execute(cls, convention=core_depth.CONVENTIONS[0], depth_image=None, depth_mask=None, image=None,
                normalise=True, near=0.0, far=0.0):
        if (depth_image is None) == (depth_mask is None):
            raise ValueError("depth_image / depth_mask: connect exactly one of them (the depth map to convert)")
        if depth_image is not None:
            values = _image_batch(depth_image, "depth_image").mean(1, keepdim=True)
            name = "depth_image"
        else:
            if not isinstance(depth_mask, torch.Tensor) or depth_mask.dim() not in (2, 3):
                raise ValueError("depth_mask: expected a ComfyUI MASK [B,H,W]")
            values = mask_to_core(depth_mask)
            name = "depth_mask"
        size = None
        if image is not None:
            ref = _image_batch(image, "image")
            size = tuple(ref.shape[-2:])
            if values.shape[0] not in (1, ref.shape[0]):
                raise ValueError(f"{name}: {values.shape[0]} depth maps for {ref.shape[0]} images; give one or "
                                 f"one per image")
        use_range = convention == "metric depth" and near > 0 and far > 0
        if convention == "metric depth" and (near > 0) != (far > 0):
            raise ValueError("near / far: set both (metric depth range) or leave both at 0")
        disparity = core_depth.convert_depth_map(values, convention, normalise=bool(normalise), size=size,
                                                 near=near if use_range else None, far=far if use_range else None,
                                                 name=name)
        tag = {"disparity (near bright)": "disparity", "depth (near dark)": "inverted",
               "metric depth": "metric"}[convention]
        depth = DepthMap(disparity.cpu(), source=f"converted:{tag}")
        return io.NodeOutput(depth, core_to_comfy(core_depth.disparity_preview(disparity)))


NODES = [DepthModelLoader, DepthEstimate, DepthFromImage]

"""Depth nodes: load Depth Anything V2, estimate disparity, and convert depth maps from other packs.

Model folders: ComfyUI's ``models/depth_anything/<name>/`` with ``config.json`` + ``model.safetensors``
(transformers format). Depth Anything V2 **Small** (``depth-anything/Depth-Anything-V2-Small-hf``) is
Apache-2.0; **Base** and **Large** are CC-BY-NC-4.0 (non-commercial use only).
"""
from __future__ import annotations

import os

from .. import runtime as rt
from ..core import depth as core_depth
from ..core.checks import check_batch
from ..core.conventions import comfy_to_core, core_to_comfy
from ..core.values import DepthMap
from ..runtime import io, ui
from .common import CATEGORY, Depth, DepthModel, depth_values, node_progress, one_depth_input
from .validation import checked_inputs, require_memory

MODEL_FOLDER = "depth_anything"
NONE_FOUND = "(no model found: see tooltip)"
LICENCE_TEXT = ("Depth Anything V2 Small (depth-anything/Depth-Anything-V2-Small-hf) is Apache-2.0; "
                "Base and Large are CC-BY-NC-4.0 (non-commercial use only).")
#: ``DepthMap.source`` tag of each convention DepthFromImage converts from.
SOURCE_TAGS = {"disparity (near bright)": "disparity", "depth (near dark)": "inverted", "metric depth": "metric"}
assert set(SOURCE_TAGS) == set(core_depth.CONVENTIONS)


def _model_choices() -> list:
    found = rt.list_model_dirs(MODEL_FOLDER)
    return found or [NONE_FOUND]


class DepthModelLoader(io.ComfyNode):
    """Load a Depth Anything V2 folder (transformers format) as a DEPTH_MODEL."""

    @classmethod
    def define_schema(cls):
        folders = ", ".join(rt.model_folder_paths(MODEL_FOLDER)) or "models/depth_anything"
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
                io.Combo.Input(id="dtype", options=list(core_depth.DTYPES), default="auto",
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
        if not path and model_name == NONE_FOUND:
            raise core_depth.DepthModelError(
                "model_name: no Depth Anything model found in " + ", ".join(rt.model_folder_paths(MODEL_FOLDER))
                + ".\n" + core_depth.download_hint())
        folder = rt.find_model(MODEL_FOLDER, path or model_name, "path" if path else "model_name", kind="dir")
        return io.NodeOutput(rt.load_depth_model(folder, dtype=dtype, device=device))


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
        img = comfy_to_core(image)
        b, h, w = img.shape[0], img.shape[-2], img.shape[-1]
        need = core_depth.estimate_depth_bytes(depth_model.model, b, min(int(batch_size), b), h, w, int(process_res))
        require_memory(need, depth_model.load_device, f"DepthEstimate ({b} image(s) {w}x{h}, process_res "
                       f"{process_res}, batch_size {batch_size})", "lower process_res or batch_size, or use smaller "
                       "images")
        with node_progress(cls, b, "depth") as progress:
            disparity = core_depth.estimate_disparity_placed(rt.ModelPlacement([depth_model]), depth_model.model, img,
                                                             int(process_res), int(batch_size), callback=progress)
        name = os.path.basename(getattr(depth_model.model, "diffcamera_info", {}).get("path", "")) or "model"
        preview = core_to_comfy(core_depth.disparity_preview(disparity))
        return io.NodeOutput(DepthMap(disparity, source=f"depth_anything_v2:{name}"), preview,
                             ui=ui.PreviewImage(image=preview, cls=cls))


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
        name, given = one_depth_input(depth_image=depth_image, depth_mask=depth_mask)
        values = depth_values(given)
        size = None
        if image is not None:
            ref = comfy_to_core(image)
            size = tuple(ref.shape[-2:])
            check_batch(values.shape[0], ref.shape[0], name, "depth maps")
        disparity = core_depth.convert_depth_map(values, convention, normalise=bool(normalise), size=size,
                                                 near=near, far=far, name=name)
        depth = DepthMap(disparity.cpu(), source=f"converted:{SOURCE_TAGS[convention]}")
        return io.NodeOutput(depth, core_to_comfy(core_depth.disparity_preview(disparity)))


NODES = [DepthModelLoader, DepthEstimate, DepthFromImage]

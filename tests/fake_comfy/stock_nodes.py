"""Fakes of the stock ComfyUI nodes our example workflows use: ``LoadImage``, ``PreviewImage``, ``SaveImage``
(real ones: ComfyUI's ``nodes.py``) and ``SaveAnimatedWEBP`` (``comfy_extras/nodes_images.py``). Same node ids, input names, types and outputs, same
behaviour for what the workflows need: LoadImage reads an RGB file from the input folder into an IMAGE
``[1,H,W,3]`` 0..1 plus a MASK (``1 - alpha``, or a 64×64 zero mask without alpha); SaveImage writes
8-bit PNGs ``<prefix>_<counter:05>_.png`` into the output folder; PreviewImage into the temp folder.
Both answer ``ui = {"images": [{"filename", "subfolder", "type"}]}`` as the real ones do. SaveAnimatedWEBP writes
the whole batch as one animated WEBP ``<prefix>_<counter:05>_.webp`` (frame duration ``1000/fps`` ms, lossless or
at ``quality``) and answers ``{"images": [...], "animated": (True,)}``.

Written as V3 classes of the fake API so ``tests/fake_executor.run_prompt`` runs them beside our nodes
(the real LoadImage is a V1 class whose ``image`` input is a plain list combo; the API-format value is
the same). Tier c runs the same workflows against the real nodes.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

import folder_paths
from comfy_api.latest import io


def _input_files():
    root = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f))
                  and os.path.splitext(f)[1].lower() in {".png", ".jpg", ".jpeg", ".webp"})


class LoadImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LoadImage", category="image",
                         inputs=[io.Combo.Input(id="image", options=_input_files())],
                         outputs=[io.Image.Output(), io.Mask.Output()])

    @classmethod
    def execute(cls, image):
        img = Image.open(os.path.join(folder_paths.get_input_directory(), image))
        rgb = torch.from_numpy(np.array(img.convert("RGB")).astype(np.float32) / 255.0)[None]
        if "A" in img.getbands():
            mask = 1.0 - torch.from_numpy(np.array(img.getchannel("A")).astype(np.float32) / 255.0)
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return io.NodeOutput(rgb, mask.unsqueeze(0))


def _save_path(root, prefix):
    """Like ``folder_paths.get_save_image_path``: ``a/b`` -> ``(folder root/a, "b", subfolder "a", next counter)``."""
    subfolder, prefix = os.path.split(os.path.normpath(prefix))
    folder = os.path.join(root, subfolder)
    if os.path.commonpath((os.path.abspath(root), os.path.abspath(folder))) != os.path.abspath(root):
        raise ValueError("Saving image outside the output folder is not allowed.")
    os.makedirs(folder, exist_ok=True)
    counter = 1 + sum(1 for f in os.listdir(folder) if f.startswith(prefix + "_"))
    return folder, prefix, subfolder, counter


def _save(images, root, prefix, kind):
    """Save PNGs ``b_00001_.png``... as SaveImage/PreviewImage do (:func:`_save_path`)."""
    folder, prefix, subfolder, counter = _save_path(root, prefix)
    results = []
    for i, image in enumerate(images):
        arr = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
        name = f"{prefix}_{counter + i:05}_.png"
        Image.fromarray(arr).save(os.path.join(folder, name))
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
    return results


class SaveImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SaveImage", category="image", is_output_node=True,
                         inputs=[io.Image.Input(id="images", tooltip="The images to save."),
                                 io.String.Input(id="filename_prefix", default="ComfyUI")],
                         outputs=[])

    @classmethod
    def execute(cls, images, filename_prefix="ComfyUI"):
        return io.NodeOutput(ui={"images": _save(images, folder_paths.get_output_directory(), filename_prefix,
                                                 "output")})


class PreviewImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="PreviewImage", category="image", is_output_node=True,
                         inputs=[io.Image.Input(id="images", tooltip="The images to preview.")], outputs=[])

    @classmethod
    def execute(cls, images):
        return io.NodeOutput(ui={"images": _save(images, folder_paths.get_temp_directory(), "ComfyUI_temp",
                                                 "temp")})


WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


class SaveAnimatedWEBP(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SaveAnimatedWEBP", category="image/animation", is_output_node=True,
                         inputs=[io.Image.Input(id="images"),
                                 io.String.Input(id="filename_prefix", default="ComfyUI"),
                                 io.Float.Input(id="fps", default=6.0, min=0.01, max=1000.0, step=0.01),
                                 io.Boolean.Input(id="lossless", default=True),
                                 io.Int.Input(id="quality", default=80, min=0, max=100),
                                 io.Combo.Input(id="method", options=list(WEBP_METHODS))],
                         outputs=[])

    @classmethod
    def execute(cls, images, filename_prefix="ComfyUI", fps=6.0, lossless=True, quality=80, method="default"):
        folder, prefix, subfolder, counter = _save_path(folder_paths.get_output_directory(), filename_prefix)
        frames = [Image.fromarray(np.clip(255.0 * im.cpu().numpy(), 0, 255).astype(np.uint8)) for im in images]
        name = f"{prefix}_{counter:05}_.webp"
        frames[0].save(os.path.join(folder, name), save_all=True, duration=int(1000.0 / fps),
                       append_images=frames[1:], lossless=lossless, quality=quality, method=WEBP_METHODS[method])
        return io.NodeOutput(ui={"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                                 "animated": (len(frames) != 1,)})


NODE_CLASS_MAPPINGS = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage,
                       "SaveAnimatedWEBP": SaveAnimatedWEBP}

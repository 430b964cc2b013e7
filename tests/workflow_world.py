"""The files the example workflows expect, made small and random for tests (tiers b and c).

The API workflows in ``tests/workflows/`` are the same graphs as the UI workflows users open from
``workflows/``, so they name the files a user would have: an input image and its depth map in ComfyUI's
``input/`` folder, a Depth Anything V2 folder in ``models/depth_anything/``, and so on. :func:`build`
lays out exactly those names under a base folder, each holding a tiny stand-in (a procedural scene at
96×64, a randomly initialised tiny Depth Anything V2), so a workflow runs in seconds on a CPU through
the real loading code. Tier b points the fake ``folder_paths`` at the base folder; tier c names its
folders in an extra-model-paths yaml for a real ComfyUI.
"""
from __future__ import annotations

import os

#: Input images the workflows load with ``LoadImage`` (ComfyUI's ``input/`` folder).
SCENE_IMAGE = "diffcamera_scene.png"
SCENE_DEPTH = "diffcamera_scene_depth.png"
#: Depth Anything V2 Small in transformers format (Apache-2.0), as users put it in models/depth_anything/.
DEPTH_MODEL_DIR = "Depth-Anything-V2-Small-hf"
SCENE_SIZE = (64, 96)  # H, W: small, and not square, so a transposed axis fails
MODEL_FOLDERS = ("depth_anything", "diffcamera", "loras", "diffusion_models", "vae", "text_encoders")


def _save_png(tensor, path):
    """``tensor`` [3,H,W] or [1,H,W] in 0..1 -> 8-bit PNG (RGB or grayscale)."""
    import numpy as np
    from PIL import Image

    arr = (tensor.clamp(0, 1) * 255.0).round().to(dtype=__import__("torch").uint8).permute(1, 2, 0).cpu().numpy()
    if arr.shape[2] == 1:
        Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), mode="L").save(path)
    else:
        Image.fromarray(np.ascontiguousarray(arr), mode="RGB").save(path)


def build(base: str) -> dict:
    """Create ``base/{input,output,temp,user,models/<folder>}`` and fill them. Returns the paths used."""
    import torch

    for sub in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    models = os.path.join(base, "models")
    for name in MODEL_FOLDERS:
        os.makedirs(os.path.join(models, name), exist_ok=True)

    from diffcamera.evaluation.scenes import make_scene

    scene = make_scene(seed=7, size=SCENE_SIZE, kind="layers")
    _save_png(scene.image[0], os.path.join(base, "input", SCENE_IMAGE))
    _save_png(scene.disparity[0], os.path.join(base, "input", SCENE_DEPTH))

    from tiny_depth import save_tiny_depth_anything

    with torch.random.fork_rng(devices=[]):
        save_tiny_depth_anything(os.path.join(models, "depth_anything", DEPTH_MODEL_DIR), seed=0)
    return {"base": base, "models": models, "input": os.path.join(base, "input"),
            "image": scene.image, "disparity": scene.disparity}


def toy_bundle_present() -> bool:
    """Whether the pack ships its trained toy refocus model (``assets/toy_refocus/model.safetensors``)."""
    from diffcamera.core.dit import loading

    try:
        loading.toy_bundle_file()
        return True
    except FileNotFoundError:
        return False


def save_random_toy(folder: str) -> str:
    """A randomly initialised toy refocus model saved like the bundled one (``folder/model.safetensors``):
    a stand-in for tier b while the trained bundle is not in the repository."""
    import torch

    from diffcamera.core.dit.model import save_refocus_model
    from diffcamera.core.dit.model import build_toy_model

    with torch.random.fork_rng(devices=[]):
        model = build_toy_model(seed=0)
    return save_refocus_model(model, os.path.join(folder, "model.safetensors"))

"""``diffcamera depth``: estimate normalised disparity (near = white) for an image with Depth Anything V2.

The model is a local folder in transformers format (config.json + model.safetensors), e.g.
``depth-anything/Depth-Anything-V2-Small-hf`` (Apache-2.0; Base and Large are CC-BY-NC-4.0, non-commercial),
given as a path or as a name inside the ``depth_anything`` model folder. Nothing is downloaded.
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("depth", help="estimate a depth (disparity) PNG with Depth Anything V2",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    p.add_argument("--model", required=True,
                   help="Depth Anything V2 folder (config.json + model.safetensors), or its name in the "
                        "depth_anything model folder")
    p.add_argument("-o", "--out", required=True, help="output PNG: grey disparity, near = white")
    p.add_argument("--process-res", type=int, default=518,
                   help="short side of the network input, a multiple of 14 (default: %(default)s)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ... (default: %(default)s)")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="weight precision; auto = float16 on CUDA, else float32 (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def run(args) -> int:
    import os

    import numpy as np
    import torch
    from PIL import Image

    from .. import comfy_adapter as ca
    from ..core import depth as core_depth

    if not os.path.isfile(args.image):
        raise FileNotFoundError(f"image {args.image!r} not found")
    if os.path.exists(args.out) and not args.force:
        raise ValueError(f"--out {args.out} exists; pass --force to overwrite it or choose another name")
    folder = args.model
    if not os.path.isdir(folder):  # a name in the depth_anything model folder, else load_depth_model says what is wrong
        try:
            folder = ca.find_model("depth_anything", args.model, "--model", kind="dir")
        except ValueError:
            folder = args.model
    device = ca.compute_device() if args.device == "auto" else torch.device(args.device)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = core_depth.load_depth_model(folder, dtype=dtype)
    handle = ca.PlainModelHandle(model, device, torch.device("cpu"))

    with Image.open(args.image) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    handle.load()
    progress = ca.Progress(1, desc="depth")
    try:
        disparity = core_depth.estimate_disparity(model, image, args.process_res, 1, callback=progress)
    finally:
        progress.close()
        handle.offload()
    d = disparity[0, 0].clamp(0, 1).numpy()
    if args.bits == 16:
        out = Image.fromarray(np.round(d * 65535).astype(np.uint16))
    else:
        out = Image.fromarray(np.round(d * 255).astype(np.uint8))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    out.save(args.out)
    print(f"wrote {args.out} ({d.shape[1]}x{d.shape[0]}, {args.bits}-bit, near = white)")
    return 0

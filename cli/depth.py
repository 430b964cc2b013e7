"""``diffcamera depth``: estimate normalised disparity (near = white) for an image with Depth Anything V2.

The model is a local folder in transformers format (config.json + model.safetensors), e.g.
``depth-anything/Depth-Anything-V2-Small-hf`` (Apache-2.0; Base and Large are CC-BY-NC-4.0, non-commercial),
given as a path or as a name inside the ``depth_anything`` model folder. Nothing is downloaded.
"""
from __future__ import annotations

import argparse

from .args import check_outputs, require_file

#: Largest ``--process-res`` (the DepthFromImage node's bound).
MAX_PROCESS_RES = 4102


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

    from .. import runtime as rt
    from ..core import depth as core_depth
    from ..core.files import read_image, write_image

    require_file(args.image, "image")
    check_outputs([(args.out, "--out")], args.force, [(args.image, "image")], bits=args.bits)
    if not 14 <= args.process_res <= MAX_PROCESS_RES:
        raise ValueError(f"--process-res must be 14..{MAX_PROCESS_RES} px (rounded to a multiple of 14), "
                         f"got {args.process_res}")
    image = read_image(args.image)  # an unreadable image is reported before the model loads
    folder = args.model
    if not os.path.isdir(folder):  # a name in the depth_anything model folder, else load_depth_model says what is wrong
        try:
            folder = rt.find_model("depth_anything", args.model, "--model", kind="dir")
        except ValueError:
            folder = args.model
    handle = rt.load_depth_model(folder, dtype=args.dtype, device=args.device)
    with rt.Progress(1, desc="depth") as progress:
        disparity = core_depth.estimate_disparity_placed(rt.ModelPlacement([handle]), handle.model, image,
                                                         args.process_res, 1, callback=progress)
    write_image(disparity, args.out, bits=args.bits)
    print(f"wrote {args.out} ({disparity.shape[-1]}x{disparity.shape[-2]}, {args.bits}-bit, near = white)")
    return 0

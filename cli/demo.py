"""``diffcamera demo``: the whole chain on a built-in scene, no download.

scene (procedural, exact depth) → depth (exact, or Depth Anything V2 with ``--depth-model``) → focus
(a point) → the photo (thin-lens render focused on the far plane) → DiffCameraRefocus asked to focus on the
near plane (input blur estimated, physics refocus, the bundled toy DiT refining it) → a contact sheet PNG
(input | physics | DiT | thin-lens truth | all-in-focus estimate | depth) and a table with the baselines.
"""
from __future__ import annotations

import argparse

from .args import NAMED_MODELS, check_number, check_outputs, model_name

#: ``--size`` bounds: the scene generator's least size, and a size the demo still runs in about a minute.
MIN_SIZE, MAX_SIZE = 8, 2048


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run scene → depth → focus → bokeh → refocus on a built-in scene",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default=None,
                   help="contact sheet PNG to write (default: diffcamera_demo.png, or diffcamera_demo_N.png if taken)")
    p.add_argument("--seed", type=int, default=7, help="scene and sampler seed (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="scene size in pixels; the toy model was trained at 64 (default: %(default)s)")
    p.add_argument("--level", type=float, default=None,
                   help="bokeh level, px per 1024 px of long side (default: the toy model's training level)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own default)")
    p.add_argument("--model", default=None,
                   help="refocus model: 'toy' (default, bundled), 'physics' (no model), or a model file / folder")
    p.add_argument("--denoise", type=float, default=0.5,
                   help="how far the model may move from the physics estimate, 0 < denoise <= 1 (default: %(default)s)")
    p.add_argument("--depth-model", default=None,
                   help="a Depth Anything V2 folder (transformers format); default: the scene's exact depth")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def run(args) -> int:
    import os

    import torch

    from ..core.conventions import MAX_LEVEL
    from ..evaluation import demo as demo_core
    from ..runtime import Progress

    if args.out is None:
        args.out, n = "diffcamera_demo.png", 1
        while os.path.exists(args.out):
            args.out, n = f"diffcamera_demo_{n}.png", n + 1
    check_outputs([(args.out, "--out")], args.force)
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise ValueError(f"--size must be {MIN_SIZE}..{MAX_SIZE} px, got {args.size}")
    check_number(args.level, "--level", 0.0, MAX_LEVEL)
    check_number(args.denoise, "--denoise", 0.0, 1.0, lo_open=True)
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    wanted = {"--model": "a DiffCamera model (.safetensors file or folder), or 'toy' / 'physics'",
              "--depth-model": "a Depth Anything V2 folder (config.json + model.safetensors, e.g. "
                               "depth-anything/Depth-Anything-V2-Small-hf)"}
    if args.model:
        args.model = model_name(args.model)
    for path, flag in ((args.model, "--model"), (args.depth_model, "--depth-model")):
        if path and path not in NAMED_MODELS and not os.path.exists(path):
            raise FileNotFoundError(f"{flag}: {path!r} does not exist (nothing is downloaded); put {wanted[flag]} "
                                    f"there, or give its path")
    torch.manual_seed(args.seed)
    with Progress(1, desc="refocus") as progress:
        result = demo_core.run_demo(seed=args.seed, size=args.size, level=args.level, steps=args.steps,
                                    model_path=args.model, depth_model_path=args.depth_model, denoise=args.denoise,
                                    callback=progress)
    demo_core.save_contact_sheet(result, args.out)
    print(demo_core.summary_table(result))
    print(f"wrote {args.out}")
    return 0

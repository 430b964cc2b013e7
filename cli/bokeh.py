"""``diffcamera bokeh``: physically based lens blur of all-in-focus images from their depth maps.

    diffcamera bokeh photo.png --depth photo_depth.png --focus 0.4,0.6 --level 30 -o blurred.png
    diffcamera bokeh a.png b.png --depth a_d.png b_d.png --focus-disparity 0.8 --level 20 -o out_dir/

The depth map is a grey PNG (8 or 16 bit); ``--convention`` says how it encodes distance (default:
disparity, near = white, as ``diffcamera depth`` writes it). It is resized to the image when sizes differ.
``--focus x,y`` focuses on the surface under a normalised point (x right, y down, 0..1); ``--level`` is
the blur radius in px per 1024 px of the long side for a disparity difference of 1.
"""
from __future__ import annotations

import argparse

CONVENTIONS = {"disparity": "disparity (near bright)", "depth": "depth (near dark)", "metric": "metric depth"}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bokeh", help="render lens blur from an image and its depth map",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="all-in-focus input image(s)")
    p.add_argument("--depth", nargs="+", required=True, metavar="D",
                   help="depth map PNG(s): one for all images or one per image")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default="disparity",
                   help="disparity = near bright; depth = near dark; metric = distances (default: %(default)s)")
    focus = p.add_mutually_exclusive_group()
    focus.add_argument("--focus", default="0.5,0.5", metavar="X,Y",
                       help="focus point, normalised x,y in 0..1 (default: %(default)s)")
    focus.add_argument("--focus-disparity", type=float, default=None, help="focus disparity 0..1 instead of a point")
    p.add_argument("--level", type=float, default=20.0,
                   help="bokeh level: blur radius px per 1024 px of long side at |d - d_f| = 1 (default: %(default)s)")
    p.add_argument("--mode", choices=("layered", "classical"), default="layered",
                   help="layered = occlusion-aware (default); classical = BokehMe's scatter")
    p.add_argument("--gamma", type=float, default=4.0, help="classical mode highlight exponent (default: 4)")
    p.add_argument("--blades", type=int, default=0, help="0 = circular aperture, 3..12 blades")
    p.add_argument("--rotation", type=float, default=0.0, help="blade rotation, degrees")
    p.add_argument("--curvature", type=float, default=0.0, help="blade curvature 0 (straight) .. 1 (round)")
    p.add_argument("--highlight-gain", type=float, default=0.0, help="highlight boost gain (0 = off)")
    p.add_argument("--highlight-threshold", type=float, default=0.9, help="highlight threshold, linear luminance")
    p.add_argument("--catseye", type=float, default=0.0, help="cat's-eye strength 0..1 (0 = off)")
    p.add_argument("--chromatic-aberration", type=float, default=0.0, help="lateral CA, e.g. 0.003 (0 = off)")
    p.add_argument("--focus-range", type=float, default=0.0, help="disparity band kept sharp (0 = off)")
    p.add_argument("--coc", default=None, help="also write the CoC map PNG (0.5 grey = sharp) here (file or folder)")
    p.add_argument("-o", "--out", required=True, help="output PNG (one image) or folder (several)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def _load_rgb(path):
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)


def _load_grey(path):
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float32) / 65535.0
        elif im.mode == "F":
            arr = np.asarray(im, dtype=np.float32)
        else:
            arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None, None]


def _save(tensor, path):
    import numpy as np
    from PIL import Image
    arr = tensor.clamp(0, 1).mul(255).round().byte().cpu().numpy()
    img = Image.fromarray(arr.transpose(1, 2, 0) if arr.shape[0] == 3 else arr[0])  # [C, H, W] in
    img.save(path)


def _targets(images, out, suffix, force):
    import os
    if len(images) == 1 and not out.endswith(os.sep) and not os.path.isdir(out):
        paths = [out]
    else:
        os.makedirs(out, exist_ok=True)
        paths = [os.path.join(out, os.path.splitext(os.path.basename(p))[0] + suffix + ".png") for p in images]
    for p in paths:
        if os.path.exists(p) and not force:
            raise ValueError(f"{p} exists; pass --force to overwrite it or choose another --out")
    return paths


def run(args) -> int:
    import math
    import os

    import torch

    from .. import comfy_adapter as ca
    from ..core import depth as core_depth
    from ..core import focus as core_focus
    from ..core.bokeh import render_bokeh
    from ..core.conventions import level_to_K

    for p in list(args.images) + list(args.depth):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p!r} not found")
    if len(args.depth) not in (1, len(args.images)):
        raise ValueError(f"--depth: {len(args.depth)} depth maps for {len(args.images)} images; give one or one each")
    outs = _targets(args.images, args.out, "_bokeh", args.force)
    cocs = _targets(args.images, args.coc, "_coc", args.force) if args.coc else None
    point = None
    if args.focus_disparity is None:
        try:
            x, y = (float(v) for v in args.focus.split(","))
        except ValueError:
            raise ValueError(f"--focus: expected x,y (normalised 0..1), got {args.focus!r}") from None
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"--focus: x and y must be in 0..1, got {args.focus!r}")
        point = (x, y)
    elif not 0 <= args.focus_disparity <= 1:
        raise ValueError(f"--focus-disparity must be in 0..1, got {args.focus_disparity}")
    if not (math.isfinite(args.level) and args.level >= 0):
        raise ValueError(f"--level must be >= 0, got {args.level}")
    device = ca.compute_device() if args.device == "auto" else torch.device(args.device)
    options = dict(mode=args.mode, gamma=args.gamma, blades=args.blades, rotation=math.radians(args.rotation),
                   curvature=args.curvature, highlight_gain=args.highlight_gain,
                   highlight_threshold=args.highlight_threshold, catseye=args.catseye,
                   chromatic_aberration=args.chromatic_aberration, focus_range=args.focus_range)
    progress = ca.Progress(len(args.images), desc="bokeh")
    try:
        for i, path in enumerate(args.images):
            image = _load_rgb(path)
            h, w = image.shape[-2:]
            raw = _load_grey(args.depth[i if len(args.depth) > 1 else 0])
            disp = core_depth.convert_depth_map(raw, CONVENTIONS[args.convention], normalise=True, size=(h, w),
                                                name="--depth")
            if point is not None:
                d_f = float(core_focus.focus_from_point(disp, point[0], point[1]).disparity[0])
            else:
                d_f = args.focus_disparity
            K = level_to_K(args.level, h, w)
            out, coc = render_bokeh(image.to(device), disp.to(device), d_f, K, return_coc=True, **options)
            _save(out[0], outs[i])
            if cocs:
                _save((0.5 + coc[0] / (2 * K)).clamp(0, 1) if K > 0 else torch.full_like(coc[0], 0.5), cocs[i])
            progress(i + 1, len(args.images))
    finally:
        progress.close()
    for p in outs:
        print(f"wrote {p}")
    return 0

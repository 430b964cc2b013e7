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

from .args import parse_point, require_file

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


def _targets(images, out, suffix):
    """The output file of each image: ``out`` itself for one image (unless it is or ends like a folder), else
    ``out/NAME<suffix>.png``. Nothing is created here."""
    import os
    if len(images) == 1 and not out.endswith(("/", os.sep)) and not os.path.isdir(out):
        return [out]
    return [os.path.join(out, os.path.splitext(os.path.basename(p))[0] + suffix + ".png") for p in images]


def _check_targets(images, depths, outs, cocs, force):
    """Every output before any work: a new image file (or ``--force``), never an input, never one name twice."""
    from .args import check_outputs
    inputs = [(p, "image") for p in images] + [(p, "--depth") for p in depths]
    for flag, paths in (("--out", outs), ("--coc", cocs or [])):
        for i, p in enumerate(paths):
            for j in range(i):
                if paths[j] == p:
                    raise ValueError(f"{flag}: images {images[j]} and {images[i]} would both be written to {p}; "
                                     f"rename one, or run them separately")
    pairs = [(p, "--out") for p in outs] + [(p, "--coc") for p in cocs or []]
    check_outputs(pairs, force, inputs)


def run(args) -> int:
    import math

    from .. import runtime as rt
    from ..core import focus as core_focus
    from ..core.bokeh import coc_to_mask
    from ..core.checks import check_batch, check_blur_strength
    from ..core.conventions import level_to_K
    from ..core.files import read_disparity, read_image, write_image
    from ..core.video import render_frames
    from .args import check_number

    for i, p in enumerate(list(args.images) + list(args.depth)):
        require_file(p, "image" if i < len(args.images) else "--depth")
    check_batch(len(args.depth), len(args.images), "--depth", "depth maps")
    outs = _targets(args.images, args.out, "_bokeh")
    cocs = _targets(args.images, args.coc, "_coc") if args.coc else None
    _check_targets(args.images, args.depth, outs, cocs, args.force)
    point = None if args.focus_disparity is not None else parse_point(args.focus, "--focus")
    if point is None:
        check_number(args.focus_disparity, "--focus-disparity", 0.0, 1.0)
    check_number(args.level, "--level", 0.0)

    def load(i):
        path = args.images[i]
        image = read_image(path)
        h, w = image.shape[-2:]
        disp = read_disparity(args.depth[i if len(args.depth) > 1 else 0], CONVENTIONS[args.convention],
                              size=(h, w), name="--depth")
        K = level_to_K(args.level, h, w)
        check_blur_strength(K, 1, h, w, "--level")
        return image, disp, K

    for i in range(len(args.images)):   # every file readable and every level possible before the first render
        load(i)
    device = rt.device_for(args.device)
    options = dict(mode=args.mode, gamma=args.gamma, blades=args.blades, rotation=math.radians(args.rotation),
                   curvature=args.curvature, highlight_gain=args.highlight_gain,
                   highlight_threshold=args.highlight_threshold, catseye=args.catseye,
                   chromatic_aberration=args.chromatic_aberration, focus_range=args.focus_range)
    with rt.Progress(len(args.images), desc="bokeh") as progress:
        for i in range(len(args.images)):
            image, disp, K = load(i)
            d_f = args.focus_disparity if point is None else float(core_focus.focus_from_point(disp, *point).disparity[0])
            out = render_frames(image, disp, d_f, K, depth_name="--depth", device=device, **options)
            write_image(out.image, outs[i])
            if cocs:
                write_image(coc_to_mask(out.coc, K), cocs[i])
            progress(i + 1, len(args.images))
    for p in outs:
        print(f"wrote {p}")
    return 0

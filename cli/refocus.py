"""``diffcamera refocus``: refocus an image file (physics by default; a DiT model refines it).

    diffcamera refocus photo.png --depth photo_depth.png --focus 0.3,0.6 --level 20 -o out.png
    diffcamera refocus photo.png --depth d.png --focus 0.3,0.6 --level 20 --model physics --input-level 12 -o out.png

``--depth`` is a disparity image (near = white; 8- or 16-bit PNG as ``diffcamera depth`` writes) of the same size.
``--model`` is ``physics`` (default: inverts the lens blur, no weights), ``toy`` (bundled), a DiffCamera whole-model
file/folder, or a FLUX.1 transformer (single ``.safetensors`` in ComfyUI's layout or a diffusers folder; then give
``--vae`` and ``--lora``). The input's own focus and blur are estimated unless ``--input-focus`` / ``--input-level``
give them.
"""
from __future__ import annotations

import argparse
import os

from .args import check_number, check_outputs, model_name, parse_point, require_file


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("refocus", help="refocus an image file (physics by default; a DiT model refines it)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input image (PNG/JPEG/...)")
    p.add_argument("--depth", required=True, help="disparity image of the same size, near = white (8/16-bit PNG)")
    p.add_argument("--focus", required=True, help="focus point 'x,y', normalised 0..1 from the left/top")
    p.add_argument("--level", type=float, default=20.0,
                   help="bokeh level: blur px per 1024 px of long side at disparity difference 1 (default: %(default)s)")
    p.add_argument("--model", default="physics",
                   help="'physics' (no weights), 'toy' (either in any case), a DiffCamera model, or a FLUX.1 base "
                        "(default: %(default)s)")
    p.add_argument("--input-focus", default=None,
                   help="where the input is sharp now, 'x,y' normalised; default: estimated from the image")
    p.add_argument("--input-level", type=float, default=None,
                   help="the input's own bokeh level (0 = all in focus: use it for a picture sharp everywhere, "
                        "which a soft look can make read as blurred); default: estimated from the image (least "
                        "reliable on a generated image's fake bokeh: set it if you can)")
    p.add_argument("--all-in-focus", default=None, help="also write the all-in-focus estimate (PNG) here")
    p.add_argument("--vae", default=None, help="FLUX VAE (ae.safetensors or a diffusers folder)")
    p.add_argument("--lora", default=None, help="DiffCamera refocus LoRA (.safetensors)")
    p.add_argument("--family", default=None, choices=("flux1-kontext-dev", "flux1-dev"),
                   help="family of a FLUX single-file base (default: guessed from its name)")
    p.add_argument("--steps", type=int, default=28, help="sampling steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="FLUX models: noise seed; the toy is deterministic (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=2.5, help="FLUX distilled guidance (default: %(default)s)")
    p.add_argument("--denoise", type=float, default=0.5,
                   help="FLUX models: how far the refinement may move from the physics estimate, 0..1; the toy "
                        "ignores it (default: %(default)s)")
    p.add_argument("--tile", type=int, default=0,
                   help="tile size px; 0 = automatic (above 1.5x the trained size), -1 = never tile (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"), help="compute precision")
    p.add_argument("--storage", default="default", choices=("default", "fp8_e4m3fn", "fp8_e5m2"),
                   help="transformer weight storage (fp8 halves its memory)")
    p.add_argument("--offload", default="none", choices=("none", "group", "leaf"), help="GPU offloading mode")
    p.add_argument("-o", "--out", required=True, help="output image (PNG)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def run(args) -> int:
    from .. import runtime as rt
    from ..core.checks import check_blur_strength, check_same_size
    from ..core.conventions import level_to_K
    import torch

    from ..core.depth import convert_depth_map
    from ..core.files import read_depth, read_image, write_image
    from ..core.focus import focus_from_point
    from ..core.pipeline import PhysicsOnly

    check_outputs([(args.out, "--out"), (args.all_in_focus, "--all-in-focus")], args.force,
                  [(args.image, "image"), (args.depth, "--depth")])
    check_number(args.level, "--level", 0.0)
    check_number(args.input_level, "--input-level", 0.0, hint=" (0 = the input is all in focus)")
    check_number(args.denoise, "--denoise", 0.0, 1.0, lo_open=True)
    check_number(args.guidance, "--guidance")
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.tile < -1:
        raise ValueError(f"--tile must be -1 (never tile), 0 (automatic) or a size in px, got {args.tile}")
    point = parse_point(args.focus, "--focus")
    input_point = None if args.input_focus is None else parse_point(args.input_focus, "--input-focus")
    image = read_image(require_file(args.image, "image"))
    raw = read_depth(require_file(args.depth, "--depth"))
    if bool(torch.isfinite(raw).all()) and (float(raw.min()) < 0.0 or float(raw.max()) > 1.0):  # not clipped silently
        raise ValueError(f"--depth {args.depth} holds values {float(raw.min()):g}..{float(raw.max()):g} but refocus "
                         f"reads disparity 0..1 (near = 1); save it normalised to 0..1 (as `diffcamera depth` "
                         f"writes it), or convert it first")
    disp = convert_depth_map(raw, normalise=False, name="--depth")
    check_same_size(disp, image.shape[-2:], "--depth", "use the depth of this image")
    focus = focus_from_point(disp, *point)
    h, w = image.shape[-2:]
    K = level_to_K(args.level, h, w)
    input_d = None if input_point is None else focus_from_point(disp, *input_point).disparity
    input_K = None if args.input_level is None else level_to_K(args.input_level, h, w)
    check_blur_strength(K, 1, h, w, "--level")
    check_blur_strength(input_K, 1, h, w, "--input-level")
    model = model_name(args.model)
    if model == "physics":
        pipe = rt.refocus_pipeline(PhysicsOnly())
    else:
        from ..core.dit.loading import describe
        handle = rt.load_refocus_model(model, args.vae, args.lora, family=args.family, dtype=args.dtype,
                                       storage=args.storage, offload=args.offload)
        print(describe(handle.model))
        pipe = rt.refocus_pipeline(handle)
    tile = pipe.tile_size(h, w, "off" if args.tile < 0 else "on" if args.tile else "auto", max(args.tile, 0))
    with rt.Progress(1, desc="refocus") as progress:
        result = pipe(image, disp, focus, K, input_focus_disparity=input_d, input_K=input_K, steps=args.steps,
                      seed=args.seed, guidance=args.guidance, denoise=args.denoise, tile_size=tile, callback=progress)
    write_image(result.image, args.out)
    if args.all_in_focus:
        write_image(result.all_in_focus, args.all_in_focus)
    print(result.describe())
    print(f"wrote {args.out} (focus disparity {float(focus.disparity[0]):.3f}, K {K:.1f} px)")
    return 0

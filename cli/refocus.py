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


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("refocus", help="refocus an image with the DiT refocus model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input image (PNG/JPEG/...)")
    p.add_argument("--depth", required=True, help="disparity image of the same size, near = white (8/16-bit PNG)")
    p.add_argument("--focus", required=True, help="focus point 'x,y', normalised 0..1 from the left/top")
    p.add_argument("--level", type=float, default=20.0,
                   help="bokeh level: blur px per 1024 px of long side at disparity difference 1 (default: %(default)s)")
    p.add_argument("--model", default="physics",
                   help="'physics' (no weights), 'toy', a DiffCamera model, or a FLUX.1 base (default: %(default)s)")
    p.add_argument("--input-focus", default=None,
                   help="where the input is sharp now, 'x,y' normalised; default: estimated from the image")
    p.add_argument("--input-level", type=float, default=None,
                   help="the input's own bokeh level (0 = all in focus); default: estimated from the image")
    p.add_argument("--all-in-focus", default=None, help="also write the all-in-focus estimate (PNG) here")
    p.add_argument("--vae", default=None, help="FLUX VAE (ae.safetensors or a diffusers folder)")
    p.add_argument("--lora", default=None, help="DiffCamera refocus LoRA (.safetensors)")
    p.add_argument("--family", default=None, choices=("flux1-kontext-dev", "flux1-dev"),
                   help="family of a FLUX single-file base (default: guessed from its name)")
    p.add_argument("--steps", type=int, default=28, help="sampling steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=2.5, help="FLUX distilled guidance (default: %(default)s)")
    p.add_argument("--denoise", type=float, default=0.5,
                   help="DiT models: how far the refinement may move from the physics estimate, 0..1 (default: %(default)s)")
    p.add_argument("--tile", type=int, default=0,
                   help="tile size px; 0 = automatic (above 1.5x the trained size), -1 = never tile (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"), help="compute precision")
    p.add_argument("--storage", default="default", choices=("default", "fp8_e4m3fn", "fp8_e5m2"),
                   help="transformer weight storage (fp8 halves its memory)")
    p.add_argument("--offload", default="none", choices=("none", "group", "leaf"), help="GPU offloading mode")
    p.add_argument("-o", "--out", required=True, help="output image (PNG)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def read_image(path: str):
    """RGB file -> ``[1,3,H,W]`` 0..1."""
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def read_disparity(path: str):
    """Grey disparity file (8/16-bit, near = white) -> ``[1,1,H,W]`` 0..1."""
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = arr / (65535.0 if arr.max() <= 65535 else arr.max())
        else:
            arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    return torch.from_numpy(arr.astype(np.float32))[None, None].clamp(0, 1)


def parse_focus(text: str, flag: str = "--focus"):
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be 'x,y' with numbers in 0..1, got {text!r}") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"{flag} {text}: x and y must be in 0..1")
    return x, y


def _write_png(image, path: str) -> None:
    import os

    import numpy as np
    from PIL import Image
    arr = (image[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(arr).save(path)


def run(args) -> int:
    import os

    from ..comfy_adapter import Progress, compute_device
    from ..core.conventions import level_to_K
    from ..core.focus import focus_from_point
    from ..core.pipeline import RefocusPipeline

    for out in (args.out, args.all_in_focus):
        if out and os.path.exists(out) and not args.force:
            raise ValueError(f"{out} exists; pass --force to overwrite it or choose another name")
    for name, path in (("image", args.image), ("--depth", args.depth)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: {os.path.basename(path)!r} not found in "
                                    f"{os.path.dirname(os.path.abspath(path))}")
    x, y = parse_focus(args.focus, "--focus")
    image = read_image(args.image)
    disp = read_disparity(args.depth)
    if disp.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"--depth is {disp.shape[-1]}×{disp.shape[-2]} px but the image is "
                         f"{image.shape[-1]}×{image.shape[-2]}; use the depth of this image")
    focus = focus_from_point(disp, x, y)
    h, w = image.shape[-2:]
    K = level_to_K(args.level, h, w)
    input_d = None if args.input_focus is None else focus_from_point(disp, *parse_focus(args.input_focus,
                                                                                       "--input-focus")).disparity
    if args.input_level is not None and not args.input_level >= 0:
        raise ValueError(f"--input-level must be >= 0 (0 = the input is all in focus), got {args.input_level}")
    input_K = None if args.input_level is None else level_to_K(args.input_level, h, w)
    if args.model == "physics":
        pipe = RefocusPipeline(device=compute_device())
        tile = None
    else:
        from ..core.dit.loading import describe, load_refocus_model
        from ..core.dit.tiling import tile_size_for
        model = load_refocus_model(args.model, args.vae, args.lora, family=args.family, dtype=args.dtype,
                                   storage=args.storage, offload=args.offload, device=compute_device())
        print(describe(model))
        pipe = RefocusPipeline(model)
        tile = None if args.tile < 0 else tile_size_for(model, h, w, "on" if args.tile else "auto", args.tile)
    progress = Progress(1, desc="refocus")
    try:
        result = pipe(image, disp, focus, K, input_focus_disparity=input_d, input_K=input_K, steps=args.steps,
                      seed=args.seed, guidance=args.guidance, denoise=args.denoise, tile_size=tile, callback=progress)
    finally:
        progress.close()
    _write_png(result.image, args.out)
    if args.all_in_focus:
        _write_png(result.all_in_focus, args.all_in_focus)
    print(result.describe())
    print(f"wrote {args.out} (focus disparity {float(focus.disparity[0]):.3f}, K {K:.1f} px)")
    return 0

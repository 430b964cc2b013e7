"""``diffcamera refocus``: refocus an image file with the DiT refocus model.

    diffcamera refocus photo.png --depth photo_depth.png --focus 0.3,0.6 --level 20 --model toy -o out.png

``--depth`` is a disparity image (near = white; 8- or 16-bit PNG as ``diffcamera depth`` writes) of the same size.
``--model`` is ``toy`` (bundled), a DiffCamera whole-model file/folder, or a FLUX.1 transformer (single
``.safetensors`` in ComfyUI's layout or a diffusers folder; then give ``--vae`` and ``--lora``).
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
    p.add_argument("--model", default="toy", help="'toy', a DiffCamera model, or a FLUX.1 base (default: %(default)s)")
    p.add_argument("--vae", default=None, help="FLUX VAE (ae.safetensors or a diffusers folder)")
    p.add_argument("--lora", default=None, help="DiffCamera refocus LoRA (.safetensors)")
    p.add_argument("--family", default=None, choices=("flux1-kontext-dev", "flux1-dev"),
                   help="family of a FLUX single-file base (default: guessed from its name)")
    p.add_argument("--steps", type=int, default=28, help="sampling steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=2.5, help="FLUX distilled guidance (default: %(default)s)")
    p.add_argument("--denoise", type=float, default=1.0, help="1 = from noise, lower keeps more input (default: %(default)s)")
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


def parse_focus(text: str):
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--focus must be 'x,y' with numbers in 0..1, got {text!r}") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"--focus {text}: x and y must be in 0..1")
    return x, y


def run(args) -> int:
    import os

    import numpy as np
    from PIL import Image

    from ..comfy_adapter import Progress, compute_device
    from ..core.conventions import level_to_K
    from ..core.dit.loading import describe, load_refocus_model
    from ..core.dit.sampler import auto_tile_size, refocus
    from ..core.focus import focus_from_point

    if os.path.exists(args.out) and not args.force:
        raise ValueError(f"--out {args.out} exists; pass --force to overwrite it or choose another name")
    for name, path in (("image", args.image), ("--depth", args.depth)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: {os.path.basename(path)!r} not found in "
                                    f"{os.path.dirname(os.path.abspath(path))}")
    x, y = parse_focus(args.focus)
    image = read_image(args.image)
    disp = read_disparity(args.depth)
    if disp.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"--depth is {disp.shape[-1]}×{disp.shape[-2]} px but the image is "
                         f"{image.shape[-1]}×{image.shape[-2]}; use the depth of this image")
    focus = focus_from_point(disp, x, y)
    h, w = image.shape[-2:]
    K = level_to_K(args.level, h, w)
    model = load_refocus_model(args.model, args.vae, args.lora, family=args.family, dtype=args.dtype,
                               storage=args.storage, offload=args.offload, device=compute_device())
    print(describe(model))
    tile = None if args.tile < 0 else (args.tile or auto_tile_size(model, h, w))
    progress = Progress(args.steps, desc="refocus")
    try:
        out = refocus(model, image, disp, focus, K, steps=args.steps, seed=args.seed, guidance=args.guidance,
                      denoise=args.denoise, tile_size=tile, callback=progress)
    finally:
        progress.close()
    arr = (out[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(arr).save(args.out)
    print(f"wrote {args.out} (focus disparity {float(focus.disparity[0]):.3f}, K {K:.1f} px)")
    return 0

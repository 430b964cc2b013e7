"""``diffcamera simulate``: make refocus training pairs (sharded safetensors + JSON metadata + manifest).

Sources: a folder of all-in-focus images with depth maps beside them (``photo.png`` + ``photo_depth.png``,
grey disparity, bright = near; or ``photo_depth.npy``), depth estimated with ``--depth-model`` (a local Depth
Anything V2 folder) for images without one, or ``--scenes N`` procedural scenes with exact depth. Every
source gives ``--variants`` groups (two focus planes, their two-plane composite, the plane mask, a reference
input and the weight-free physics refocus of it to both planes, which the DiT is conditioned on), rendered
with the layered (occlusion-aware) renderer, or with ``--renderer classical`` (BokehMe-style, as DiffCamera's
data). Rerunning the same command resumes; the same ``--seed`` gives the same data. Unreadable files are
listed and skipped.
"""
from __future__ import annotations

import argparse

#: Largest ``--size`` (px): a training pair group at 4096² already holds several GiB.
MAX_SIZE = 4096


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="simulate refocus training pairs from images+depth or procedural scenes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of all-in-focus images (depth maps beside them as NAME_depth.png)")
    src.add_argument("--scenes", type=int, help="number of procedural scenes to use instead of images")
    p.add_argument("-o", "--out", required=True, help="output dataset folder (created; rerun to resume)")
    p.add_argument("--depth-model", default=None,
                   help="Depth Anything V2 folder (or name in the depth_anything model folder) for images "
                        "without a depth map")
    p.add_argument("--depth-is-metric", action="store_true",
                   help="depth files hold metric depth (far = large) instead of disparity (near = bright)")
    p.add_argument("--size", type=int, default=512, help="square training size in px, multiple of 16 (default: %(default)s)")
    p.add_argument("--variants", type=int, default=16, help="groups per source image (default: %(default)s)")
    p.add_argument("--level-min", type=float, default=8.0, help="lowest bokeh level, px per 1024 px (default: %(default)s)")
    p.add_argument("--level-max", type=float, default=96.0, help="highest bokeh level (default: %(default)s)")
    p.add_argument("--min-separation", type=float, default=0.15,
                   help="least disparity gap between the two focus planes (default: %(default)s)")
    p.add_argument("--p-aif", type=float, default=0.3,
                   help="probability that the reference is the all-in-focus image (default: %(default)s)")
    p.add_argument("--min-sharpness", type=float, default=0.0,
                   help="drop sources whose Laplacian variance is below this (0 = keep all; default: %(default)s)")
    p.add_argument("--scene-kinds", default="layers,slanted,ground,mixed",
                   help="procedural scene kinds, comma-separated (default: %(default)s)")
    p.add_argument("--scene-seed", type=int, default=0, help="first procedural scene seed (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=64, help="groups per shard file (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="processes (default: %(default)s)")
    p.add_argument("--renderer", choices=("layered", "classical"), default="layered",
                   help="bokeh renderer of the pairs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    return p


def _check(args, depth_model) -> None:
    """Every argument and the image folder before ``--out`` is created: a run refused later would leave a
    ``simulate_config.json`` there that ties the folder to the refused arguments."""
    import os

    from ..core.conventions import LATENT_MULTIPLE, MAX_LEVEL
    from ..evaluation.scenes import KINDS
    from ..training.simulate import scan_folder
    from .args import check_folder_for, check_number

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file; give a folder for the dataset (created; rerun to resume)")
    check_folder_for(args.out, "--out", is_folder=True)
    for flag, value, least in (("--size", args.size, LATENT_MULTIPLE), ("--variants", args.variants, 1),
                               ("--shard-size", args.shard_size, 1), ("--workers", args.workers, 1)):
        if value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    if args.size > MAX_SIZE:
        raise ValueError(f"--size must be at most {MAX_SIZE} px, got {args.size}")
    if args.size % LATENT_MULTIPLE:
        raise ValueError(f"--size must be a multiple of {LATENT_MULTIPLE}, got {args.size}")
    check_number(args.level_min, "--level-min", 0.0, MAX_LEVEL)
    check_number(args.level_max, "--level-max", 0.0, MAX_LEVEL)
    if args.level_min > args.level_max:
        raise ValueError(f"--level-min {args.level_min:g} is above --level-max {args.level_max:g}; swap them")
    check_number(args.min_separation, "--min-separation", 0.0, 1.0)
    check_number(args.p_aif, "--p-aif", 0.0, 1.0, hint=" (a probability)")
    check_number(args.min_sharpness, "--min-sharpness", 0.0)
    if args.scenes is not None:
        if args.scenes < 1:
            raise ValueError(f"--scenes must be at least 1, got {args.scenes}")
        kinds = [k.strip() for k in args.scene_kinds.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"--scene-kinds: unknown kind(s) {', '.join(unknown) or '(none given)'}; use a "
                             f"comma-separated list of {', '.join(KINDS)}")
    else:
        if not os.path.isdir(args.images):
            what = "is a file, not a folder" if os.path.exists(args.images) else "does not exist"
            raise FileNotFoundError(f"--images {args.images} {what}; give the folder of all-in-focus images")
        scan_folder(args.images, have_depth_model=bool(depth_model))


def run(args) -> int:
    import os

    from .. import runtime as rt
    from ..training.simulate import SimulateOptions, simulate_dataset

    depth_model = args.depth_model
    if depth_model and not os.path.isdir(depth_model):  # a local user: any folder, else a name in the model folder
        depth_model = rt.find_model("depth_anything", depth_model, "--depth-model", kind="dir")
    _check(args, depth_model)
    opts = SimulateOptions(size=args.size, variants=args.variants, level_range=(args.level_min, args.level_max),
                           min_plane_separation=args.min_separation, p_aif=args.p_aif,
                           min_sharpness=args.min_sharpness, shard_size=args.shard_size, seed=args.seed,
                           depth_is_metric=args.depth_is_metric, num_scenes=args.scenes or 0,
                           scene_kinds=tuple(k.strip() for k in args.scene_kinds.split(",") if k.strip()),
                           scene_seed=args.scene_seed, depth_model=depth_model, renderer=args.renderer)
    with rt.Progress(1, desc="simulate (shards)") as progress:
        simulate_dataset(args.out, opts, image_folder=args.images, workers=args.workers, callback=progress,
                         what="--out")
    return 0

"""``diffcamera bench``: score bokeh renderers or refocus models against thin-lens ground truth.

    diffcamera bench --suite bokeh                      # gather-and-mix baseline, classical, layered
    diffcamera bench --suite refocus --model toy        # baselines + a DiffCamera checkpoint
    diffcamera bench --suite bokeh --size 128 --out results/
    diffcamera bench --gpu [--dry-run]                  # benchmarks/gpu_check.py: one table of GPU figures

Prints a markdown table (PSNR, SSIM, edge-band PSNR, MAE in 1/255, LVCorr, focus-plane error, time per image)
and writes ``bench_<suite>_<H>x<W>.json`` plus a contact-sheet PNG to ``--out``. Thin-lens ground truth is
cached in ``$DIFFCAMERA_CACHE`` (default ``~/.cache/diffcamera/bench``).
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="benchmark bokeh renderers / refocus models on procedural ground truth",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("bokeh", "refocus"), default="bokeh", help="which suite (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="square benchmark size in px (default: %(default)s)")
    p.add_argument("--out", default="diffcamera_bench", help="folder for the JSON and PNG (default: %(default)s)")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="refocus suite: a DiffCamera checkpoint ('toy' or a model file/folder); repeatable")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="run only this renderer/model (repeatable; default: all registered)")
    p.add_argument("--steps", type=int, default=8, help="sampling steps for --model (default: %(default)s)")
    p.add_argument("--cases", type=int, default=None, help="use only the first N benchmark cases")
    p.add_argument("--no-cache", action="store_true", help="re-render the thin-lens ground truth")
    p.add_argument("--force", action="store_true", help="overwrite earlier result files in --out")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default)")
    p.add_argument("--gpu", action="store_true",
                   help="instead of a suite, run benchmarks/gpu_check.py: BokehSimulate, refocus and a LoRA training "
                        "step with a random full-size FLUX on the CUDA device (under 8 min), one markdown table")
    p.add_argument("--dry-run", action="store_true", help="with --gpu: the same code paths on the CPU at tiny sizes")
    return p


def gpu_check_module():
    """``benchmarks/gpu_check.py`` (shipped with the pack), loaded by path (``benchmarks/`` is not a package)."""
    import importlib.util
    import os
    import sys
    name = "diffcamera_bench_gpu_check"
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_check.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the GPU check 'gpu_check.py' not found in {os.path.dirname(path)}; reinstall the "
                                "pack or run it from a clone")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def run(args) -> int:
    import os
    import sys
    if "torch" not in sys.modules:  # spinning OpenMP waits are 5-10x slower on shared cores
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.dry_run and not args.gpu:
        raise ValueError("--dry-run only applies to --gpu")
    if args.gpu:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        return gpu_check_module().main(["--dry-run"] if args.dry_run else [])

    from ..evaluation.scoring import run_suite
    from ..runtime import Progress

    if args.size < 32:
        raise ValueError(f"--size {args.size} is too small; use 32 or more (256 is the reference size)")
    if args.model and args.suite != "refocus":
        raise ValueError("--model only applies to --suite refocus")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kw = {"renderers": args.only} if args.suite == "bokeh" else {"models": args.only}
    with Progress(1, desc=f"bench {args.suite}") as progress:
        res = run_suite(args.suite, args.size, out_dir=args.out, cases=args.cases, model_paths=args.model,
                        steps=args.steps, use_cache=not args.no_cache, overwrite=args.force, callback=progress, **kw)
    h, w = res["size"]
    print(f"\n## diffcamera bench --suite {args.suite} ({w}x{h}, {len(res['cases'])} cases, "
          f"{res['seconds']:.1f} s)\n")
    print(res["table"])
    if "corrupted_table" in res:
        print("\nRefocus task with corrupted depth (focus read from the corrupted map):\n")
        print(res["corrupted_table"])
    print(f"\nwrote {res['json']} and {res['png']}")
    return 0

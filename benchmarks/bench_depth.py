"""Depth and focus picking: speed of the pieces and agreement of our torch preprocessing with transformers'.

Prints a markdown table of medians measured side by side in one run (CPU; GPU figures unmeasured):

* preprocessing of a 1024×768 image for Depth Anything V2 (short side 518): ours (torch bicubic, antialiased)
  vs transformers' ``DPTImageProcessor`` (PIL backend) with the released models' preprocessor config, and how
  far apart the two network inputs are (ImageNet-normalised units);
* the whole ``estimate_disparity`` path on the tiny random model (overhead of everything but the network);
* reading the focus disparity (robust cluster median vs plain median) and drawing the picker's preview at 1024².

Run: ``python benchmarks/bench_depth.py [--repeat 7]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    import numpy as np

    from diffcamera.core import depth as D
    from diffcamera.core import focus as F
    from tiny_depth import PREPROCESSOR_CONFIG, save_tiny_depth_anything

    h, w = 768, 1024
    low = torch.rand(1, 3, 24, 32)
    image = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    image_u8 = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = torch.from_numpy(image_u8).permute(2, 0, 1)[None].float() / 255
    size = D.processing_size(h, w)
    rows = []

    ours = lambda: D.preprocess(image, size)  # noqa: E731
    t_ours = median_ms(ours, args.repeat)
    try:
        from transformers import DPTImageProcessorPil as Proc
    except ImportError:
        from transformers import DPTImageProcessor as Proc
    proc = Proc(**{k: v for k, v in PREPROCESSOR_CONFIG.items() if k != "image_processor_type"})
    theirs = lambda: proc(images=image_u8, return_tensors="pt").pixel_values  # noqa: E731
    t_theirs = median_ms(theirs, args.repeat)
    a, b = ours(), theirs()
    same_shape = tuple(a.shape) == tuple(b.shape)
    diff = (a - b).abs() if same_shape else None
    rows.append(("preprocess 1024×768 → %d×%d, ours (torch)" % (size[1], size[0]), t_ours, t_theirs / t_ours))
    rows.append(("preprocess, transformers DPTImageProcessor (PIL)", t_theirs, 1.0))

    with tempfile.TemporaryDirectory() as tmp:
        model = D.load_depth_model(save_tiny_depth_anything(os.path.join(tmp, "tiny")))
        est = lambda: D.estimate_disparity(model, image, 518)  # noqa: E731
        rows.append(("estimate_disparity 1024×768 @518, tiny random model", median_ms(est, args.repeat), None))

    d = torch.rand(1, 1, 1024, 1024)
    robust = lambda: F.read_disparity_at(d, 0.5, 0.5, window=11)  # noqa: E731
    plain = lambda: F.read_disparity_at(d, 0.5, 0.5, window=11, cluster_tolerance=0)  # noqa: E731
    t_plain = median_ms(plain, args.repeat)
    t_robust = median_ms(robust, args.repeat)
    rows.append(("focus read 11×11 window, plain median", t_plain, 1.0))
    rows.append(("focus read 11×11 window, robust cluster median", t_robust, t_robust / t_plain))
    img = torch.rand(1, 3, 1024, 1024)
    focus = F.focus_from_point(d, 0.5, 0.5)
    rows.append(("focus preview (tint + marker) 1024²", median_ms(lambda: F.focus_preview(img, d, focus, 20.0),
                                                                   args.repeat), None))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only (GPU unmeasured); "
          f"median of {args.repeat}\n")
    print("| what | median ms | ratio |")
    print("| --- | ---: | ---: |")
    for name, ms, ratio in rows:
        print(f"| {name} | {ms:.2f} | {'' if ratio is None else f'{ratio:.2f}'} |")
    if diff is not None:
        print(f"\nours vs DPTImageProcessor network input: same shape {tuple(a.shape)}, mean |diff| "
              f"{diff.mean():.4f}, 99th pct {diff.flatten().quantile(0.99):.4f}, max {diff.max():.4f} "
              f"(ImageNet-normalised units; 1/255 of a pixel value ≈ {1 / 255 / 0.226:.4f})")
    else:
        print(f"\nshapes differ: ours {tuple(a.shape)}, transformers {tuple(b.shape)}")
    print("(first ratio = transformers time / ours; robust read ratio = robust / plain)")


if __name__ == "__main__":
    main()

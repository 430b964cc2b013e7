"""Ground truth: cost of the procedural scenes and the thin-lens reference, and the reference's own noise.

Prints markdown tables of medians measured side by side in one run (CPU; GPU figures unmeasured):

* ``make_scene`` per kind at 256² and 512²;
* ``render_thin_lens`` per kind at 256² (K = 12, focus 0.5 and 0.9) at the default lattice, next to the gather-and-mix
  baseline on the same input, and the residual sampling noise: RMS / mean / 99th percentile of the difference to
  a lattice twice as dense (4× the views), in 1/255 sRGB levels;
* the whole ``diffcamera bench --suite bokeh`` at 256² with an empty ground-truth cache.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ground_truth.py [--repeat 3] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def median_s(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-suite", action="store_true", help="skip the whole-suite timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffcamera.evaluation import scoring as B
    from diffcamera.evaluation import scenes
    from diffcamera.evaluation import thin_lens as tl

    print(f"torch threads: {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}\n")
    print("| kind | make_scene 256² s | make_scene 512² s | layers |")
    print("|---|---|---|---|")
    for kind in scenes.KINDS:
        t256 = median_s(lambda: scenes.make_scene(0, 256, kind), args.repeat)
        t512 = median_s(lambda: scenes.make_scene(0, 512, kind), args.repeat)
        print(f"| {kind} | {t256:.3f} | {t512:.3f} | {len(scenes.make_scene(0, 256, kind).layers)} |")

    print("\n| kind | d_f | views (cells) | thin lens s | gather-mix s | ratio | noise RMS | noise mean | noise p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    K = 12.0
    for kind in scenes.KINDS:
        sc = scenes.make_scene(0, 256, kind)
        for df in (0.5, 0.9):
            r_max = max(K * float((l.disparity()[l.alpha > 0] - df).abs().max()) for l in sc.layers)
            m = tl.default_cells_across(r_max)
            n_views = tl.aperture_cells(m)[0].shape[0]
            t_tl = median_s(lambda: tl.render_thin_lens(sc, df, K), args.repeat)
            t_gm = median_s(lambda: B.gather_and_mix(sc.image, sc.disparity, df, K), args.repeat)
            out = tl.render_thin_lens(sc, df, K)
            dense = tl.render_thin_lens(sc, df, K, samples=int(math.pi / 4 * (2 * m) ** 2) + 1)
            e = (out - dense).abs().flatten() * 255
            print(f"| {kind} | {df} | {n_views} | {t_tl:.3f} | {t_gm:.3f} | {t_tl / t_gm:.1f} | "
                  f"{float(e.pow(2).mean().sqrt()):.3f} | {float(e.mean()):.3f} | {float(e.quantile(0.99)):.2f} |")

    if not args.skip_suite:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DIFFCAMERA_CACHE"] = os.path.join(tmp, "cache")
            t = time.perf_counter()
            res = B.run_suite("bokeh", 256, out_dir=tmp, log=lambda s: None)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            B.run_suite("bokeh", 256, out_dir=tmp, log=lambda s: None)
            warm = time.perf_counter() - t
        print(f"\n`diffcamera bench --suite bokeh` at 256², {len(res['cases'])} cases: {cold:.1f} s with an empty "
              f"ground-truth cache, {warm:.1f} s with it filled (target < 120 s).\n")
        print(res["table"])


if __name__ == "__main__":
    main()

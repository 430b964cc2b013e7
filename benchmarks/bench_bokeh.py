"""BokehSimulate benchmark: accuracy and speed of ``render_bokeh``, side by side in one run (medians).

    python benchmarks/bench_bokeh.py                 # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_bokeh.py --quick         # smaller sizes, fewer repeats

Prints markdown tables:

1. **Classical vs the direct scatter** (BokehMe's formula, the loop in ``tests/core/test_bokeh_reference.py``):
   MAE in 1/255 on random images (uniform noise / smooth) × random disparities (smooth / blocks / noise),
   radii up to 24 px, gamma 1–5. Target ≤ 0.5/255.
2. **Speed** at 1024² (CPU threads as given, default 2): classical and layered at maximum radius 8, 32
   and 128 px, the growth from radius 8 to 128 (target ≤ 2×), and the speed-up over the direct scatter
   at the same settings — the direct scatter is timed at a smaller size and scaled by the count
   ``pixels × (2⌊r⌋+3)²`` summed over the pixels' radii (it is hopeless at 1024²), which is said in the
   table.
3. **Layered vs classical against the thin-lens reference** (:mod:`diffcamera.core.thin_lens`) on the
   benchmark scenes (:func:`diffcamera.core.scenes.make_scene`): PSNR and PSNR in the band around
   depth edges (:func:`diffcamera.core.metrics.edge_band_psnr`). Target: edge band ≥ +3 dB, overall no lower.

GPU figures need a CUDA device; when none is present the GPU rows say "not measured".
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _reference():
    path = os.path.join(ROOT, "tests", "core", "test_bokeh_reference.py")
    spec = importlib.util.spec_from_file_location("bokeh_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _median_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _random_case(g, size, img_kind, disp_kind):
    if img_kind == "noise":
        img = torch.rand(1, 3, size, size, generator=g)
    else:
        img = F.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(size, size), mode="bilinear")
    if disp_kind == "smooth":
        d = F.interpolate(torch.rand(1, 1, 6, 6, generator=g), size=(size, size), mode="bicubic",
                          align_corners=False).clamp(0, 1)
    elif disp_kind == "blocks":
        d = F.interpolate(torch.rand(1, 1, 5, 5, generator=g), size=(size, size), mode="nearest")
    else:
        d = torch.rand(1, 1, size, size, generator=g)
    return img, d


def accuracy_table(size: int) -> str:
    from diffcamera.core.bokeh import render_bokeh
    ref = _reference()
    g = torch.Generator().manual_seed(0)
    rows, maes = [], []
    for disp_kind in ("smooth", "blocks", "noise"):
        for img_kind in ("noise", "smooth"):
            for rmax in (4, 12, 24):
                for gamma in (1.0, 2.2, 5.0):
                    img, d = _random_case(g, size, img_kind, disp_kind)
                    K = 2.0 * rmax  # focus 0.5: radii up to rmax
                    out = render_bokeh(img, d, 0.5, K, mode="classical", gamma=gamma)
                    exp = ref.direct_scatter(img, (K * (d - 0.5)).abs(), gamma).float()
                    mae = float((out - exp).abs().mean()) * 255
                    maes.append(mae)
                    rows.append((disp_kind, img_kind, rmax, gamma, mae))
    worst = max(rows, key=lambda r: r[-1])
    lines = [f"### Classical vs direct scatter ({size}×{size}, {len(rows)} cases)", "",
             "| statistic | MAE (1/255) | target |", "|---|---|---|",
             f"| median | {statistics.median(maes):.3f} | ≤ 0.5 |",
             f"| worst ({worst[0]} disparity, {worst[1]} image, r≤{worst[2]}, γ={worst[3]}) | {worst[4]:.3f} | ≤ 0.5 |",
             ""]
    return "\n".join(lines)


def _direct_cost(radius: torch.Tensor) -> float:
    """Work of the direct scatter: Σ over pixels of its window area (2⌊r⌋+3)²."""
    return float(((2 * torch.floor(radius) + 3) ** 2).sum())


def speed_table(size: int, repeats: int, ref_size: int) -> str:
    from diffcamera.core.bokeh import render_bokeh
    ref = _reference()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, size, size, generator=g)
    d = F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    d = (d - d.min()) / (d.max() - d.min())
    times = {}
    for mode in ("classical", "layered"):
        for rmax in (8, 32, 128):
            K = 2.0 * rmax  # focus 0.5, disparity spans 0..1: radii 0..rmax
            times[mode, rmax] = _median_time(lambda: render_bokeh(img, d, 0.5, K, mode=mode), repeats)
    # direct scatter at a smaller size, same radius distribution, scaled by the work count
    small_img = F.interpolate(img, size=(ref_size, ref_size), mode="area")
    small_d = F.interpolate(d, size=(ref_size, ref_size), mode="bilinear", align_corners=False)
    r_small = (64.0 * (small_d - 0.5)).abs()
    t_small = _median_time(lambda: ref.direct_scatter(small_img, r_small, 4.0), 1)
    r_full = (64.0 * (d - 0.5)).abs()
    t_direct = t_small * _direct_cost(r_full) / _direct_cost(r_small)
    lines = [f"### Speed at {size}×{size}, {torch.get_num_threads()} CPU threads (median of {repeats})", "",
             "| mode | r≤8 | r≤32 | r≤128 | growth 8→128 | target at r≤32 | speed-up vs direct scatter (r≤32) |",
             "|---|---|---|---|---|---|---|"]
    targets = {"classical": 0.35, "layered": 1.0}
    for mode in ("classical", "layered"):
        t8, t32, t128 = times[mode, 8], times[mode, 32], times[mode, 128]
        lines.append(f"| {mode} | {t8:.3f} s | {t32:.3f} s | {t128:.3f} s | {t128 / t8:.2f}× (≤ 2×) | "
                     f"≤ {targets[mode]} s | {t_direct / t32:.0f}× |")
    lines.append(f"| direct scatter (float64 loop, r≤32) | | ≈ {t_direct:.1f} s | | | | 1× "
                 f"(timed at {ref_size}² = {t_small:.2f} s, scaled by Σ(2⌊r⌋+3)²) |")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        gi, gd = img.to(dev), d.to(dev)
        sync = torch.cuda.synchronize
        for mode, target in (("classical", "10 ms"), ("layered", "30 ms")):
            t = _median_time(lambda: render_bokeh(gi, gd, 0.5, 64.0, mode=mode), repeats, sync)
            lines.append(f"| GPU {mode} ({torch.cuda.get_device_name()}) | | {t * 1000:.1f} ms | | | ≤ {target} | |")
    else:
        lines.append("| GPU classical / layered | | not measured (no CUDA device here) | | | ≤ 10 ms / ≤ 30 ms | |")
    lines.append("")
    return "\n".join(lines)


def thin_lens_table(size: int, seeds) -> str:
    from diffcamera.core import metrics, scenes, thin_lens
    from diffcamera.core.bokeh import render_bokeh
    rows = {"classical": ([], []), "layered": ([], [])}
    n = 0
    for kind in ("layers", "mixed", "slanted", "ground"):
        for seed in seeds:
            sc = scenes.make_scene(seed, size, kind)
            disp = sc.disparity
            for fd, level in ((float(disp.max()), 12.0), (float(disp.min()) + 0.05, 12.0), (0.5, 20.0)):
                K = level * size / 128.0
                ref = thin_lens.render_thin_lens(sc, fd, K)
                n += 1
                for mode in rows:
                    out = render_bokeh(sc.image, disp, fd, K, mode=mode)
                    rows[mode][0].append(float(metrics.psnr(out, ref)))
                    e = float(metrics.edge_band_psnr(out, ref, disp))
                    if math.isfinite(e):
                        rows[mode][1].append(e)
    med = {m: (statistics.median(v[0]), statistics.median(v[1])) for m, v in rows.items()}
    lines = [f"### Against the thin-lens reference ({n} renders: scenes layers/mixed/slanted/ground, {size}², "
             "focus near / far / middle)", "",
             "| mode | PSNR (median) | edge-band PSNR (median) |", "|---|---|---|"]
    for m in ("classical", "layered"):
        lines.append(f"| {m} | {med[m][0]:.2f} dB | {med[m][1]:.2f} dB |")
    lines.append(f"| layered − classical | {med['layered'][0] - med['classical'][0]:+.2f} dB (target ≥ 0) | "
                 f"{med['layered'][1] - med['classical'][1]:+.2f} dB (target ≥ +3) |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.add_argument("--threads", type=int, nargs="+", default=[2],
                   help="torch CPU threads; several values repeat the speed table (default: 2)")
    p.add_argument("--skip", nargs="*", default=[], choices=("accuracy", "speed", "thinlens"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads[0])
    print(f"# render_bokeh benchmark ({'quick' if args.quick else 'full'}); torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f} (other processes share "
          f"the machine: timings are upper bounds)\n")
    if "accuracy" not in args.skip:
        print(accuracy_table(64 if args.quick else 96))
    if "speed" not in args.skip:
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(speed_table(512 if args.quick else 1024, 2 if args.quick else 5, 96 if args.quick else 128))
            print(f"(load average after: {os.getloadavg()[0]:.1f})\n")
        torch.set_num_threads(args.threads[0])
    if "thinlens" not in args.skip:
        print(thin_lens_table(96 if args.quick else 128, (0,) if args.quick else (0, 1, 2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

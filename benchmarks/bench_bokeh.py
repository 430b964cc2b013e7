"""BokehSimulate benchmark: accuracy and speed of ``render_bokeh``, side by side in one run (medians).

    pip install -e ".[bench]"                        # OpenCV, for the Gaussian-stack peer (benchmark only)
    python benchmarks/bench_bokeh.py                 # full run (about 10 minutes on 2 idle CPU cores)
    python benchmarks/bench_bokeh.py --quick         # smaller sizes, fewer repeats

Prints markdown tables, each followed by the load average (other processes sharing the cores slow
every column alike, so the ratios are the robust part):

1. **Classical vs the direct scatter** (BokehMe's formula, the loop in ``tests/core/test_bokeh_reference.py``):
   MAE in 1/255 on random images (uniform noise / smooth) × random disparities (smooth / blocks / noise),
   radii up to 24 px, gamma 1–5. Target: worst ≤ 0.5/255.
2. **Layered vs classical against the thin-lens reference** (:mod:`diffcamera.evaluation.thin_lens`) on the
   benchmark scenes (:func:`diffcamera.evaluation.scenes.make_scene`): PSNR and PSNR in the band around depth
   edges (:func:`diffcamera.evaluation.metrics.edge_band_psnr`).
3. **Speed against the peer's method** at 1024² and 2048², blur radius ≤ 32 px, for each thread count:
   classical, layered, the project's gather-and-mix renderer (:func:`diffcamera.evaluation.scoring.gather_and_mix`,
   what today's ComfyUI depth-of-field nodes do, torch) and a **16-level Gaussian stack done with OpenCV**
   (``cv2.GaussianBlur`` of the whole image at 16 radii evenly spaced in ``0..r_max``, σ = r/2, each pixel
   mixing the two levels that bracket its radius), with the ratio of each to the stack. Targets at 1024²,
   2 threads: classical ≤ 1.0×, layered ≤ 2.0×.
4. **Growth with the blur radius** (r ≤ 8, 32, 128 px at 1024²).
5. **Gradients**: forward, forward + backward (autograd, w.r.t. the image) for both modes, and the
   layered operator's precomputation, application, adjoint, application + adjoint. Target ≤ 2× forward.

GPU figures need a CUDA device; when none is present the table says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time

# idle OpenMP threads sleep instead of spinning: on cores shared with other processes spinning threads
# made the 2-thread renders 2-4x slower (the project's rule for shared machines; set before torch loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _reference():
    path = os.path.join(ROOT, "tests", "core", "test_bokeh_reference.py")
    spec = importlib.util.spec_from_file_location("bokeh_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


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


def _median_times(fns, repeats: int, sync=lambda: None):
    """``{name: median seconds}`` of several callables timed round-robin (each warmed up once), so that
    a change of the machine's load during the run hits every row alike."""
    for fn in fns.values():
        fn()
        sync()
    ts = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            ts[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in ts.items()}


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


def _speed_case(size: int):
    """The speed benchmark's input: random image, smooth random disparity spanning 0..1 (focus 0.5)."""
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, size, size, generator=g)
    d = F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    return img, (d - d.min()) / (d.max() - d.min())


def gaussian_stack_cv2(image: torch.Tensor, disparity: torch.Tensor, focus_disparity: float, K: float,
                       levels: int = 16) -> torch.Tensor:
    """The peer's method with a library: ``levels`` Gaussian blurs of the whole image (OpenCV, σ = r/2 at
    radii evenly spaced in ``0..r_max``), each pixel mixing the two levels bracketing its radius
    ``K·|d − d_f|``. ``[1,3,H,W]`` sRGB → ``[1,3,H,W]``."""
    import cv2
    import numpy as np
    img = image[0].permute(1, 2, 0).contiguous().numpy()
    r = (K * (disparity[0, 0] - focus_disparity)).abs().numpy()
    r_max = float(r.max())
    t = r * ((levels - 1) / max(r_max, 1e-6))
    acc = np.zeros_like(img)
    tmp = np.empty_like(img)
    w = np.empty_like(t)
    for k in range(levels):   # hat weight of level k per pixel, in place (numpy measured faster than torch here)
        np.subtract(t, k, out=w)
        np.abs(w, out=w)
        np.subtract(1.0, w, out=w)
        np.maximum(w, 0.0, out=w)
        rad = r_max * k / (levels - 1)
        blurred = img if rad < 0.5 else cv2.GaussianBlur(img, (0, 0), sigmaX=rad / 2)
        np.multiply(blurred, w[..., None], out=tmp)
        acc += tmp
    return torch.from_numpy(acc).permute(2, 0, 1)[None]


def _cv2():
    try:
        import cv2
        return cv2
    except ImportError:
        return None


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
             f"| median | {statistics.median(maes):.3f} | |",
             f"| worst ({worst[0]} disparity, {worst[1]} image, r≤{worst[2]}, γ={worst[3]}) | {worst[4]:.3f} | ≤ 0.5 |",
             "", f"(load average after: {_load()})", ""]
    return "\n".join(lines)


def thin_lens_table(size: int, seeds) -> str:
    from diffcamera.evaluation import metrics, scenes, thin_lens
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
    lines.append(f"| layered − classical | {med['layered'][0] - med['classical'][0]:+.2f} dB | "
                 f"{med['layered'][1] - med['classical'][1]:+.2f} dB |")
    lines += ["", f"(load average after: {_load()})", ""]
    return "\n".join(lines)


def _renderers(img, d, K):
    """``{name: fn()}`` of everything timed at one setting (the cv2 stack only when OpenCV is installed)."""
    from diffcamera.evaluation.scoring import gather_and_mix
    from diffcamera.core.bokeh import render_bokeh
    fns = {"classical": lambda: render_bokeh(img, d, 0.5, K, mode="classical"),
           "layered": lambda: render_bokeh(img, d, 0.5, K, mode="layered"),
           "gather-and-mix (project, torch, 6 levels)": lambda: gather_and_mix(img, d, 0.5, K)}
    if _cv2() is not None:
        fns[STACK] = lambda: gaussian_stack_cv2(img, d, 0.5, K)
        fns[STACK_BLURS] = lambda: _stack_blurs_only(img, K)
    return fns


def _stack_blurs_only(image, K, levels: int = 16):
    """The 15 OpenCV blurs of the stack without the per-pixel mixing (a lower bound of the peer)."""
    import cv2
    img = image[0].permute(1, 2, 0).contiguous().numpy()
    r_max = K / 2
    for k in range(1, levels):
        cv2.GaussianBlur(img, (0, 0), sigmaX=r_max * k / (levels - 1) / 2)


STACK = "Gaussian stack (cv2, 16 levels)"
STACK_BLURS = "… its 15 cv2 blurs alone, without the mixing"
NO_CV2 = ("**OpenCV is not installed** (`pip install -e \".[bench]\"`): the 16-level Gaussian stack was not "
          "timed and no ratio to it is given")


def speed_table(sizes, threads: int, repeats: int) -> str:
    torch.set_num_threads(threads)
    cv2 = _cv2()
    if cv2 is not None:
        cv2.setNumThreads(threads)
    times = {}
    for size in sizes:
        img, d = _speed_case(size)
        got = _median_times(_renderers(img, d, 64.0), repeats if size <= 1024 else max(1, repeats - 2))  # r ≤ 32
        times.update({(name, size): t for name, t in got.items()})
    names = list(dict.fromkeys(n for n, _ in times))
    head = " | ".join(f"{s}² time | ratio to stack" for s in sizes)
    lines = [f"### Speed, blur radius ≤ 32 px, {threads} CPU thread{'s' if threads > 1 else ''} "
             f"(median of {repeats} at 1024², {max(1, repeats - 2)} at 2048²)", "",
             f"| renderer | {head} |", "|---" * (1 + 2 * len(sizes)) + "|"]
    for name in names:
        cells = []
        for s in sizes:
            t = times[name, s]
            ratio = f"{t / times[STACK, s]:.2f}×" if (STACK, s) in times and name != STACK_BLURS else "—"
            cells.append(f"{t:.3f} s | {ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if cv2 is None:
        lines += ["", NO_CV2]
    lines += ["", f"(load average after: {_load()})", ""]
    return "\n".join(lines)


def growth_table(size: int, repeats: int) -> str:
    img, d = _speed_case(size)
    times = {}
    for rmax in (8, 32, 128):
        fns = {n: f for n, f in _renderers(img, d, 2.0 * rmax).items() if n in ("classical", "layered", STACK)}
        times.update({(name, rmax): t for name, t in _median_times(fns, repeats).items()})
    names = list(dict.fromkeys(n for n, _ in times))
    lines = [f"### Growth with the blur radius ({size}², {torch.get_num_threads()} threads, median of {repeats}, "
             "timed round-robin)",
             "", "| renderer | r≤8 | r≤32 | r≤128 | growth 8→128 |", "|---|---|---|---|---|"]
    for n in names:
        t8, t32, t128 = times[n, 8], times[n, 32], times[n, 128]
        lines.append(f"| {n} | {t8:.3f} s | {t32:.3f} s | {t128:.3f} s | {t128 / t8:.2f}× |")
    if _cv2() is None:
        lines += ["", NO_CV2]
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        from diffcamera.core.bokeh import render_bokeh
        gi, gd = img.to(dev), d.to(dev)
        for mode in ("classical", "layered"):
            t = _median_time(lambda: render_bokeh(gi, gd, 0.5, 64.0, mode=mode), repeats, torch.cuda.synchronize)
            lines.append(f"| GPU {mode} ({torch.cuda.get_device_name()}) | | {t * 1000:.1f} ms | | |")
    else:
        lines += ["", "GPU: not measured (no CUDA device here)."]
    lines += ["", f"(load average after: {_load()})", ""]
    return "\n".join(lines)


def gradient_table(size: int, repeats: int) -> str:
    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.bokeh_layered import LayeredOperator
    from diffcamera.core.conventions import srgb_to_linear
    img, d = _speed_case(size)
    K = 64.0
    w = torch.rand_like(img)

    def fwd_bwd(mode):
        x = img.clone().requires_grad_(True)
        (render_bokeh(x, d, 0.5, K, mode=mode) * w).sum().backward()

    coc = K * (d - 0.5)
    lin = srgb_to_linear(img)
    op = LayeredOperator(coc)
    t = _median_times({"cf": lambda: render_bokeh(img, d, 0.5, K, mode="classical"),
                       "cb": lambda: fwd_bwd("classical"),
                       "lf": lambda: render_bokeh(img, d, 0.5, K, mode="layered"),
                       "lb": lambda: fwd_bwd("layered"),
                       "build": lambda: LayeredOperator(coc), "apply": lambda: op(lin),
                       "adj": lambda: op.adjoint(lin), "both": lambda: op.adjoint(op(lin))}, repeats)
    rows = [(f"{mode}: forward + backward (autograd, w.r.t. the image)", t[k + "f"], t[k + "b"])
            for mode, k in (("classical", "c"), ("layered", "l"))]
    build, apply, adj, both, layered_fwd = t["build"], t["apply"], t["adj"], t["both"], t["lf"]
    lines = [f"### Gradients at {size}², radius ≤ 32 px, {torch.get_num_threads()} threads (median of {repeats})", "",
             "| what | forward | with the gradient | ratio (target ≤ 2×) |", "|---|---|---|---|"]
    for name, f, fb in rows:
        lines.append(f"| {name} | {f:.3f} s | {fb:.3f} s | {fb / f:.2f}× |")
    lines += [f"| LayeredOperator(coc): precomputation (once per CoC map) | | {build:.3f} s | |",
              f"| op(x): one application | | {apply:.3f} s | {apply / layered_fwd:.2f}× of render |",
              f"| op.adjoint(y): one adjoint | | {adj:.3f} s | {adj / layered_fwd:.2f}× of render |",
              f"| op.adjoint(op(x)): application + adjoint (a solver iteration) | {layered_fwd:.3f} s | "
              f"{both:.3f} s | {both / layered_fwd:.2f}× |",
              "", f"(load average after: {_load()})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch (and OpenCV) CPU threads; one speed table per value (default: 2 1)")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=("accuracy", "thinlens", "speed", "growth", "gradients"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads[0])
    cv2 = _cv2()
    print(f"# render_bokeh benchmark ({'quick' if args.quick else 'full'}); torch {torch.__version__}, "
          f"OpenCV {cv2.__version__ if cv2 else 'NOT INSTALLED'}, {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average at start "
          f"{_load()} (other processes share the machine: timings are upper bounds)\n")
    if cv2 is None:
        print(NO_CV2 + ".\n")
    sizes = (256, 512) if args.quick else (1024, 2048)
    repeats = 2 if args.quick else 5
    if "accuracy" not in args.skip:
        print(accuracy_table(64 if args.quick else 96), flush=True)
    if "thinlens" not in args.skip:
        print(thin_lens_table(96 if args.quick else 128, (0,) if args.quick else (0, 1, 2)), flush=True)
    if "speed" not in args.skip:
        for threads in args.threads:
            print(speed_table(sizes, threads, repeats), flush=True)
    torch.set_num_threads(args.threads[0])
    if cv2 is not None:
        cv2.setNumThreads(args.threads[0])
    if "growth" not in args.skip:
        print(growth_table(sizes[0], repeats), flush=True)
    if "gradients" not in args.skip:
        print(gradient_table(sizes[0], repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DiffCameraRefocus benchmark: quality, blur estimation and speed of the refocus, side by side in one run (medians).

    python benchmarks/bench_refocus.py                # full run (about 10 minutes on 2 CPU cores)
    python benchmarks/bench_refocus.py --quick        # fewer cases, no 2048² timing (a few minutes)
    python benchmarks/bench_refocus.py --only sensitivity   # one part: quality, sensitivity or speed

Cases (:func:`diffcamera.evaluation.refocus_eval.make_cases`): procedural scenes never used for training, input
focused on one depth extreme and the request on the other (far → near and near → far alternate), input and
truth rendered by the thin-lens reference, true depth given. Prints markdown tables, each followed by the load
average (other processes on the cores slow every column alike):

1. **Quality** at 64² (level 160: blur radius up to 10 px) and 256² (level 64: up to 16 px): copy the input,
   re-blur the input (layered render of the input at the request), physics with the input's true focus and
   blur, physics with them **estimated** (what the node does when ``input_focus`` / ``input_level`` are empty),
   the shipped toy DiT refining the physics estimate (denoise 0.5; 64² only, its training size) and the oracle
   (layered render of the true all-in-focus image). Columns: PSNR, SSIM, PSNR in the region the request puts in
   focus, and its sharpness ratio (1 = as sharp as the truth). Then the per-case median gains the refocus
   issue targets: physics − re-blur ≥ +1.5 dB, sharp region − input ≥ +3 dB, estimated − given ≥ −0.5 dB.
2. **Blur estimation** (:func:`diffcamera.core.physics.estimate_input_blur`): median focus-disparity error and
   relative level error on the thin-lens inputs and on inputs blurred *not* the renderer's way (the classical
   renderer; the gather-and-mix Gaussian-stack method of today's ComfyUI depth-of-field nodes, which looks like
   an AI image's fake bokeh), the thin-lens rows split by scene kind (scenes with depth edges against the
   slanted and ground planes, which only texture can measure), plus the level it reports for an all-in-focus
   input (truth 0), sharp and uniformly soft (Gaussian σ 1 and 2 px: an upscaled photo, a soft text-to-image
   output). Targets: focus error ≤ 0.05, level error ≤ 15 %.
3. **Sensitivity** (true focus given): what telling the solver a wrong input blur costs (``K`` × 0, 0.5, 0.7, 0.85,
   1.2, 1.5; × 0 is no deblurring), against the true blur and against re-blurring; and what noise with 8-bit
   rounding on the input costs (σ 0.01 and 0.03). It shows how exact the blur estimate must be.
4. **Speed**: seconds of one physics refocus (estimation included, and with the blur given) at 256², 1024²
   and 2048² on the set thread count. Target: 1024² ≤ 20 s on 2 threads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep (shared cores; set before torch loads)

import torch  # noqa: E402


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def _median(values):
    v = [x for x in values if x == x]
    return statistics.median(v) if v else float("nan")


def quality(size: int, level: float, n: int, with_toy: bool, log=print) -> dict:
    """Table 1 at one size: returns the per-case scores of every method."""
    from diffcamera.evaluation import refocus_eval as E
    t0 = time.time()
    cases = E.make_cases(n, size=size, level=level)
    base = E.baseline_methods()
    methods = {"copy": base["copy"], "reblur": base["reblur"], "physics (blur given)": base["physics"],
               "physics (blur estimated)": E.physics_estimated,
               "physics (blur estimated, soft depth)": E.physics_estimated_soft_depth}
    if with_toy:
        from diffcamera.core.dit.loading import load_refocus_model
        methods["toy DiT on physics (given)"] = E.dit_method(load_refocus_model("toy"), steps=28, denoise=0.5)
    methods["oracle"] = base["oracle"]
    res = E.evaluate(methods, cases)
    K = cases[0]["K"]
    log(f"\n### Quality at {size}² (level {level:g}: K = {K:.1f} px, blur radius up to {K:.1f} px), {n} cases, "
        f"{time.time() - t0:.0f} s\n")
    log(E.table(res))
    per = {k: v["cases"] for k, v in res.items()}
    gain = lambda a, b, m: _median([x[m] - y[m] for x, y in zip(per[a], per[b])])  # noqa: E731
    gains = [f"physics − re-blur {gain('physics (blur given)', 'reblur', 'psnr'):+.2f} dB (target ≥ +1.5)",
             f"sharp region physics − input {gain('physics (blur given)', 'copy', 'sharp_psnr'):+.2f} dB (target ≥ +3)",
             f"estimated − given {gain('physics (blur estimated)', 'physics (blur given)', 'psnr'):+.2f} dB "
             f"(target ≥ −0.5)",
             f"estimated − re-blur {gain('physics (blur estimated)', 'reblur', 'psnr'):+.2f} dB",
             f"estimated with a soft depth map − given "
             f"{gain('physics (blur estimated, soft depth)', 'physics (blur given)', 'psnr'):+.2f} dB"]
    if with_toy:
        gains.append(f"toy − physics {gain('toy DiT on physics (given)', 'physics (blur given)', 'psnr'):+.2f} dB")
    log(f"\nper-case median gains: {'; '.join(gains)}. {_load()}")
    return {"cases": cases, "scores": per}


def _estimate_errors(cases, render, log_name: str, depth=lambda c: c["disparity"]) -> str:
    from diffcamera.core.physics import estimate_input_blur
    ef, ek = [], []
    for c in cases:
        img = render(c)
        e = estimate_input_blur(img, depth(c))
        ef.append(abs(float(e.focus_disparity[0]) - c["d_in"]))
        ek.append(abs(float(e.K[0]) - c["K"]) / c["K"])
    over = sum(1 for k in ek if k > 0.5)
    return f"| {log_name} | {_median(ef):.3f} | {100 * _median(ek):.0f} % | {over}/{len(cases)} |"


def estimation(cases_by_size: dict, log=print) -> None:
    """Table 2 over the quality cases of every size."""
    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.conventions import K_to_level
    from diffcamera.core.physics import estimate_input_blur
    from diffcamera.evaluation.scoring import gather_and_mix
    t0 = time.time()
    log("\n### Blur estimation (true depth given)\n")
    log("| input | focus-disparity error (median) | level error (median) | level off by > 50 % |")
    log("|---|---|---|---|")
    renders = {
        "thin lens (a real lens)": lambda c: c["input"],
        "classical renderer": lambda c: render_bokeh(c["aif"], c["disparity"], c["d_in"], c["K"], mode="classical"),
        "gather-and-mix Gaussian stack (fake bokeh)":
            lambda c: gather_and_mix(c["aif"], c["disparity"], c["d_in"], c["K"]),
    }
    for size, cases in cases_by_size.items():
        for name, fn in renders.items():
            log(_estimate_errors(cases, fn, f"{name}, {size}²"))
    log("\n| thin-lens input, by scene kind | focus-disparity error (median) | level error (median) | level off by > 50 % |")
    log("|---|---|---|---|")
    for size, cases in cases_by_size.items():
        for kind, what in (("layers", "depth edges"), ("mixed", "depth edges and planes"),
                           ("slanted", "no depth edge: texture only"), ("ground", "no depth edge: texture only")):
            some = [c for c in cases if c["kind"] == kind]
            if some:
                log(_estimate_errors(some, renders["thin lens (a real lens)"], f"{kind} ({what}), {size}²"))
    log("\n| thin-lens input, **soft depth** (edges softened like a depth model's), by scene kind | focus-disparity "
        "error (median) | level error (median) | level off by > 50 % |\n|---|---|---|---|")
    from diffcamera.evaluation.refocus_eval import soft_depth
    lens, soft = renders["thin lens (a real lens)"], lambda c: soft_depth(c["disparity"])  # noqa: E731
    for size, cases in cases_by_size.items():
        log(_estimate_errors(cases, lens, f"all kinds, {size}²", soft))
        for kind in ("layers", "mixed"):
            some = [c for c in cases if c["kind"] == kind]
            if some:
                log(_estimate_errors(some, lens, f"{kind}, {size}²", soft))
    log("\n| all-in-focus input (truth: level 0) | estimated level (median) | (max) | level > 20 |\n|---|---|---|---|")
    from kornia.filters import gaussian_blur2d
    for size, cases in cases_by_size.items():
        for sigma in (0.0, 1.0, 2.0):   # sharp, then uniformly soft (an upscaled photo, a soft text-to-image output)
            soften = (lambda x: x) if sigma == 0 else (  # noqa: E731
                lambda x, s=sigma: gaussian_blur2d(x, (2 * int(3 * s) + 1,) * 2, (s, s), border_type="replicate"))
            levels = [float(estimate_input_blur(soften(c["aif"]), c["disparity"]).level[0]) for c in cases]
            what = "sharp" if sigma == 0 else f"uniformly soft (Gaussian σ {sigma:g} px)"
            log(f"| {size}², {len(cases)} scenes, {what} | {_median(levels):.1f} | {max(levels):.1f} | "
                f"{sum(lv > 20 for lv in levels)}/{len(cases)} |")
    log(f"\n({time.time() - t0:.0f} s; levels are px of blur radius per 1024 px of long side per unit disparity; "
        f"the cases' true level is {K_to_level(next(iter(cases_by_size.values()))[0]['K'], 64, 64):.0f} at 64². {_load()})")


#: Factors on the input's true ``K`` told to the solver in :func:`sensitivity` (0: no deblurring at all).
K_FACTORS = (0.0, 0.5, 0.7, 0.85, 1.2, 1.5)
#: Gaussian noise (sRGB ``0..1``, then 8-bit rounding) added to the input in :func:`sensitivity`.
NOISE_SIGMAS = (0.01, 0.03)


def sensitivity(size: int, level: float, n: int, log=print, cases=None) -> None:
    """Table 4: how much a wrong input blur, and a noisy input, cost the physics refocus (true focus given).

    Per case, the PSNR of physics told ``factor × K`` minus physics told the true ``K``, and minus re-blurring the
    input; then the true blur on the input with noise and 8-bit rounding added (against re-blurring that same noisy
    input). Medians over ``n`` cases of :func:`diffcamera.evaluation.refocus_eval.make_cases` (or the given
    ``cases``: the quality table's, when both run)."""
    from diffcamera.core.physics import refocus_physics
    from diffcamera.evaluation import refocus_eval as E
    t0 = time.time()
    cases = E.make_cases(n, size=size, level=level) if cases is None else cases
    reblur = E.baseline_methods()["reblur"]
    rows = {f"input K × {f:g}" + (" (no deblurring)" if f == 0 else ""): [] for f in K_FACTORS}
    rows.update({f"true K, input + noise σ {s:g} and 8-bit rounding": [] for s in NOISE_SIGMAS})
    g = torch.Generator().manual_seed(0)
    for c in cases:
        run = lambda img, k: E.score(refocus_physics(img, c["disparity"], c["d_req"], c["K"],  # noqa: E731
                                                     input_focus_disparity=c["d_in"], input_K=k).image, c)["psnr"]
        given = run(c["input"], c["K"])
        base = E.score(reblur(c), c)["psnr"]
        for f, name in zip(K_FACTORS, rows):
            p = run(c["input"], f * c["K"])
            rows[name].append((p - given, p - base))
        for s in NOISE_SIGMAS:
            noisy = ((c["input"] + s * torch.randn(c["input"].shape, generator=g)).clamp(0, 1) * 255).round() / 255
            p = run(noisy, c["K"])
            rows[f"true K, input + noise σ {s:g} and 8-bit rounding"].append(
                (p - given, p - E.score(reblur(dict(c, input=noisy)), c)["psnr"]))
    log(f"\n### Sensitivity at {size}² (level {level:g}), {n} cases, true focus given, {time.time() - t0:.0f} s\n")
    log("| told to the solver | PSNR − physics with the true blur (median) | PSNR − re-blur (median) |\n|---|---|---|")
    for name, v in rows.items():
        log(f"| {name} | {_median([a for a, _ in v]):+.2f} dB | {_median([b for _, b in v]):+.2f} dB |")
    log(f"\n(noise rows: re-blur of the same noisy input. {_load()})")


def speed(sizes, repeats: int, log=print) -> None:
    """Table 3 (``repeats`` runs per size, one at 2048² and above)."""
    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.conventions import level_to_K
    from diffcamera.core.physics import refocus_physics
    from diffcamera.evaluation.scenes import make_scene
    log(f"\n### Physics refocus speed ({torch.get_num_threads()} threads, median of {repeats}; one run at 2048²)\n")
    log("| size | blur estimated, s | blur given, s | estimate alone, s |\n|---|---|---|---|")
    from diffcamera.core.physics import estimate_input_blur
    for size in sizes:
        scene = make_scene(5, size=size, kind="mixed")
        aif, d = scene.image.float(), scene.disparity.float()
        K = level_to_K(64.0, size, size)
        d_in, d_req = float(torch.quantile(d.flatten(), 0.1)), float(torch.quantile(d.flatten(), 0.9))
        img = render_bokeh(aif, d, d_in, K, mode="layered")
        times = {"est": [], "given": [], "alone": []}
        for _ in range(repeats if size < 2048 else 1):
            t = time.perf_counter()
            refocus_physics(img, d, d_req, K)
            times["est"].append(time.perf_counter() - t)
            t = time.perf_counter()
            refocus_physics(img, d, d_req, K, input_focus_disparity=d_in, input_K=K)
            times["given"].append(time.perf_counter() - t)
            t = time.perf_counter()
            estimate_input_blur(img, d)
            times["alone"].append(time.perf_counter() - t)
        log(f"| {size}² | {_median(times['est']):.2f} | {_median(times['given']):.2f} | {_median(times['alone']):.2f} |")
    log(f"\n(level 64, input focused at the far 10 % quantile, request at the near 90 %. {_load()})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8/4 cases, 256² and 1024² timing once")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=("quality", "sensitivity", "speed"), help="run one part")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"# DiffCameraRefocus benchmark ({a.threads} threads, torch {torch.__version__}, {_load()})")
    if a.only in (None, "quality"):
        q64 = quality(64, 160.0, 8 if a.quick else 24, with_toy=True)
        q256 = quality(256, 64.0, 4 if a.quick else 12, with_toy=False)
        estimation({64: q64["cases"], 256: q256["cases"]})
    if a.only in (None, "sensitivity"):
        made = {} if a.only == "sensitivity" else {64: q64["cases"], 256: q256["cases"]}
        sensitivity(64, 160.0, 8 if a.quick else 24, cases=made.get(64))
        sensitivity(256, 64.0, 4 if a.quick else 12, cases=made.get(256))
    if a.only in (None, "speed"):
        speed((256, 1024) if a.quick else (256, 1024, 2048), 1 if a.quick else 3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

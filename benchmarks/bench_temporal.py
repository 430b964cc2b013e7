"""Temporal stability of BokehSimulate on video: flicker of a static shot with noisy per-frame depth, and the lag of
a focus pull, with and without ``temporal_smoothing``.

A static procedural scene (exact disparity ``d``) is filmed for ``--frames`` frames. Each frame gets its own depth
estimate, ``d`` plus *independent* noise, as a per-frame monocular estimator gives: a global affine jitter (scale
and offset, std ``--jitter``) and spatially smooth noise (std ``--noise``, Gaussian-blurred white noise), clamped
to 0..1. Each frame's focus is read at a fixed point on that frame's own depth (what FocusPicker does on each
frame), so the focus flickers too. BokehSimulate (the node, layered mode) renders the clip with
``temporal_smoothing`` r = 0 (off), 1, 2, 4. Reported, in 8-bit levels (×255):

* **flicker**: mean absolute frame-to-frame difference ``mean |f[t+1] − f[t]|`` (a static shot's truth is 0);
* **error**: mean absolute difference to the render from the exact depth and focus (what the shot should look like);
* the focus disparity's frame-to-frame std.

Lag: a rack focus (RackFocus schedule, ease-in-out, holds of 8 frames, from the star in front to the textured
block). The filter's own lag: the frame where the smoothed exact pull crosses the middle of the pull, minus the
exact one (a centred window must not delay it), and its largest change to the exact pull; then the same pull read
on the noisy per-frame depth: its largest deviation from the exact pull and its frame-step noise, per r.

Run: ``python benchmarks/bench_temporal.py [--frames 48] [--size 96 144]``. CPU; about a minute on 2 idle cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

import torch
import torch.nn.functional as F

RADII = (0, 1, 2, 4)


def noisy_depths(disparity: torch.Tensor, frames: int, noise: float, jitter: float, seed: int) -> torch.Tensor:
    """``[frames,1,H,W]``: ``disparity`` ``[1,1,H,W]`` with independent per-frame estimation noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = disparity.shape[-2:]
    white = torch.randn(frames, 1, h, w, generator=g)
    k = torch.exp(-0.5 * (torch.arange(-6, 7, dtype=torch.float32) / 2.5) ** 2)
    k = k / k.sum()
    smooth = F.conv2d(F.pad(white, (6, 6, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    smooth = F.conv2d(F.pad(smooth, (0, 0, 6, 6), mode="reflect"), k.view(1, 1, -1, 1))
    smooth = smooth / smooth.std()
    scale = 1.0 + jitter * torch.randn(frames, 1, 1, 1, generator=g)
    offset = jitter * torch.randn(frames, 1, 1, 1, generator=g)
    return (disparity * scale + offset + noise * smooth).clamp(0.0, 1.0)


def crossing(curve: torch.Tensor, level: float) -> float:
    """Fractional frame where a rising curve first reaches ``level``."""
    above = torch.nonzero(curve >= level)
    if not len(above):
        return float("nan")
    i = int(above[0])
    if i == 0:
        return 0.0
    a, b = float(curve[i - 1]), float(curve[i])
    return i - 1 + (level - a) / (b - a)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 144), metavar=("H", "W"))
    parser.add_argument("--noise", type=float, default=0.03, help="std of the smooth per-pixel depth noise")
    parser.add_argument("--jitter", type=float, default=0.02, help="std of the per-frame depth scale and offset")
    parser.add_argument("--level", type=float, default=30.0, help="bokeh_level")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from diffcamera.core import video
    from diffcamera.core.conventions import comfy_to_core, core_to_comfy
    from diffcamera.core.focus import focus_from_point
    from diffcamera.evaluation.scenes import make_scene
    from diffcamera.core.values import DepthMap, Focus
    from diffcamera.nodes.bokeh import BokehSimulate

    t0 = time.perf_counter()
    n = args.frames
    scene = make_scene(seed=3, size=tuple(args.size), kind="mixed")
    image = core_to_comfy(scene.image)  # one still, broadcast over the frames
    truth = scene.disparity
    depths = noisy_depths(truth, n, args.noise, args.jitter, seed=11)
    point = (0.74, 0.58)  # the textured block

    def render(disp, d_f, r):
        focus = Focus(torch.full((len(d_f),), point[0]), torch.full((len(d_f),), point[1]), d_f, ["point"] * len(d_f))
        with contextlib.redirect_stderr(io.StringIO()):  # the node's progress bar
            out = BokehSimulate.execute(image=image, bokeh_level=args.level, depth=DepthMap(disp, source="bench"),
                                        focus=focus, temporal_smoothing=r)
        return comfy_to_core(out.args[0])

    exact_focus = focus_from_point(truth, *point).disparity
    reference = render(truth, exact_focus, 0)  # one frame: what every frame should be
    per_frame_focus = focus_from_point(depths, *point).disparity
    rows = []
    for r in RADII:
        clip = render(depths, per_frame_focus, r)
        d_f = video.smooth_frames(per_frame_focus, r)
        rows.append((r, 255 * video.temporal_flicker(clip), 255 * float((clip - reference).abs().mean()),
                     float((d_f[1:] - d_f[:-1]).std())))

    # the lag of a real focus pull: the filter on the exact pull, then the pull read on the noisy per-frame depth
    star, block = (0.1, 0.75), point
    exact = video.rack_focus(truth, star, block, n, 8, 8, "ease-in-out").disparity
    noisy = video.rack_focus(depths, star, block, n, 8, 8, "ease-in-out").disparity
    lo, hi = float(exact[0]), float(exact[-1])
    mid = 0.5 * (lo + hi)
    sign = 1.0 if hi >= lo else -1.0  # crossing() wants a rising curve
    lag_rows = []
    for r in RADII:
        filtered = video.smooth_frames(exact, r)
        s = video.smooth_frames(noisy, r)
        lag_rows.append((r, crossing(sign * filtered, sign * mid) - crossing(sign * exact, sign * mid),
                         float((filtered - exact).abs().max()), float((s - exact).abs().max()),
                         float((s[1:] - s[:-1] - (exact[1:] - exact[:-1])).std())))

    load = os.getloadavg()
    print(f"**Temporal stability: static {args.size[1]}x{args.size[0]} scene, {n} frames, per-frame depth noise "
          f"{args.noise} (smooth) + jitter {args.jitter}, level {args.level:g}, layered, {args.threads} threads** "
          f"(load average {load[0]:.2f}, {time.perf_counter() - t0:.0f} s)\n")
    print("| temporal_smoothing r | flicker (mean abs frame-to-frame, 8-bit levels) | vs r = 0 | "
          "error vs exact-depth render (8-bit levels) | focus disparity frame-to-frame std |")
    print("|---|---|---|---|---|")
    base = rows[0][1]
    for r, flicker, err, fstd in rows:
        print(f"| {r} | {flicker:.3f} | {flicker / base:.2f}× | {err:.3f} | {fstd:.4f} |")
    print(f"\n**Focus pull** ({n} frames, holds 8 + 8, ease-in-out, disparity {lo:.3f} -> {hi:.3f}; exact midpoint "
          f"at frame {crossing(sign * exact, sign * mid):.2f})\n")
    print("| r | filter lag at the midpoint (frames; + = late) | filter's largest change to the pull (disparity) | "
          "on noisy depth: largest deviation from the exact pull | on noisy depth: frame-step noise (std) |")
    print("|---|---|---|---|---|")
    for r, lag, change, dev, step in lag_rows:
        print(f"| {r} | {lag:+.2f} | {change:.4f} | {dev:.4f} | {step:.4f} |")


if __name__ == "__main__":
    main()

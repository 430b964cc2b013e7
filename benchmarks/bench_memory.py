"""The up-front memory estimates against measured peaks (issue 14).

Nodes refuse work whose estimated peak memory exceeds the device's free memory, so an estimate must not be
below the real peak (else the OOM killer can still take ComfyUI) and should not be far above it (else work that
fits is refused). Each case runs in a fresh subprocess on the CPU, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs the work once and reports ``VmHWM − VmRSS`` (the peak growth), beside the
estimate the node would use:

* ``depth``: :func:`diffcamera.core.depth.estimate_depth_bytes` vs ``estimate_disparity`` (+ preview) with random
  Depth Anything V2 models (the tests' tiny one, and the real **Small** architecture, random weights, offline);
* ``simulate``: :func:`diffcamera.training.simulate.estimate_simulate_bytes` (with the renderer's estimate) vs one
  shard of procedural groups at level 256 (scene generation and four classical renders per group);
* ``train``: the trainer's memory plan (:func:`diffcamera.training.memory.plan`, ``.total``) vs one toy training
  step (forward of both planes, backward, AdamW) at the given size and batch (the plan also counts the weights,
  which the measured growth does not include).

Linux only (``/proc``). Prints a table (MiB) and the load average; GPU numbers are not measured here.
Run: ``python benchmarks/bench_memory.py [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, os, sys
import torch
torch.set_num_threads(1)
kind, args = sys.argv[1], [int(a) for a in sys.argv[2:]]


def rss():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    return out


def start():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return rss()["VmRSS"]


if kind.startswith("depth"):
    from transformers import AutoModelForDepthEstimation, DepthAnythingConfig, Dinov2Config
    from diffcamera.core import depth as D
    res, batch, h, w = args
    if kind == "depth-tiny":
        bb = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=70,
                          patch_size=14, out_indices=[1, 2, 3, 4], out_features=["stage1", "stage2", "stage3", "stage4"],
                          reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                  fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    else:  # Depth Anything V2 Small's architecture
        bb = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518,
                          patch_size=14, out_indices=[3, 6, 9, 12],
                          out_features=["stage3", "stage6", "stage9", "stage12"], reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
                                  fusion_hidden_size=64, head_hidden_size=32, patch_size=14)
    model = AutoModelForDepthEstimation.from_config(cfg).eval()
    image = torch.rand(batch, 3, h, w)
    estimate = D.estimate_depth_bytes(model, batch, batch, h, w, res)
    before = start()
    D.disparity_preview(D.estimate_disparity(model, image, res, batch))
elif kind == "simulate":
    from diffcamera.core.bokeh import estimate_render_bytes
    from diffcamera.evaluation.scenes import make_scene
    from diffcamera.training.simulate import SimulateOptions, build_shard, estimate_simulate_bytes, procedural_sources
    size, groups = args
    opts = SimulateOptions(size=size, variants=groups, level_range=(256.0, 256.0), num_scenes=1, shard_size=64)
    make_scene(0, 32)  # warm the imports
    estimate = estimate_simulate_bytes(size, 1, groups, estimate_render_bytes(1, size, size, "classical",
                                                                               256.0 * size / 1024))
    before = start()
    build_shard(0, procedural_sources(1, opts.scene_kinds, 0), opts)
else:
    from diffcamera.training import trainer as T
    from diffcamera.training.config import TrainConfig
    from diffcamera.training.dataset import PairDataset
    from diffcamera.training.losses import refocus_loss
    size, batch = args
    cfg = TrainConfig.load("toy", {"size": size, "batch_size": batch, "output_dir": "unused"})
    g = torch.Generator().manual_seed(0)
    t = {k: torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, generator=g)
         for k in ("aif", "reference", "target1", "target2", "composite")}
    t["mask"] = torch.randint(0, 2, (batch, 1, size, size), dtype=torch.uint8, generator=g)
    t["disparity"] = torch.rand(batch, 1, size, size, generator=g).half()
    t["scalars"] = torch.tensor([[0.3, 0.3, 0.2, 0.7, 0.7, 0.8, 10.0, 64.0, 0.5, 0.0]] * batch)
    data = PairDataset(tensors=t)
    model = T.build_model(cfg).train()
    params = T.named_trainable(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    from diffcamera.training.memory import plan
    estimate = plan(cfg, "cpu").total
    before = start()
    res = refocus_loss(model, data.batch(list(range(batch))), torch.Generator().manual_seed(1),
                       lambda_stack=cfg.lambda_stack, device=torch.device("cpu"))
    res["loss"].backward()
    opt.step()
print("@@" + json.dumps({"measured": rss()["VmHWM"] - before, "estimate": estimate}))
'''

CASES = [
    ("depth-tiny", (518, 1, 512, 512)),
    ("depth-small", (518, 1, 512, 512)),
    ("depth-small", (518, 4, 512, 512)),
    ("depth-small", (1036, 1, 1024, 1024)),
    ("simulate", (256, 2)),
    ("simulate", (512, 1)),
    ("train", (64, 4)),
    ("train", (128, 4)),
    ("train", (256, 2)),
    ("train", (384, 1)),
]


def run_case(kind, args):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, kind, *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=1800)
    line = [x for x in out.stdout.splitlines() if x.startswith("@@")]
    if out.returncode or not line:
        raise RuntimeError(f"{kind} {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[0][2:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the two smallest cases of each kind only")
    args = ap.parse_args(argv)
    cases = CASES if not args.quick else [CASES[0], CASES[1], CASES[4], CASES[6], CASES[7]]
    print(f"load average: {os.getloadavg()}")
    print(f"{'case':<14} {'args':<22} {'measured MiB':>13} {'estimate MiB':>13} {'ratio':>6}")
    for kind, a in cases:
        r = run_case(kind, a)
        m, e = r["measured"] / 2 ** 20, r["estimate"] / 2 ** 20
        print(f"{kind:<14} {str(a):<22} {m:>13.0f} {e:>13.0f} {e / m:>6.2f}")
    print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One sampling step of DiffCameraRefocus against one step of plain FLUX Kontext editing (one reference image).

Target (issue 6): at 1024×1024 with randomly initialised *full-size* FLUX.1 configs, a refocus step costs
≤ 1.25× a Kontext step. Both sides run the same diffusers ``FluxTransformer2DModel`` forward in one run,
interleaved, medians reported:

* **Kontext**: ``[noisy N ; reference N]`` image tokens + T text tokens, no LoRA (what FLUX Kontext does);
* **refocus, fused**: the same sequence (camera projection added to the reference) with our LoRA merged into the
  weights, as ``load_refocus_model`` runs inference — the camera encoder runs once per image (shown separately,
  amortised over 28 steps);
* **refocus, fused, LoRA unmerged**: the same with peft's separate LoRA matmuls (fp8 storage / training path);
* **refocus, separate**: ``[noisy N ; reference N ; camera N]``, LoRA merged.

FLOPs are counted exactly (``torch.utils.flop_counter``) for the **full-size FLUX.1 config at 1024²** on the meta
device (no memory, no GPU): that ratio is machine-independent and is what the ≤ 1.25× target is judged on here.
Wall-clock times on the CPU (no GPU here) use a small config (inner dim 256, 2 double + 4 single blocks, LoRA rank 16) is timed at
256² and 512² token counts with T = N/8 (FLUX: 512 text tokens for 4096 image tokens) — for tracking the ratio.
With CUDA, the full-size FLUX.1 config (bf16, 1024², T = 512) is timed, plus seconds per image at 28 steps and
peak GPU memory for bf16, fp8 weight storage and group offloading. GPU figures are not measured on the 2-core
CPU machine this was written on.

Run: ``python benchmarks/bench_refocus_step.py [--repeat 5] [--full]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

SMALL = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=64,
             num_attention_heads=4, joint_attention_dim=256, pooled_projection_dim=64, guidance_embeds=True,
             axes_dims_rope=[8, 28, 28])
FULL = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=[16, 56, 56])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(tcfg, layout, lora_rank, device, dtype):
    """A RefocusModel around a random transformer of config ``tcfg`` (no VAE needed for step timing)."""
    from diffusers import FluxTransformer2DModel

    from diffcamera.core.dit.autoencoder import PixelShuffleAutoencoder
    from diffcamera.core.dit.lora import add_lora
    from diffcamera.core.dit.model import RefocusModel
    from diffcamera.core.dit.toy import flux_config
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            t = FluxTransformer2DModel(**tcfg)
    finally:
        torch.set_default_dtype(prev)
    cfg = flux_config("flux1-kontext-dev", condition_layout=layout, lora_rank=0, camera_hidden=128)
    m = RefocusModel(cfg, t, PixelShuffleAutoencoder(8))  # the autoencoder is unused here
    if lora_rank:
        add_lora(m, lora_rank)
    m.to(device)
    m.compute_dtype = dtype
    return m


def step_fns(model, n_side, text_tokens, device, dtype):
    """Callables for one step: (kontext, refocus) on a ``n_side × n_side`` token grid."""
    from diffcamera.core.dit.packing import token_ids
    b = 1
    lat = torch.randn(b, 16, 2 * n_side, 2 * n_side, device=device)
    ref = torch.randn_like(lat)
    px = 16 * n_side
    cam = torch.rand(b, 6, px, px, device=device)
    model.prompt_embeds = torch.randn(1, text_tokens, model.transformer.config.joint_attention_dim, device=device)
    model.pooled_prompt_embeds = torch.randn(1, model.transformer.config.pooled_projection_dim, device=device)
    sigma = torch.tensor([0.5], device=device)
    with torch.no_grad():
        cond, ids = model.condition_tokens(ref, cam)
    from diffcamera.core.dit.packing import pack_latents
    ref_tok = pack_latents(ref)
    ids1 = token_ids(n_side, n_side, 1, device=device)

    def kontext():
        with torch.no_grad(), _base_only(model):
            model.velocity_from_tokens(lat, sigma, ref_tok, ids1, 2.5)

    def refocus_step():
        with torch.no_grad():
            model.velocity_from_tokens(lat, sigma, cond, ids, 2.5)

    def encode():
        with torch.no_grad():
            model.condition_tokens(ref, cam)
    return kontext, refocus_step, encode


class _base_only:
    """Run the plain base transformer (plain Kontext): every peft layer calls only its base layer."""

    def __init__(self, model):
        from diffcamera.core.dit.lora import lora_layers
        self.layers = lora_layers(model)

    def __enter__(self):
        self.saved = [m.forward for m in self.layers]
        for m in self.layers:
            m.forward = m.get_base_layer().forward

    def __exit__(self, *a):
        for m, f in zip(self.layers, self.saved):
            m.forward = f


def flop_rows():
    """Exact FLOPs of one step (meta device): full-size FLUX.1 at 1024² and the small CPU config."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = torch.device("meta")
    rows = []
    for name, tcfg, rank, n_side, text in (("1024² FLUX.1 full", FULL, 32, 64, 512),
                                            ("512² small", SMALL, 16, 32, 128)):
        for layout in ("fused", "separate"):
            m = build(tcfg, layout, rank, meta, torch.bfloat16)
            kontext, ours, enc = step_fns(m, n_side, text, meta, torch.bfloat16)
            flops = []
            for f in (kontext, ours, enc):
                with FlopCounterMode(display=False) as fc:
                    f()
                flops.append(fc.get_total_flops())
            # with the LoRA merged (how inference runs) the fused step IS the Kontext graph
            merged = flops[0] if layout == "fused" else _separate_merged(m, n_side, text)
            rows.append((name, layout, n_side * n_side, text, flops[0] / 1e9, merged / 1e9, flops[1] / 1e9,
                         flops[2] / 1e9, merged / flops[0], flops[1] / flops[0]))
    return rows


def _separate_merged(m, n_side, text):
    """FLOPs of a separate-layout step without LoRA matmuls (= merged)."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = torch.device("meta")
    _, ours, _ = step_fns(m, n_side, text, meta, torch.bfloat16)
    with FlopCounterMode(display=False) as fc, _base_only(m):
        ours()
    return fc.get_total_flops()


def interleaved_medians(fns, repeat, device):
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, f in enumerate(fns):
            _sync(device)
            t = time.perf_counter()
            f()
            _sync(device)
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(t), min(t)) for t in times]


def cpu_rows(repeat):
    torch.set_num_threads(2)
    dev, dt = torch.device("cpu"), torch.float32
    rows = []
    for px in (256, 512):
        n_side = px // 16
        n = n_side * n_side
        text = max(1, n // 8)
        for layout, merged in (("fused", True), ("fused", False), ("separate", True)):
            torch.manual_seed(0)
            m = build(SMALL, layout, 16, dev, dt)
            if merged:
                from diffcamera.core.dit.lora import merge_lora
                merge_lora(m)
            kontext, ours, enc = step_fns(m, n_side, text, dev, dt)
            (tk, tk_min), (to, to_min), (te, _) = interleaved_medians([kontext, ours, enc], repeat, dev)
            rows.append((f"{px}² small (CPU, 2 threads)", layout + ("" if merged else ", LoRA unmerged"), n, text,
                         tk * 1e3, to * 1e3, te * 1e3, to / tk, to_min / tk_min))
    return rows


def gpu_rows(repeat, dry_run=False):
    """Full-size FLUX.1 at 1024² on CUDA in bf16 (``dry_run``: the same code, small config, CPU, 256²)."""
    dev, dt, tcfg, n_side, text = torch.device("cuda"), torch.bfloat16, FULL, 64, 512
    if dry_run:
        dev, dt, tcfg, n_side, text = torch.device("cpu"), torch.float32, SMALL, 16, 32
    rows = []
    from diffcamera.core.dit.lora import merge_lora
    for layout in ("fused", "separate"):
        torch.manual_seed(0)
        m = build(tcfg, layout, 32, dev, dt)
        merge_lora(m)
        kontext, ours, enc = step_fns(m, n_side, text, dev, dt)
        (tk, tk_min), (to, to_min), (te, _) = interleaved_medians([kontext, ours, enc], repeat, dev)
        rows.append((f"{16 * n_side}² {'small (dry run)' if dry_run else 'FLUX.1 full (GPU, bf16)'}", layout,
                     n_side * n_side, text, tk * 1e3, to * 1e3, te * 1e3, to / tk, to_min / tk_min))
        del m
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def gpu_memory_rows(dry_run=False):
    """Seconds per 1024² image (28 steps, fused, LoRA rank 32, random weights and VAE) and peak GPU memory for
    bf16, fp8 weight storage and group offloading (``dry_run``: small config on the CPU, 64², 2 steps)."""
    import json
    import os

    from diffusers import AutoencoderKL

    from diffcamera.core.dit.autoencoder import FluxAutoencoder
    from diffcamera.core.dit.files import CONFIGS
    from diffcamera.core.dit.lora import merge_lora
    from diffcamera.core.dit.memory import apply_memory_options
    from diffcamera.core.dit.sampler import refocus
    from diffcamera.core.values import Focus
    cuda = not dry_run
    dev = torch.device("cuda" if cuda else "cpu")
    tcfg, px, steps, dt = (FULL, 1024, 28, torch.bfloat16) if cuda else (SMALL, 64, 2, torch.float32)
    vcfg = json.load(open(os.path.join(CONFIGS, "flux1-vae", "vae", "config.json")))
    if dry_run:
        vcfg.update(block_out_channels=[8, 8, 8, 8], norm_num_groups=4, layers_per_block=1)
    rows = []
    for storage, offload in (("default", "none"), ("fp8_e4m3fn", "none"), ("default", "group")):
        if cuda:
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        # build where the weights will live: on the GPU unless offloaded (saves host RAM and init time)
        m = build(tcfg, "fused", 32, dev if offload == "none" else torch.device("cpu"), dt)
        vae = AutoencoderKL(**{k: v for k, v in vcfg.items() if not k.startswith("_")})
        m.autoencoder = FluxAutoencoder(vae, 0.3611, 0.1159)
        if storage == "default":
            merge_lora(m)
        apply_memory_options(m, dt, storage, offload, dev)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        img = torch.rand(1, 3, px, px)
        disp = torch.rand(1, 1, px, px)
        t = time.perf_counter()
        refocus(m, img, disp, Focus.from_disparity(0.5), 20.0, steps=steps, guidance=2.5)
        if cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        rows.append((storage, offload, time.perf_counter() - t, peak))
        del m, vae
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--full", action="store_true", help="with CUDA: also seconds/image and peak memory (slow)")
    p.add_argument("--no-time", action="store_true", help="FLOP table only (fast, machine-independent)")
    p.add_argument("--dry-run", action="store_true",
                   help="run the GPU code paths on the CPU with a small config (checks the script, not the numbers)")
    args = p.parse_args(argv)
    print("| config | layout | image tokens N | text tokens | Kontext step GFLOP | refocus step GFLOP (LoRA merged) | "
          "refocus step GFLOP (LoRA unmerged) | camera encode GFLOP (once) | ratio merged | ratio unmerged |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in flop_rows():
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} | {r[7]:.3f} | "
              f"{r[8]:.3f}× | {r[9]:.3f}× |")
    print()
    if args.no_time:
        return
    rows = [] if args.dry_run else cpu_rows(args.repeat)
    if torch.cuda.is_available() or args.dry_run:
        rows += gpu_rows(args.repeat, dry_run=args.dry_run)
    print("| config | layout | image tokens N | text tokens | Kontext step ms | refocus step ms | "
          "camera encode ms (once) | ratio of medians | ratio of minima |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.2f} | {r[7]:.3f}× | {r[8]:.3f}× |")
    print("\ntarget: ≤ 1.25× at 1024² with full-size FLUX.1 configs (FLOP table above; wall-clock "
          + ("GPU rows)" if torch.cuda.is_available() else "unmeasured: no GPU here; CPU times are noisy on a shared "
             "2-core machine)"))
    if (torch.cuda.is_available() and args.full) or args.dry_run:
        print("\n| weight storage | offload | s / 1024² image (28 steps) | peak GPU GiB |\n|---|---|---|---|")
        for s, o, sec, gib in gpu_memory_rows(dry_run=args.dry_run):
            print(f"| {s} | {o} | {sec:.1f} | {gib:.1f} |")


if __name__ == "__main__":
    main()

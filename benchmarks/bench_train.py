"""Training step cost with and without the stacking constraint (issue 7).

Both variants run the same :func:`diffcamera.training.losses.refocus_loss` (two focus planes per group in one
DiT pass) + backward + AdamW step, interleaved in one run, medians reported; the stacking constraint adds one
autoencoder encode of the two-plane composite and an element-wise blend, so its overhead ratio should be
close to 1.

* CPU (always): the toy config of ``training/configs/toy.json`` (1 double + 2 single FLUX blocks, inner dim 256,
  64×64, batch 4 groups = 8 DiT samples).
* CUDA (only when a GPU exists): one LoRA training step of a randomly initialised **full-size** FLUX.1 transformer
  (19 + 38 blocks, rank 32, bf16, gradient checkpointing) + a random FLUX-structured VAE at 512², batch 1 group,
  step time and peak GPU memory. Not measured on the 2-core CPU machine this was written on.

Run: ``python benchmarks/bench_train.py [--repeat 5] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _toy_setup():
    from diffcamera.training.config import TrainConfig
    from diffcamera.training.trainer import build_dataset, build_model
    cfg = TrainConfig.load("toy", {"procedural_scenes": 4, "procedural_variants": 2})
    data = build_dataset(cfg)
    model = build_model(cfg)
    return cfg, data, model


def _step(model, opt, batch, lam, seed, device):
    from diffcamera.training.losses import refocus_loss
    _sync(device)
    t = time.perf_counter()
    c = time.process_time()
    res = refocus_loss(model, batch, torch.Generator().manual_seed(seed), lambda_stack=lam, depth_dropout=0.15,
                       device=device)
    res["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t, time.process_time() - c


def bench_cpu(repeat: int):
    cfg, data, model = _toy_setup()
    model.train()
    params = list(model.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = data.batch(list(range(cfg.batch_size)))
    dev = torch.device("cpu")
    for lam in (0.0, 1.0):  # warm-up
        _step(model, opt, batch, lam, 0, dev)
    times = {0.0: [], 1.0: []}
    for i in range(repeat):
        for lam in (0.0, 1.0):
            times[lam].append(_step(model, opt, batch, lam, i, dev))
    v = statistics.median(t[0] for t in times[0.0])
    s = statistics.median(t[0] for t in times[1.0])
    vc = statistics.median(t[1] for t in times[0.0])
    sc = statistics.median(t[1] for t in times[1.0])
    print(f"\n### Toy training step on the CPU ({torch.get_num_threads()} threads), 64×64, "
          f"batch {cfg.batch_size} groups (= {2 * cfg.batch_size} DiT samples), median of {repeat}\n")
    print("CPU time (process_time) is robust when other processes share the cores; wall time is what you wait.\n")
    print("| loss | wall s/step | steps/s (wall) | CPU s/step |")
    print("|---|---|---|---|")
    print(f"| vanilla (λ = 0) | {v:.3f} | {1 / v:.2f} | {vc:.3f} |")
    print(f"| + stacking constraint (λ = 1) | {s:.3f} | {1 / s:.2f} | {sc:.3f} |")
    print(f"\nstacking-constraint overhead: **{sc / vc:.3f}× CPU time**, {s / v:.3f}× wall time")


def bench_gpu(repeat: int):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from diffcamera.core.dit.autoencoder import FluxAutoencoder
    from diffcamera.core.dit.lora import add_lora
    from diffcamera.core.dit.model import RefocusModel
    from diffcamera.core.dit.toy import flux_config
    from diffcamera.training.simulate import SimulateOptions, simulate_in_memory
    from diffcamera.training.dataset import PairDataset
    dev = torch.device("cuda")
    full = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
    vae_cfg = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                   layers_per_block=2, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
    transformer = FluxTransformer2DModel(**full).to(dev, torch.bfloat16)
    vae = AutoencoderKL(**vae_cfg).to(dev, torch.bfloat16)
    cfg = flux_config("flux1-kontext-dev", lora_rank=0)
    model = RefocusModel(cfg, transformer, FluxAutoencoder(vae, cfg.scaling_factor, cfg.shift_factor)).to(dev)
    model.compute_dtype = torch.bfloat16
    add_lora(model, 32, 32.0)
    transformer.enable_gradient_checkpointing()
    model.train()
    opt = torch.optim.AdamW(list(model.trainable_parameters()), lr=1e-4)
    data = PairDataset(tensors=simulate_in_memory(SimulateOptions(size=512, variants=1, num_scenes=1)))
    batch = data.batch([0])
    rows = []
    for lam in (0.0, 1.0):
        _step(model, opt, batch, lam, 0, dev)
        torch.cuda.reset_peak_memory_stats()
        ts = [_step(model, opt, batch, lam, i, dev)[0] for i in range(repeat)]
        rows.append((lam, statistics.median(ts), torch.cuda.max_memory_allocated() / 2 ** 30))
    print(f"\n### Full-size FLUX.1 LoRA step (random weights, rank 32, bf16, checkpointing), 512², "
          f"1 group = 2 samples, {torch.cuda.get_device_name()}\n")
    print("| loss | s/step | peak GPU memory (GiB) |")
    print("|---|---|---|")
    for lam, t, mem in rows:
        print(f"| {'vanilla' if lam == 0 else '+ stacking'} | {t:.3f} | {mem:.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench_cpu(a.repeat)
    if torch.cuda.is_available():
        bench_gpu(a.repeat)
    else:
        print("\nFull-size FLUX LoRA step at 512² on a GPU: **unmeasured** (no CUDA device on this machine).")


if __name__ == "__main__":
    main()

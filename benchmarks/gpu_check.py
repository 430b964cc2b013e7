"""One command that measures what a GPU can show, and prints ONE markdown table (issue 11, items 4 and 5).

    python benchmarks/gpu_check.py              # on a CUDA machine: about 4-6 min on one H100/H200-class GPU
    python benchmarks/gpu_check.py --out T.md   # also write the table to T.md
    python benchmarks/gpu_check.py --dry-run    # the same code paths on the CPU at tiny sizes (CI runs this)
    diffcamera bench --gpu [--dry-run]          # the same

Rows (each guarded: an out-of-memory error or any other failure prints that row as failed, with the reason, and the
script goes on; a global time guard, 7.5 min by default, skips what would not finish in time):

* the card (``torch.cuda.get_device_name``), torch / diffusers / CUDA versions;
* BokehSimulate (:func:`diffcamera.core.bokeh.render_bokeh`) classical and layered at 1024² and 4096² (bokeh level
  32: blur radius up to 16 px at 1024², 64 px at 4096²), ms, CUDA-synchronised, median of 5 after a warm-up;
* physics refocus at 1024² (``diffcamera.core.physics.refocus_physics``), or "not available in this build";
* a full-size FLUX.1 Kontext [dev]-config transformer with RANDOM weights (``assets/configs/flux1-kontext-dev``, built
  on the meta device, materialised directly where it will live, bf16, no download), the FLUX VAE config (random
  weights) and a random DiffCamera LoRA (rank of ``training/configs/flux_kontext_lora.json``), running
  DiffCameraRefocus's sampler (:func:`diffcamera.core.dit.sampler.refocus`) at 1024², 28 steps: seconds per image and
  peak memory (``torch.cuda.max_memory_allocated``) with bf16 weights, fp8 storage and group offloading
  (:func:`diffcamera.core.dit.memory.apply_memory_options`, as the loader does);
* one sampling step of the fused layout against one plain FLUX Kontext step (one reference image, same tokens; as
  ``benchmarks/bench_refocus_step.py`` counts it), medians of 5;
* one LoRA training step (:func:`diffcamera.training.losses.refocus_loss` on a synthetic batch of one scene group =
  two focus planes, AdamW on the LoRA, gradient checkpointing, bf16 autocast; prepared by
  :func:`diffcamera.core.dit.memory.prepare_training` as the trainer does) at 512² and 1024², bf16 and fp8 base:
  seconds, peak memory, and the memory plan's estimate (:func:`diffcamera.core.dit.memory.estimate_training_bytes`)
  beside it.

Rows that cannot fit the card (estimated before anything is allocated) are skipped with the estimate, so the script
also runs on 24 GB cards. ``--dry-run`` runs the very same functions on the CPU with the tiny FLUX config
(``tests/tiny_dit.py``), 64 px, 2 steps: it checks the script, its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 2 ** 30


def _sibling(name: str):
    """A module of this folder loaded by path (this script also runs as ``diffcamera bench --gpu``)."""
    key = f"diffcamera_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(HERE, f"{name}.py"))
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


@dataclass
class Plan:
    """Sizes of one run: the GPU run, or the tiny CPU dry run (same code paths)."""

    dry_run: bool
    device: torch.device
    dtype: torch.dtype = torch.bfloat16
    bokeh_sizes: Tuple[int, ...] = (1024, 4096)
    bokeh_repeats: int = 5
    physics_size: int = 1024
    refocus_size: int = 1024
    steps: int = 28
    step_repeats: int = 5
    train_sizes: Tuple[int, ...] = (512, 1024)
    train_steps: int = 3  # the first is a warm-up
    budget_s: float = 450.0
    offload_row_s: float = 100.0  # the group-offloading refocus stops after this and extrapolates
    transformer: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    lora_rank: int = 32
    text_tokens: int = 512

    @classmethod
    def make(cls, dry_run: bool, budget_s: float) -> "Plan":
        from diffcamera.core.dit.memory import shipped_config
        from diffcamera.training.config import TrainConfig
        rank = int(TrainConfig.load("flux_kontext_lora").model.get("lora_rank", 32))
        if not dry_run:
            return cls(False, torch.device("cuda"), transformer=shipped_config("flux1-kontext-dev/transformer"),
                       vae=shipped_config("flux1-vae/vae"), lora_rank=rank, budget_s=budget_s)
        import sys
        from diffcamera.core.dit.model import TOY_TEXT_TOKENS
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from tiny_dit import TINY_FLUX_TRANSFORMER, TINY_FLUX_VAE   # the dry run uses the tests' tiny FLUX
        vae = {k: v for k, v in TINY_FLUX_VAE.items() if k != "kind"}
        return cls(True, torch.device("cpu"), bokeh_sizes=(64, 128), bokeh_repeats=2, physics_size=64,
                   refocus_size=64, steps=2, step_repeats=2, train_sizes=(32, 64), train_steps=2,
                   budget_s=budget_s, offload_row_s=60.0, transformer=dict(TINY_FLUX_TRANSFORMER), vae=vae,
                   lora_rank=4, text_tokens=TOY_TEXT_TOKENS)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


class Skip(Exception):
    """A row that is not run (does not fit, time guard, not in this build): printed with its reason."""


class Rows:
    """The table: every row runs guarded; failures and skips are printed as such."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.rows: List[Tuple[str, str, str, str]] = []
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.plan.budget_s - self.elapsed()

    def add(self, label: str, value: str, peak: str = "", notes: str = "") -> None:
        self.rows.append((label, value, peak, notes))
        print(f"  {label}: {value} {peak} {notes}".rstrip(), file=sys.stderr, flush=True)

    def run(self, label: str, fn: Callable[[], Tuple[str, str, str]], reserve_s: float = 5.0) -> None:
        """Run ``fn() -> (value, peak, notes)`` unless fewer than ``reserve_s`` seconds of the budget are left."""
        from diffcamera.core.dit.memory import is_oom
        if self.left() < reserve_s:
            self.add(label, "skipped: time guard", "", f"{self.elapsed():.0f} s of the {self.plan.budget_s:.0f} s "
                     "budget used")
            return
        _free(self.plan)  # what earlier rows left (reference cycles of hooked modules) goes before this one measures
        try:
            self.add(label, *fn())
        except Skip as exc:
            self.add(label, str(exc))
        except Exception as exc:  # noqa: BLE001 - every row is guarded; the reason is printed
            if is_oom(exc):
                self.add(label, "failed: out of memory", _peak(self.plan), _short(exc))
            else:
                self.add(label, f"failed: {type(exc).__name__}", "", _short(exc))
        finally:
            _free(self.plan)

    def table(self) -> str:
        lines = ["| measurement | result | peak GPU memory | notes |", "|---|---|---|---|"]
        for r in self.rows:
            lines.append("| " + " | ".join(x.replace("|", "/") for x in r) + " |")
        return "\n".join(lines)


def _short(exc: BaseException, n: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _sync(plan: Plan) -> None:
    if plan.cuda:
        torch.cuda.synchronize()


def _free(plan: Plan) -> None:
    gc.collect()
    if plan.cuda:
        torch.cuda.empty_cache()


def _reset_peak(plan: Plan) -> None:
    _sync(plan)
    if plan.cuda:
        torch.cuda.reset_peak_memory_stats()


def _peak(plan: Plan) -> str:
    if not plan.cuda:
        return "– (CPU)"
    return _size(torch.cuda.max_memory_allocated())


def _size(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 4 else f"{n / 2 ** 20:.1f} MiB"


def _gpu_free(plan: Plan) -> Optional[int]:
    return int(torch.cuda.mem_get_info()[0]) if plan.cuda else None


def _host_free() -> Optional[int]:
    from diffcamera.training.memory import free_bytes
    return free_bytes("cpu")


def _median_ms(plan: Plan, fn: Callable[[], object], repeats: int) -> float:
    fn()
    _sync(plan)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(plan)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def _scene(size: int, device, seed: int = 0):
    """A random image and a smooth random disparity ``[1,3,S,S]`` / ``[1,1,S,S]`` on ``device``."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(size, size), mode="bilinear")
    img = (img + 0.1 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)
    disp = F.interpolate(torch.rand(1, 1, 6, 6, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0, 1)
    return img.to(device), disp.to(device)


# ------------------------------------------------------------------------------------------ BokehSimulate
def bokeh_rows(rows: Rows) -> None:
    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.conventions import level_to_K
    plan = rows.plan
    level = 32.0
    for size in plan.bokeh_sizes:
        for mode in ("classical", "layered"):
            def fn(size=size, mode=mode):
                img, disp = _scene(size, plan.device)
                K = level_to_K(level, size, size)
                _reset_peak(plan)
                ms = _median_ms(plan, lambda: render_bokeh(img, disp, 0.5, K, mode=mode), plan.bokeh_repeats)
                return (f"{ms:.1f} ms", _peak(plan), f"median of {plan.bokeh_repeats} after a warm-up; level "
                        f"{level:g} (radius ≤ {K * 0.5:.0f} px)")
            rows.run(f"BokehSimulate {mode} {size}²", fn, reserve_s=20.0 if size > 1024 else 5.0)


# ------------------------------------------------------------------------------------------ physics refocus
def physics_row(rows: Rows) -> None:
    plan = rows.plan

    def fn():
        try:
            from diffcamera.core.physics import refocus_physics
        except ImportError as exc:
            raise Skip("not available in this build") from exc
        from diffcamera.core.bokeh import render_bokeh
        from diffcamera.core.conventions import level_to_K
        size = plan.physics_size
        aif, disp = _scene(size, plan.device, seed=1)
        K = level_to_K(32.0, size, size)
        blurred = render_bokeh(aif, disp, 0.8, K, mode="layered")
        small = max(32, size // 8)
        s_img, s_disp = _scene(small, plan.device, seed=2)
        refocus_physics(s_img, s_disp, 0.2, K * small / size, input_focus_disparity=0.8, input_K=K * small / size)
        _reset_peak(plan)
        t = time.perf_counter()
        out = refocus_physics(blurred, disp, 0.2, K, input_focus_disparity=0.8, input_K=K)
        _sync(plan)
        sec = time.perf_counter() - t
        if tuple(out.image.shape) != tuple(blurred.shape):
            raise RuntimeError(f"refocus_physics returned {tuple(out.image.shape)} for {tuple(blurred.shape)}")
        return f"{sec:.2f} s", _peak(plan), "one run after a small warm-up; layered input focused at 0.8 -> 0.2"
    rows.run(f"physics refocus {plan.physics_size}²", fn, reserve_s=30.0)


# ------------------------------------------------------------------------------------------ the FLUX model
def _init_(t: torch.Tensor, name: str, g: torch.Generator) -> None:
    """Random init in place: biases 0, vectors (norm scales) 1, matrices N(0, (0.5/sqrt(fan_in))²)."""
    with torch.no_grad():
        if name.endswith("bias"):
            t.zero_()
        elif t.dim() < 2:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.5 / math.sqrt(math.prod(t.shape[1:])), generator=g)


def materialise(module: torch.nn.Module, device: torch.device, seed: int = 0) -> None:
    """Give every meta-device parameter/buffer of ``module`` real storage on ``device`` (same dtype), randomly
    initialised there, one tensor at a time (no second full-size copy anywhere)."""
    g = torch.Generator(device=device).manual_seed(seed)
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_meta:
                new = torch.empty(p.shape, dtype=p.dtype, device=device)
                _init_(new, name, g)
                mod._parameters[name] = torch.nn.Parameter(new, requires_grad=p.requires_grad)
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_meta:
                mod._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device=device)


def _weights_bytes(plan: Plan, storage: str) -> int:
    from diffcamera.core.dit.memory import count_parameters
    c = count_parameters(_model_config(plan), plan.transformer, plan.vae, weight_dtype=plan.dtype, storage=storage)
    return c.base_bytes + c.trainable * 4 + c.vae * 2


def _model_config(plan: Plan):
    from diffcamera.core.dit.toy import flux_config
    return flux_config("flux1-kontext-dev", lora_rank=plan.lora_rank, lora_alpha=float(plan.lora_rank),
                       trained_size=plan.refocus_size)


def build_model(plan: Plan, where: torch.device, seed: int = 0):
    """A RefocusModel: full-size FLUX config built on the meta device, a random LoRA, then materialised on ``where``
    in ``plan.dtype``; the VAE (random) on ``plan.device``. Returns it un-placed (the caller applies memory options)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from diffcamera.core.dit.autoencoder import FluxAutoencoder
    from diffcamera.core.dit.lora import add_lora
    from diffcamera.core.dit.model import RefocusModel
    cfg = _model_config(plan).replace(lora_rank=0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(plan.dtype)
    try:
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(**plan.transformer)
        with torch.device(plan.device):
            torch.manual_seed(seed)
            vae = AutoencoderKL(**plan.vae)
    finally:
        torch.set_default_dtype(prev)
    model = RefocusModel(cfg, transformer, FluxAutoencoder(vae, cfg.scaling_factor, cfg.shift_factor))
    add_lora(model, plan.lora_rank, float(plan.lora_rank))
    materialise(model.transformer, where, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a "trained" camera encoder (its last layer starts at zero)
        for p in model.camera_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.prompt_embeds = torch.randn(1, plan.text_tokens, int(plan.transformer["joint_attention_dim"]), generator=g)
    model.pooled_prompt_embeds = torch.randn(1, int(plan.transformer["pooled_projection_dim"]), generator=g)
    model.compute_dtype = plan.dtype
    return model


def _where(plan: Plan, need: int) -> torch.device:
    """Materialise on the GPU when the bf16 weights fit there with room to spare, else in host memory."""
    free = _gpu_free(plan)
    if free is None or free > need + 4 * GiB:
        return plan.device
    host = _host_free()
    if host is not None and host < need + 4 * GiB:
        raise Skip(f"skipped: needs {need / GiB:.1f} GiB to build in bf16; {free / GiB:.1f} GiB GPU and "
                   f"{host / GiB:.1f} GiB host memory free")
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------ refocus rows
class _Deadline(Exception):
    pass


def refocus_rows(rows: Rows, settings=(("default", "none"), ("fp8_e4m3fn", "none"))) -> None:
    from diffcamera.core.conventions import level_to_K
    from diffcamera.core.dit.lora import merge_lora
    from diffcamera.core.dit.memory import apply_memory_options
    from diffcamera.core.dit.sampler import refocus
    from diffcamera.core.values import Focus
    plan = rows.plan
    px, steps = plan.refocus_size, plan.steps
    bf16_bytes = _weights_bytes(plan, "default")
    kept = {}

    for storage, offload in settings:
        label = f"refocus {px}², {steps} steps, " + {"default": "bf16", "fp8_e4m3fn": "fp8 storage"}[storage] \
            + (", group offload" if offload == "group" else "")

        def fn(storage=storage, offload=offload):
            on_gpu = _weights_bytes(plan, storage) if offload == "none" else 0
            free = _gpu_free(plan)
            if free is not None and on_gpu + 3 * GiB > free:
                raise Skip(f"skipped: needs ≈ {(on_gpu + 3 * GiB) / GiB:.1f} GiB (weights {on_gpu / GiB:.1f} GiB "
                           f"+ 3 GiB for activations and the VAE); {free / GiB:.1f} GiB free")
            if offload == "group":
                host = _host_free()
                if host is not None and host < 2 * bf16_bytes + 6 * GiB:
                    raise Skip(f"skipped: group offloading keeps the bf16 weights ({bf16_bytes / GiB:.1f} GiB, and a "
                               f"pinned copy while it sets up) in host memory; {host / GiB:.1f} GiB free")
            t_build = time.perf_counter()
            model = build_model(plan, _where(plan, bf16_bytes))
            if storage == "default":
                merge_lora(model)  # as the loader does for inference: a step then costs a plain FLUX step
            if offload != "none":  # weights live in host memory; the hooks bring one block at a time
                model.transformer.to("cpu")
                _free(plan)
            apply_memory_options(model, plan.dtype, storage, offload, plan.device)
            model.eval()
            build_s = time.perf_counter() - t_build
            img, disp = _scene(px, "cpu", seed=3)
            K = level_to_K(32.0, px, px)
            focus = Focus.from_disparity(0.3)
            refocus(model, img, disp, focus, K, steps=1, guidance=2.5)  # warm-up (kernels, VAE)
            _reset_peak(plan)
            marks = []
            limit = time.perf_counter() + min(plan.offload_row_s if offload != "none" else 1e9, rows.left() - 15)

            def cb(done, total, _preview):
                _sync(plan)
                marks.append(time.perf_counter())
                if time.perf_counter() > limit and done < total:
                    raise _Deadline()
            t = time.perf_counter()
            try:
                refocus(model, img, disp, focus, K, steps=steps, guidance=2.5, callback=cb)
                _sync(plan)
                sec, note = time.perf_counter() - t, ""
            except _Deadline:
                per_step = (marks[-1] - marks[0]) / max(1, len(marks) - 1)
                sec = (marks[0] - t) + per_step * (steps - 1)
                note = f"extrapolated from {len(marks)} of {steps} steps (VAE decode not included); "
            peak = _peak(plan)
            if storage == "default" and offload == "none":
                kept["model"] = model
            del model
            return (f"{sec:.1f} s / image", peak, f"{note}build {build_s:.0f} s; fused layout, LoRA rank "
                    f"{plan.lora_rank}" + (" merged" if storage == "default" else " unmerged (fp8 keeps it apart)"))
        rows.run(label, fn, reserve_s=60.0)
        if storage == "default" and offload == "none":
            step_rows(rows, kept.pop("model", None))


def step_rows(rows: Rows, model) -> None:
    """Kontext step vs fused refocus step on the bf16 model (interleaved medians, as bench_refocus_step)."""
    plan = rows.plan
    n_side = plan.refocus_size // 16
    res = {}

    def fn():
        if model is None:
            raise Skip("skipped: needs the bf16 model of the row above")
        bench = _sibling("bench_refocus_step")
        kontext, ours, _enc = bench.step_fns(model, n_side, plan.text_tokens, plan.device, plan.dtype)
        _reset_peak(plan)
        (tk, _), (to, _) = bench.interleaved_medians([kontext, ours], plan.step_repeats, plan.device)
        res["ratio"] = to / tk
        res["ours"] = to
        return (f"{tk * 1e3:.1f} ms", _peak(plan), f"median of {plan.step_repeats}; [noisy ; reference] = "
                f"{2 * n_side * n_side} image + {plan.text_tokens} text tokens, base weights only")
    rows.run(f"step: FLUX Kontext, one reference image, {plan.refocus_size}²", fn, reserve_s=20.0)

    def fn2():
        if "ratio" not in res:
            raise Skip("skipped: the Kontext step did not run")
        return (f"{res['ours'] * 1e3:.1f} ms", "", f"**{res['ratio']:.3f}×** the Kontext step (interleaved, same "
                "run); fused layout, LoRA merged, camera encoding once per image not included")
    rows.run(f"step: DiffCameraRefocus fused, {plan.refocus_size}²", fn2, reserve_s=0.0)


# ------------------------------------------------------------------------------------------ training rows
def train_rows(rows: Rows) -> None:
    from diffcamera.core.dit.memory import estimate_training_bytes, prepare_training
    from diffcamera.training.dataset import synthetic_batch
    from diffcamera.training.losses import refocus_loss
    plan = rows.plan
    bf16_bytes = _weights_bytes(plan, "default")
    for storage in ("default", "fp8_e4m3fn"):
        state = {}
        for size in plan.train_sizes:
            label = f"train step {size}², " + ("bf16 base" if storage == "default" else "fp8 base") \
                + ", checkpointing"

            def fn(size=size, storage=storage):
                cfg = _model_config(plan)
                est = estimate_training_bytes(cfg, size, 1, transformer_config=plan.transformer, vae_config=plan.vae,
                                              weight_dtype=plan.dtype, mixed_precision=True,
                                              device_type=plan.device.type, storage=storage,
                                              gradient_checkpointing=True, text_tokens=plan.text_tokens)
                est_txt = f"memory plan estimate {_size(est.total - est.reserve)} (+ {_size(est.reserve)} reserve)"
                free = _gpu_free(plan)
                if "model" not in state and free is not None and est.total > free:
                    raise Skip(f"skipped: {est_txt} > {free / GiB:.1f} GiB free")
                if "model" not in state:
                    model = build_model(plan, _where(plan, bf16_bytes))
                    prepare_training(model, storage=storage, gradient_checkpointing=True, mixed_precision=True)
                    model.to(plan.device)
                    params = [p for p in model.parameters() if p.requires_grad]
                    state.update(model=model, params=params, opt=torch.optim.AdamW(params, lr=1e-4))
                elif free is not None and est.total - est.persistent > free:
                    raise Skip(f"skipped: {est_txt}; {free / GiB:.1f} GiB free besides the model")
                model, params, opt = state["model"], state["params"], state["opt"]
                gen = torch.Generator().manual_seed(size)
                batch = synthetic_batch(1, size, gen)
                times = []
                for i in range(plan.train_steps):
                    if i == 1:
                        _reset_peak(plan)
                    _sync(plan)
                    t = time.perf_counter()
                    with torch.autocast(plan.device.type, dtype=plan.dtype):
                        res = refocus_loss(model, batch, gen, lambda_stack=1.0, depth_dropout=0.15,
                                           device=plan.device)
                        res["loss"].backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    _sync(plan)
                    times.append(time.perf_counter() - t)
                    if not torch.isfinite(res["loss"]):
                        raise RuntimeError(f"loss is {float(res['loss'])}")
                    if i == 0 and rows.left() < 10:
                        break
                lora_dt = {str(p.dtype).replace("torch.", "") for p in params}
                timing = (f"median of {len(times) - 1} after a warm-up" if len(times) > 1 else
                          "the warm-up step only (time guard; peak not reset)")
                sec = statistics.median(times[1:]) if len(times) > 1 else times[0]
                return (f"{sec:.2f} s / step", _peak(plan), f"{est_txt}; {timing}; 1 group = 2 planes; LoRA "
                        f"{'/'.join(sorted(lora_dt))}, AdamW")
            rows.run(label, fn, reserve_s=40.0)
        state.clear()
        _free(plan)


# ------------------------------------------------------------------------------------------ main
def header_rows(rows: Rows) -> None:
    import diffusers
    plan = rows.plan
    if plan.cuda:
        props = torch.cuda.get_device_properties(0)
        rows.add("card", torch.cuda.get_device_name(0), f"{props.total_memory / GiB:.1f} GiB total",
                 f"{_gpu_free(plan) / GiB:.1f} GiB free at start")
    else:
        rows.add("card", "none: dry run on the CPU", "", "tiny FLUX config, 64 px, 2 steps: checks the code paths, "
                 "no number here is a GPU figure")
    cuda = torch.version.cuda or "no CUDA build"
    rows.add("versions", f"torch {torch.__version__}, diffusers {diffusers.__version__}", "", f"CUDA {cuda}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (CI): the code paths, not numbers")
    p.add_argument("--budget", type=float, default=None, help="time guard in seconds (default 450 = 7.5 min)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the table to FILE (markdown; an existing "
                   "file is never replaced)")
    args = p.parse_args(argv)
    if args.out and os.path.exists(args.out):
        print(f"gpu_check: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    plan = Plan.make(args.dry_run, args.budget if args.budget is not None else (300.0 if args.dry_run else 450.0))
    torch.manual_seed(0)
    rows = Rows(plan)
    print(f"gpu_check: {'dry run (CPU)' if plan.dry_run else 'GPU run'} started", file=sys.stderr, flush=True)
    header_rows(rows)
    bokeh_rows(rows)
    physics_row(rows)
    refocus_rows(rows)
    train_rows(rows)
    refocus_rows(rows, (("default", "group"),))  # last: the slowest, it extrapolates when time runs short
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows.add("total time", f"{rows.elapsed():.0f} s", "", f"time guard {plan.budget_s:.0f} s; load average {load:.2f}")
    title = "dry run on the CPU (code paths only)" if plan.dry_run else torch.cuda.get_device_name(0)
    text = f"### DiffCamera GPU check: {title}\n\n{rows.table()}\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "x", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

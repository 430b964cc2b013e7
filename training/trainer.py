"""The refocus trainer (``diffcamera train CONFIG``): LoRA (or full toy) training with the stacking constraint.

One optimiser step = ``grad_accum`` micro-batches of ``batch_size`` scene groups per process; each group
trains both of its focus planes (:func:`diffcamera.training.losses.refocus_loss`). AdamW on
``model.trainable_parameters()`` (peft LoRA on the DiT with the config's targets/rank/alpha, or the whole toy
transformer when ``lora_rank == 0``, plus the camera encoder), linear warm-up then constant or cosine LR,
gradient clipping, gradient checkpointing on the DiT blocks, bf16 autocast on CUDA.

Multi-GPU runs only through `accelerate` (``accelerate launch -m diffcamera train CONFIG``): the model is
prepared by ``Accelerator`` (DDP), each process takes its own slice of the deterministic sample order, and
only the main process writes checkpoints, logs and the LoRA.

Determinism and exact resume: every random draw of step ``s`` (data indices, noise, timesteps, depth
dropout) comes from generators seeded with ``(seed, s, micro-batch, process)``, so a run resumed from the
checkpoint of step ``s`` repeats exactly what an uninterrupted run does after step ``s``; the checkpoint
also holds the weights, AdamW moments, scheduler state and global RNG states (:mod:`.checkpoint`).

Outputs in ``output_dir``: ``config.json``, ``loss.jsonl`` (one JSON line per logged step: step, loss, rf,
stack, lr, seconds), ``checkpoints/``, ``samples/step_XXXXXXX.png`` (refocus previews) and the final
``refocus_lora.safetensors`` (+ ``.json``) written by :func:`diffcamera.core.dit.lora.save_refocus_lora`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from ..core import safe_paths
from ..core.dit.memory import prepare_training
from .checkpoint import latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from .config import TrainConfig
from .dataset import PairDataset, sample_indices
from .losses import refocus_loss
from .memory import check_fits

LORA_NAME = "refocus_lora.safetensors"
MODEL_NAME = "refocus_model.safetensors"


@dataclass
class TrainResult:
    """What a finished (or interrupted) run produced."""

    output_dir: str
    lora_path: Optional[str]
    steps_done: int
    losses: List[Dict]
    checkpoint: Optional[str]
    seconds: float
    interrupted: bool = False


class _Velocity(torch.nn.Module):
    """Wraps ``model.velocity`` as ``forward`` so ``Accelerator.prepare`` (DDP) sees the calls."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.velocity(*args, **kwargs)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    blob = f"train:{seed}:{step}:{micro}:{rank}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------ builders
def build_model(config: TrainConfig):
    """The :class:`~diffcamera.core.dit.model.RefocusModel` the config asks for (fresh weights/LoRA).

    A FLUX base is loaded into host memory in the compute dtype (bf16 on CUDA): :func:`train` stores it in fp8 there
    when ``base_storage`` says so (after the LoRA exists) and only then moves it to the GPU.
    """
    target = config.refocus_config()
    if config.model_kind == "toy" or (not config.base_path and target.transformer is not None):
        from ..core.dit.model import build_from_config   # the toy, or a FLUX architecture of its own size (tests)
        model = build_from_config(target, seed=config.seed)
    else:
        if not config.base_path:
            raise ValueError("model_kind 'flux' needs base_path: a local FLUX.1 Kontext [dev] / FLUX.1 [dev] "
                             "transformer (diffusers folder or single file); set it in the config or with "
                             "--set base_path=PATH")
        from ..core.dit import loading
        from ..core.dit.lora import add_lora
        dtype = "bf16" if torch.cuda.is_available() else "fp32"
        model = loading.load_refocus_model(config.base_path, vae=config.vae_path, family=config.model.get("family"),
                                           dtype=dtype, device="cpu")
        target = config.refocus_config(family=model.config.family)
        model.adopt_conditions(target)
        add_lora(model, target.lora_rank, target.lora_alpha, target.lora_targets)
    if config.init_lora:
        from ..core.dit.lora import load_refocus_lora
        load_refocus_lora(model, config.init_lora)
    return model


def procedural_options(config: TrainConfig):
    """The :class:`~diffcamera.training.simulate.SimulateOptions` of the config's procedural data (``dataset:
    "procedural"``); ``diffcamera simulate`` with these options writes the same groups to a folder."""
    from .simulate import SimulateOptions
    return SimulateOptions(size=config.size, variants=config.procedural_variants, level_range=tuple(config.level_range),
                           seed=config.procedural_seed, num_scenes=config.procedural_scenes,
                           scene_kinds=tuple(config.procedural_kinds), scene_seed=config.procedural_seed,
                           shard_size=64, reference_renderer=config.reference_renderer)


def build_dataset(config: TrainConfig, callback=None) -> PairDataset:
    """The training groups: a simulated folder, or procedural scenes simulated in memory."""
    if config.dataset == "procedural":
        from .simulate import simulate_in_memory
        return PairDataset(tensors=simulate_in_memory(procedural_options(config), callback=callback))
    ds = PairDataset(folder=config.dataset)
    if ds.size != config.size:
        raise ValueError(f"dataset {config.dataset!r} was simulated at {ds.size} px but the config says size "
                         f"{config.size}; set \"size\": {ds.size} or simulate again")
    return ds


def lr_lambda_for(config: TrainConfig) -> Callable[[int], float]:
    warm, total, kind = config.warmup_steps, config.steps, config.lr_schedule

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0
    return f


def named_trainable(model) -> Dict[str, torch.nn.Parameter]:
    ids = {id(p) for p in model.trainable_parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


# ------------------------------------------------------------------------------------------ logging
def _read_log(path: str, upto: Optional[int] = None) -> List[Dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if upto is None or rec["step"] <= upto:
                out.append(rec)
    return out


def _rewrite_log(path: str, records: List[Dict]) -> None:
    with safe_paths.atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")


def loss_curve_image(records: List[Dict], width: int = 512, height: int = 256) -> torch.Tensor:
    """A plain loss-curve plot ``[1,3,H,W]`` (0..1): total loss (black), RF (blue), stacking (red), log-y."""
    img = torch.ones(3, height, width)
    if not records:
        return img.unsqueeze(0)
    pad = 12
    series = [("loss", (0.0, 0.0, 0.0)), ("rf", (0.1, 0.3, 0.9)), ("stack", (0.85, 0.15, 0.1))]
    vals = [max(float(r[k]), 1e-8) for r in records for k, _ in series if r.get(k) is not None and float(r[k]) > 0]
    if not vals:  # every loss exactly zero (a model that already reproduces its targets): an empty plot
        return img.unsqueeze(0)
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    hi = hi if hi > lo else lo + 1.0
    steps = [r["step"] for r in records]
    s0, s1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    img[:, height - pad, pad:width - pad] = 0.6
    img[:, pad:height - pad, pad] = 0.6
    for key, colour in series:
        pts = [(r["step"], float(r[key])) for r in records if r.get(key) is not None and float(r[key]) > 0]
        prev = None
        for s, v in pts:
            x = pad + (s - s0) / (s1 - s0) * (width - 2 * pad - 1)
            y = height - pad - (math.log10(v) - lo) / (hi - lo) * (height - 2 * pad - 1)
            if prev is not None:
                n = int(max(abs(x - prev[0]), abs(y - prev[1]))) + 1
                for t in torch.linspace(0, 1, n + 1).tolist():
                    xi = int(round(prev[0] + t * (x - prev[0])))
                    yi = int(round(prev[1] + t * (y - prev[1])))
                    if 0 <= xi < width and 0 <= yi < height:
                        img[:, yi, xi] = torch.tensor(colour)
            prev = (x, y)
    return img.unsqueeze(0)


def save_png(image: torch.Tensor, path: str) -> None:
    """``[1,3,H,W]`` 0..1 -> PNG (atomic)."""
    from PIL import Image
    arr = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    with safe_paths.atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def sample_preview(model, size: int, steps: int = 8) -> torch.Tensor:
    """Refocus a fixed unseen procedural scene, rendered focused in the middle, to a near and a far plane with the
    refocus pipeline (physics, then the model): ``[1,3,size,4·size]`` (input | near-focus output | far-focus output |
    the true all-in-focus image)."""
    from ..core.bokeh import render_bokeh
    from ..core.conventions import level_to_K
    from ..core.pipeline import RefocusPipeline
    from ..evaluation.scenes import make_scene
    from ..core.values import Focus
    scene = make_scene(987_654, size=size, kind="layers")
    disp = scene.disparity.float()
    K = level_to_K(64.0, size, size)
    d_in = float(torch.quantile(disp.flatten(), 0.5))
    image = render_bokeh(scene.image.float(), disp, d_in, K, mode="layered")
    pipe = RefocusPipeline(model)
    outs = [image]
    for q in (0.9, 0.1):
        d = float(torch.quantile(disp.flatten(), q))
        outs.append(pipe(image, disp, Focus.from_disparity(d), K, input_focus_disparity=d_in, input_K=K,
                         steps=steps, seed=0).image)
    outs.append(scene.image.float())
    return torch.cat([o.cpu().clamp(0, 1) for o in outs], dim=-1)


# ------------------------------------------------------------------------------------------ training
def check_run_folder(out: str, config: TrainConfig, what: str = "output_dir") -> None:
    """Refuse (``ValueError``) to train into ``out`` unless it is absent, empty, or a run of this very config
    (its ``config.json`` has our fingerprint: resuming or extending it is allowed). Nothing of another run, and
    no file the user put there, is ever overwritten. Messages name ``what`` (the input that chose ``out``)."""
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise ValueError(f"{what}: {out!r} is a file; choose another {what}")
    if not os.listdir(out):
        return
    foreign = (f"{what}: {out!r} already holds files that are not a training run with this config; nothing was "
               f"overwritten: choose another {what}")
    cfg_path = os.path.join(out, "config.json")
    if os.path.islink(cfg_path) or not os.path.isfile(cfg_path) or os.path.getsize(cfg_path) > 1 << 20:
        raise ValueError(foreign)
    try:
        with open(cfg_path, "r", encoding="utf-8") as fh:
            old = json.load(fh)
        previous = TrainConfig.from_dict(old, source=cfg_path)
    except (OSError, ValueError, TypeError, RecursionError):
        raise ValueError(foreign) from None
    if previous.fingerprint() != config.fingerprint():
        diff = config.diff(old)
        raise ValueError(f"{what}: {out!r} holds a training run with another config (differs in: "
                         f"{', '.join(diff) or 'model/version'}); nothing was overwritten: choose another {what}, or "
                         f"the same settings to resume it")


def train(config: TrainConfig, resume: str = "auto", callback: Optional[Callable] = None,
          log: Callable[[str], None] = print, max_steps_this_run: Optional[int] = None,
          dataset: Optional[PairDataset] = None, interrupt: Optional[Callable[[], None]] = None,
          what: str = "output_dir") -> TrainResult:
    """Train as ``config`` says.

    Args:
        resume: ``"auto"`` (continue from ``output_dir/checkpoints`` if there is one), ``"never"`` (refuse a
            non-empty run folder), or a checkpoint folder path.
        callback: ``callback(done_steps, total_steps, preview)`` after every optimiser step; if it raises
            (ComfyUI *Cancel*, Ctrl-C), a checkpoint is saved and the exception propagates.
        max_steps_this_run: stop (with a checkpoint) after this many steps of this call (tests, time slices).
        dataset: a ready :class:`PairDataset` (skips building one).
        interrupt: ``fn()`` that raises to stop (ComfyUI's Cancel), checked inside a step too: before every
            transformer block (:func:`diffcamera.core.dit.sampler.interrupt_hooks`), after each micro-batch's forward
            and after its backward. Stopped mid-step, the checkpoint holds the state at the start of that step (no
            half update), so the resumed run still repeats exactly what an uninterrupted one does.
        what: the name of the input or option that chose ``output_dir`` (in refusals).
    Raises:
        ValueError: resuming from a checkpoint written with another config (names the differing fields), or an
        ``output_dir`` that holds anything but a run of this config (:func:`check_run_folder`).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    out = os.path.abspath(config.output_dir)
    ckpt_root = os.path.join(out, "checkpoints")
    log_path = os.path.join(out, "loss.jsonl")
    check_run_folder(out, config, what)

    # --- resume decision before any heavy work
    resume_from = None
    if resume not in ("auto", "never"):
        resume_from = resume
        if not os.path.isdir(resume_from):
            raise FileNotFoundError(f"checkpoint {resume_from!r} does not exist")
    elif resume == "auto":
        resume_from = latest_checkpoint(ckpt_root)
    elif latest_checkpoint(ckpt_root):
        raise ValueError(f"{out!r} already holds checkpoints; resume it or choose another output_dir")
    if resume_from:
        st = read_state(resume_from)
        if st.get("fingerprint") != config.fingerprint():
            diff = config.diff(st.get("config", {}))
            raise ValueError(f"checkpoint {resume_from!r} was written with another config "
                             f"(differs in: {', '.join(diff) or 'model/version'}); refusing to resume. "
                             f"Use the original config or a fresh output_dir")

    mp = config.resolved_mixed_precision
    accelerator = Accelerator(mixed_precision=mp if torch.cuda.is_available() else "no", cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(config.seed)
    main = accelerator.is_main_process
    if main:
        log(f"train: {world} process(es) on {accelerator.device}, mixed precision {accelerator.mixed_precision}")
    if main:
        os.makedirs(out, exist_ok=True)
        safe_paths.make_dirs_inside(out, ["checkpoints"], "output_dir")
        for name in ("config.json", "loss.jsonl"):
            safe_paths.refuse_link(os.path.join(out, name), "output_dir")
        config.save(os.path.join(out, "config.json"))

    check_fits(config, accelerator.device)  # before any heavy work: names the setting to change
    ds = dataset if dataset is not None else build_dataset(config)
    model = build_model(config)
    prepare_training(model, storage=config.base_storage, gradient_checkpointing=config.gradient_checkpointing,
                     mixed_precision=accelerator.mixed_precision != "no")
    params = named_trainable(model)
    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda_for(config))
    wrapper = _Velocity(model)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    raw_opt = getattr(optimizer, "optimizer", optimizer)

    step, elapsed, records = 0, 0.0, []
    if resume_from:
        state = load_checkpoint(resume_from, params, raw_opt, scheduler)
        step, elapsed = int(state["step"]), float(state.get("seconds", 0.0))
        records = _read_log(log_path, upto=step)
        if main:
            _rewrite_log(log_path, records)
        log(f"train: resumed from {resume_from} at step {step}")
    elif main and os.path.exists(log_path):
        os.remove(log_path)

    velocity = wrapper.forward if world == 1 else wrapper

    def do_checkpoint():
        if not main:
            return None
        trainable = {k: p.detach() for k, p in params.items()}
        state = {"config": config.to_dict(), "fingerprint": config.fingerprint(), "seconds": elapsed,
                 "log_lines": len(records)}
        return save_checkpoint(ckpt_root, step, trainable, raw_opt, scheduler, state, keep=config.keep_checkpoints)

    class _Model:  # what refocus_loss sees: the bundle, with velocity routed through the prepared wrapper
        config = model.config
        autoencoder = model.autoencoder

        @staticmethod
        def velocity(*a, **k):
            return velocity(*a, **k)

    timesteps = dict(sampling=config.timestep_sampling, mean=config.logit_normal_mean, std=config.logit_normal_std,
                     denoise_max=config.denoise_max, resolution_shift=config.resolution_shift)
    stop_at = config.steps if max_steps_this_run is None else min(config.steps, step + max_steps_this_run)
    last_ckpt, interrupted = None, False
    B, A = config.batch_size, config.grad_accum
    t_start = time.perf_counter()
    updating = False
    step_rng = None  # global RNG states at the start of the step being computed (restored if stopped mid-step)
    check = interrupt or (lambda: None)
    from ..core.dit.sampler import interrupt_hooks
    from .checkpoint import rng_state, set_rng_state
    hooks = contextlib.ExitStack()
    hooks.enter_context(interrupt_hooks(model, interrupt))
    log_fh = open(log_path, "a", encoding="utf-8") if main else None
    try:
        while step < stop_at:
            t0 = time.perf_counter()
            if interrupt is not None:
                step_rng = rng_state()
            optimizer.zero_grad(set_to_none=True)
            tot = {"loss": 0.0, "rf": 0.0, "stack": 0.0}
            for micro in range(A):
                check()
                counter = ((step * A + micro) * world + rank) * B
                batch = ds.batch(sample_indices(counter, B, len(ds), config.seed))
                gen = torch.Generator().manual_seed(step_seed(config.seed, step, micro, rank))
                sync = contextlib.nullcontext() if (micro == A - 1 or world == 1) else accelerator.no_sync(wrapper)
                with sync, accelerator.autocast():
                    res = refocus_loss(_Model, batch, gen, lambda_stack=config.lambda_stack,
                                       depth_dropout=config.depth_dropout, timesteps=timesteps,
                                       device=accelerator.device, noise_from=config.noise_from)
                    check()
                    accelerator.backward(res["loss"] / A)
                check()
                for k in tot:
                    tot[k] += float(res[k].detach()) / A
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(list(params.values()), config.max_grad_norm)
            updating = True  # weights and step counter disagree until `step += 1`
            optimizer.step()
            scheduler.step()
            step += 1
            updating = False
            step_rng = None
            elapsed += time.perf_counter() - t0
            if not all(math.isfinite(v) for v in tot.values()):
                raise FloatingPointError(f"loss became {tot} at step {step}; lower lr or check the data")
            if main and (step % max(1, config.log_every) == 0 or step == stop_at):
                rec = {"step": step, **{k: round(v, 7) for k, v in tot.items()},
                       "lr": scheduler.get_last_lr()[0], "seconds": round(elapsed, 3)}
                records.append(rec)
                log_fh.write(json.dumps(rec) + "\n")
                log_fh.flush()
            if main and config.sample_every and step % config.sample_every == 0:
                _write_sample(model, config, out, step)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < stop_at:
                last_ckpt = do_checkpoint()
            if callback is not None:
                callback(step, config.steps, None)
    except BaseException:
        interrupted = True
        if step_rng is not None:  # stopped inside a step: its partial work is dropped, the RNG rewound to its start
            set_rng_state(*step_rng)
        if step > 0 and not updating:  # mid-update: the last periodic checkpoint is the consistent one
            try:
                last_ckpt = do_checkpoint()
                log(f"train: interrupted at step {step}; checkpoint {last_ckpt}")
            except OSError as exc:  # do not hide the original exception
                log(f"train: could not save the interruption checkpoint: {exc}")
        raise
    finally:
        hooks.close()
        if log_fh is not None:
            log_fh.close()
    last_ckpt = do_checkpoint() if step > 0 else None
    lora_path = None
    if main and step >= config.steps:
        lora_path = save_result(model, out)
        save_png(loss_curve_image(records), os.path.join(out, "loss_curve.png"))
        log(f"train: {step} steps in {elapsed:.1f} s; {'LoRA' if lora_path.endswith(LORA_NAME) else 'model'} -> "
            f"{lora_path}")
    accelerator.wait_for_everyone()
    return TrainResult(out, lora_path, step, records, last_ckpt, time.perf_counter() - t_start, interrupted)


def save_result(model, out: str) -> str:
    """The run's product: ``refocus_lora.safetensors`` (LoRA families, :func:`save_refocus_lora`) or, for a
    fully trained toy (``lora_rank == 0``), the whole model ``refocus_model.safetensors`` (:func:`save_refocus_model`)."""
    from ..core.dit.lora import has_adapter, save_refocus_lora
    from ..core.dit.model import save_refocus_model
    model.eval()
    if has_adapter(model):
        return save_refocus_lora(model, os.path.join(out, LORA_NAME))
    return save_refocus_model(model, os.path.join(out, MODEL_NAME))


def _write_sample(model, config: TrainConfig, out: str, step: int) -> None:
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    was = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        img = sample_preview(model, config.size)
    model.train(was)
    save_png(img, os.path.join(out, "samples", f"step_{step:07d}.png"))

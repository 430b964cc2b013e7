"""Training nodes: simulate a refocus dataset, train a refocus LoRA (or the toy model) inside ComfyUI.

``DiffCamera_SimulateDataset`` writes a sharded dataset (:mod:`diffcamera.training.simulate`) under ComfyUI's
output folder and returns it as DIFFCAMERA_DATASET. ``DiffCamera_TrainRefocusLoRA`` trains on it
(:mod:`diffcamera.training.trainer`) with gradients enabled (ComfyUI runs nodes under inference mode),
reports progress per step, saves a checkpoint when cancelled (queue it again to resume), and returns the
path of the trained file and a loss-curve image. The trained file is also copied into the ``diffcamera``
model folder (a new name, never overwriting) so the refocus model loader lists it.
"""
from __future__ import annotations

import functools
import os

from .. import runtime as rt
from ..core import depth as core_depth
from ..core import safe_paths
from ..core.conventions import MAX_LEVEL, core_to_comfy
from ..core.values import SimulatedDataset
from ..runtime import io, ui
from .common import CATEGORY, DepthModel, DiffCameraDataset, node_progress
from .validation import InputError, checked_inputs, require_memory

SOURCES = ["procedural", "image_folder"]
DATASETS_FOLDER = "diffcamera_datasets"
RUNS_FOLDER = "diffcamera_train"


def _bundled_configs() -> list:
    from ..training.config import CONFIG_DIR
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")) if os.path.isdir(CONFIG_DIR) else []
    return names or ["toy"]


class SimulateDataset(io.ComfyNode):
    """Render simulated refocus training groups (two focus planes, composite, mask, reference)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_SimulateDataset",
            display_name="SimulateRefocusDataset",
            category=f"{CATEGORY}/training",
            description=("Simulates refocus training pairs with the layered (occlusion-aware) renderer: for every "
                         "source image, several groups of two focus planes at one bokeh level, their two-plane "
                         "composite and the mask of the sharper plane (what the stacking constraint needs), a "
                         "reference input and its weight-free physics refocus to both planes (what the model "
                         "refines). Sources: procedural scenes (exact depth, no download) or a folder of "
                         "all-in-focus images with NAME_depth.png beside them (or a depth model). Written under "
                         "output/diffcamera_datasets/<name>; queueing again resumes; same seed = same data."),
            inputs=[
                io.Combo.Input(id="source", options=SOURCES, default="procedural",
                               tooltip="procedural: built-in scenes with exact depth. image_folder: your own "
                                       "all-in-focus images (set image_folder)."),
                io.Int.Input(id="num_scenes", default=160, min=1, max=100000,
                             tooltip="Procedural scenes to render (source = procedural)."),
                io.Int.Input(id="variants", default=4, min=1, max=1000,
                             tooltip="Groups (focus-plane pairs and bokeh levels) per source image."),
                io.Int.Input(id="size", default=64, min=16, max=2048, step=16,
                             tooltip="Square training size in pixels (multiple of 16). 64 for the toy model, "
                                     "512 for FLUX."),
                io.Float.Input(id="level_min", default=32.0, min=0.0, max=MAX_LEVEL, step=1.0,
                               tooltip="Lowest bokeh level (blur radius px per 1024 px of long side at |d-d_f| = 1)."),
                io.Float.Input(id="level_max", default=256.0, min=0.0, max=MAX_LEVEL, step=1.0,
                               tooltip="Highest bokeh level; levels are drawn uniformly in [level_min, level_max]."),
                io.Int.Input(id="seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of every random choice; the same seed gives the same data."),
                io.String.Input(id="name", default="diffcamera_pairs",
                                tooltip="Dataset folder name under output/diffcamera_datasets/. An existing folder "
                                        "made with the same settings is resumed; other settings are refused."),
                io.String.Input(id="image_folder", default="", optional=True,
                                tooltip="source = image_folder: folder of all-in-focus images; depth maps beside "
                                        "them as NAME_depth.png (grey, near = bright) or NAME_depth.npy."),
                DepthModel.Input(id="depth_model", optional=True,
                                 tooltip="Optional: estimates depth for images that have no NAME_depth file."),
                io.Float.Input(id="min_sharpness", default=0.0, min=0.0, max=10.0, step=0.0001, optional=True,
                               tooltip="Drop images whose Laplacian variance is below this (0 = keep all); the "
                                       "dropped ones are listed in the summary."),
            ],
            outputs=[DiffCameraDataset.Output(display_name="dataset"), io.String.Output(display_name="summary")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked_inputs
    def execute(cls, source, num_scenes, variants, size, level_min, level_max, seed, name,
                image_folder="", depth_model=None, min_sharpness=0.0):
        from ..training.simulate import simulate_dataset
        name = safe_paths.plain_name(name, "name")
        opts = _simulate_options(source, num_scenes, variants, size, level_min, level_max, seed, min_sharpness,
                                 depth_model)
        folder, root = _image_folder(image_folder) if source == "image_folder" else (None, None)
        require_memory(_simulate_bytes(opts, folder is not None), "cpu",  # the simulator renders on the CPU
                       f"SimulateRefocusDataset at size {size}", "lower size")
        out = rt.output_folder([DATASETS_FOLDER, name], "name")
        estimator = None if depth_model is None else functools.partial(_estimate_depth, depth_model)
        lines = []
        with node_progress(cls, 1, "simulate") as progress:
            manifest = simulate_dataset(out, opts, image_folder=folder, workers=1, callback=progress,
                                        log=lines.append, depth_estimator=estimator, source_root=root,
                                        interrupt=rt.check_interrupt, what="name")
        summary = "\n".join(lines + [f"{manifest['groups']} groups at {manifest['size']} px in "
                                     f"output/{DATASETS_FOLDER}/{name}"])
        dataset = SimulatedDataset(folder=out, size=int(manifest["size"]), groups=int(manifest["groups"]))
        return io.NodeOutput(dataset, summary, ui=ui.PreviewText(value=summary))


def _simulate_options(source, num_scenes, variants, size, level_min, level_max, seed, min_sharpness, depth_model):
    """The simulator's options from the node's inputs (checked first: what the widgets' min/max cannot say)."""
    from ..training.simulate import SimulateOptions
    if int(size) % 16:
        raise InputError(f"size: must be a multiple of 16, got {size}")
    if level_min > level_max:
        raise InputError(f"level_min ({level_min}) must not exceed level_max ({level_max})")
    return SimulateOptions(size=int(size), variants=int(variants), level_range=(float(level_min), float(level_max)),
                           seed=int(seed), min_sharpness=float(min_sharpness or 0.0),
                           num_scenes=int(num_scenes) if source == "procedural" else 0,
                           depth_model="(node input)" if depth_model is not None else None)


def _image_folder(image_folder: str):
    """``(folder, root)`` of the image_folder input inside ComfyUI's input folder (:func:`~diffcamera.runtime.input_folder`)."""
    if not (image_folder or "").strip():
        raise InputError("image_folder: empty; give the name of a folder of all-in-focus images inside "
                         "ComfyUI's input folder (or choose source = procedural)")
    return rt.input_folder(image_folder, "image_folder")


def _simulate_bytes(opts, from_folder: bool) -> int:
    """The simulator's peak memory (one process) for ``opts``: a shard of groups with the renderer's estimate at the
    highest level (:func:`diffcamera.training.simulate.estimate_simulate_bytes`)."""
    from ..core.bokeh import estimate_render_bytes
    from ..training.simulate import estimate_simulate_bytes
    render = estimate_render_bytes(1, opts.size, opts.size, opts.renderer, opts.level_range[1] * opts.size / 1024.0)
    groups = opts.shard_size if from_folder else min(opts.shard_size, opts.num_scenes * opts.variants)
    return estimate_simulate_bytes(opts.size, 1, groups, render, opts.renderer)


def _estimate_depth(handle, image):
    """Disparity of a source image without a depth file, by the DEPTH_MODEL input (Cancel checked per image)."""
    return core_depth.estimate_disparity_placed(rt.ModelPlacement([handle]), handle.model, image, batch_size=1,
                                                callback=lambda done, total, preview: rt.check_interrupt())


class TrainRefocusLoRA(io.ComfyNode):
    """Train a refocus LoRA (or the toy model) on a simulated dataset."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_TrainRefocusLoRA",
            display_name="TrainRefocusLoRA",
            category=f"{CATEGORY}/training",
            description=("Trains the refocus model on a simulated dataset: rectified-flow loss on two focus planes, "
                         "the stacking constraint (weight lambda_stack) and depth dropout. The 'toy' config trains "
                         "a small FLUX-architecture model from scratch in minutes on a CPU; 'flux_kontext_lora' "
                         "trains a LoRA on a local FLUX.1 Kontext [dev] (set base_path; needs a large GPU). "
                         "Cancel saves a checkpoint; queue again with the same run_name to resume exactly. "
                         "Outputs the trained file's path and the loss curve."),
            inputs=[
                DiffCameraDataset.Input(id="dataset", tooltip="From SimulateRefocusDataset."),
                io.Combo.Input(id="config", options=_bundled_configs(), default="toy",
                               tooltip="A bundled training config (training/configs/*.json); the inputs below "
                                       "override its fields."),
                io.Int.Input(id="steps", default=3000, min=1, max=1000000,
                             tooltip="Optimiser steps. 3000 (the shipped toy model) take ~8 min on 2 idle CPU cores; the toy starts to follow the requested focus after ~500-1000 steps (batch 4)."),
                io.Int.Input(id="batch_size", default=4, min=1, max=256,
                             tooltip="Scene groups per step (each group trains two focus planes)."),
                io.Float.Input(id="learning_rate", default=1e-3, min=1e-7, max=1.0, step=1e-5,
                               tooltip="AdamW learning rate (toy: 1e-3; FLUX LoRA: 1e-4)."),
                io.Float.Input(id="lambda_stack", default=1.0, min=0.0, max=100.0, step=0.05,
                               tooltip="Weight of the stacking constraint (0 = vanilla rectified-flow loss)."),
                io.Float.Input(id="depth_dropout", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Probability of blanking the depth channels of a training group, so the "
                                       "model copes with bad depth (0.15 is the paper-style setting, used by the "
                                       "FLUX config; in the 3000-step toy ablation it did not help)."),
                io.Int.Input(id="seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of data order, noise and dropout; same seed = same loss curve."),
                io.String.Input(id="run_name", default="refocus_toy",
                                tooltip="Run folder under output/diffcamera_train/ (checkpoints, loss.jsonl). "
                                        "An unfinished run with the same settings resumes."),
                io.Int.Input(id="checkpoint_every", default=250, min=0, max=1000000,
                             tooltip="Save a resumable checkpoint every N steps (0 = only at the end/cancel)."),
                io.String.Input(id="base_path", default="", optional=True,
                                tooltip="FLUX configs only: local FLUX.1 transformer (diffusers folder or "
                                        "single file in diffusion_models)."),
                io.String.Input(id="vae_path", default="", optional=True,
                                tooltip="FLUX configs only: local FLUX VAE (folder or file in vae)."),
            ],
            outputs=[io.String.Output(display_name="model_path"), io.Image.Output(display_name="loss_curve")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    @checked_inputs
    def execute(cls, dataset, config, steps, batch_size, learning_rate, lambda_stack, depth_dropout, seed,
                run_name, checkpoint_every, base_path="", vae_path=""):
        from ..training.memory import check_fits
        from ..training.trainer import loss_curve_image, train
        run_name = safe_paths.plain_name(run_name, "run_name")
        cfg = _train_config(dataset, config, run_name, base_path, vae_path, {
            "steps": int(steps), "batch_size": int(batch_size), "lr": float(learning_rate),
            "lambda_stack": float(lambda_stack), "depth_dropout": float(depth_dropout), "seed": int(seed),
            "checkpoint_every": int(checkpoint_every)})
        # the trainer's own memory plan, before the run folder exists (train() checks again before loading weights)
        check_fits(cfg, rt.training_device())
        rt.output_folder([RUNS_FOLDER, run_name], "run_name")
        with node_progress(cls, cfg.steps, "train") as progress, rt.gradients_enabled():
            result = train(cfg, resume="auto", callback=progress, log=lambda s: None, interrupt=rt.check_interrupt,
                           what="run_name")
        path = rt.publish_model(result.lora_path, run_name) if result.lora_path else result.lora_path
        last = result.losses[-1] if result.losses else {}
        text = f"{result.steps_done} steps, loss {last.get('loss')}, file {path}"
        return io.NodeOutput(path or "", core_to_comfy(loss_curve_image(result.losses)), ui=ui.PreviewText(value=text))


def _train_config(dataset, config: str, run_name: str, base_path: str, vae_path: str, overrides: dict):
    """The bundled config ``config`` with the node's inputs, its dataset (a finished one in ComfyUI's output folder)
    and its model files resolved by the pack's path policy (:func:`diffcamera.runtime.find_model`)."""
    from ..training.config import CONFIG_DIR, TrainConfig
    datasets = os.path.join(rt.output_directory(), DATASETS_FOLDER)
    if not (safe_paths.is_inside(dataset.folder, datasets)
            and os.path.isfile(os.path.join(dataset.folder, "manifest.json"))):
        raise InputError(f"dataset: not a finished dataset in output/{DATASETS_FOLDER}; connect a "
                         "SimulateRefocusDataset node")
    overrides = dict(overrides, dataset=os.path.realpath(dataset.folder), size=int(dataset.size),
                     output_dir=os.path.join(rt.output_directory(), RUNS_FOLDER, run_name))
    if (base_path or "").strip():
        overrides["base_path"] = rt.find_model("diffusion_models", base_path, "base_path")
    if (vae_path or "").strip():
        overrides["vae_path"] = rt.find_model("vae", vae_path, "vae_path")
    cfg = TrainConfig.load(os.path.join(CONFIG_DIR, config + ".json"), overrides)
    if cfg.model_kind == "flux" and not cfg.base_path:
        raise InputError("base_path: the FLUX config needs a local FLUX.1 Kontext [dev] transformer in "
                         "models/diffusion_models (its file or folder name)")
    if cfg.init_lora:
        cfg = cfg.replace(init_lora=rt.find_model(("diffcamera", "loras"), cfg.init_lora,
                                                  f"config {config}: init_lora", kind="file"))
    return cfg


NODES = [SimulateDataset, TrainRefocusLoRA]

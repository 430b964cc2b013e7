"""Training nodes: simulate a refocus dataset, train a refocus LoRA (or the toy model) inside ComfyUI.

``DiffCamera_SimulateDataset`` writes a sharded dataset (:mod:`diffcamera.training.simulate`) under ComfyUI's
output folder and returns it as DIFFCAMERA_DATASET. ``DiffCamera_TrainRefocusLoRA`` trains on it
(:mod:`diffcamera.training.trainer`) with gradients enabled (ComfyUI runs nodes under inference mode),
reports progress per step, saves a checkpoint when cancelled (queue it again to resume), and returns the
path of the trained file and a loss-curve image. The trained file is also copied into the ``diffcamera``
model folder (a new name, never overwriting) so the refocus model loader lists it.
"""
from __future__ import annotations

import os
import shutil

import torch

from .. import comfy_adapter as ca
from ..comfy_adapter import io, ui
from ..core.conventions import core_to_comfy
from .common import CATEGORY, DepthModel, DiffCameraDataset

SOURCES = ["procedural", "image_folder"]


def _bundled_configs() -> list:
    from ..training.config import CONFIG_DIR
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")) if os.path.isdir(CONFIG_DIR) else []
    return names or ["toy"]


def _safe_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"{what}: give a plain folder name (no slashes), got {name!r}")
    return name


class SimulateDataset(io.ComfyNode):
    """Render simulated refocus training groups (two focus planes, composite, mask, reference)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_SimulateDataset",
            display_name="SimulateRefocusDataset",
            category=f"{CATEGORY}/training",
            description=("Simulates refocus training pairs with the classical (BokehMe-style) renderer: for every "
                         "source image, several groups of two focus planes at one bokeh level, their two-plane "
                         "composite and the mask of the sharper plane (what the stacking constraint needs), plus "
                         "a reference input. Sources: procedural scenes (exact depth, no download) or a folder of "
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
                io.Float.Input(id="level_min", default=32.0, min=0.0, max=1024.0, step=1.0,
                               tooltip="Lowest bokeh level (blur radius px per 1024 px of long side at |d-d_f| = 1)."),
                io.Float.Input(id="level_max", default=256.0, min=0.0, max=1024.0, step=1.0,
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
    def execute(cls, source, num_scenes, variants, size, level_min, level_max, seed, name,
                image_folder="", depth_model=None, min_sharpness=0.0):
        from ..training.simulate import SimulateOptions, simulate_dataset
        name = _safe_name(name, "name")
        if int(size) % 16:
            raise ValueError(f"size: must be a multiple of 16, got {size}")
        if level_min > level_max:
            raise ValueError(f"level_min ({level_min}) must not exceed level_max ({level_max})")
        folder = None
        if source == "image_folder":
            folder = os.path.expanduser((image_folder or "").strip())
            if not folder or not os.path.isdir(folder):
                raise ValueError(f"image_folder: {image_folder!r} is not a folder; give the folder of all-in-focus "
                                 "images (or choose source = procedural)")
        out = os.path.join(ca.output_directory(), "diffcamera_datasets", name)
        opts = SimulateOptions(size=int(size), variants=int(variants), level_range=(float(level_min), float(level_max)),
                               seed=int(seed), min_sharpness=float(min_sharpness or 0.0),
                               num_scenes=int(num_scenes) if source == "procedural" else 0,
                               depth_model="(node input)" if depth_model is not None else None)
        estimator = None
        if depth_model is not None:
            from .depth import run_depth_model

            def estimator(img):
                return run_depth_model(depth_model, img, 518, 1)
        lines = []
        progress = ca.Progress(1, desc="simulate", node_id=getattr(cls.hidden, "unique_id", None))
        try:
            manifest = simulate_dataset(out, opts, image_folder=folder, workers=1, callback=progress,
                                        log=lines.append, depth_estimator=estimator)
        finally:
            progress.close()
        summary = "\n".join(lines + [f"{manifest['groups']} groups at {manifest['size']} px in {out}"])
        dataset = {"folder": out, "size": manifest["size"], "groups": manifest["groups"]}
        return io.NodeOutput(dataset, summary, ui=ui.PreviewText(value=summary))


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
    def execute(cls, dataset, config, steps, batch_size, learning_rate, lambda_stack, depth_dropout, seed,
                run_name, checkpoint_every, base_path="", vae_path=""):
        from ..training.config import TrainConfig
        from ..training.trainer import loss_curve_image, train
        if not isinstance(dataset, dict) or "folder" not in dataset:
            raise ValueError("dataset: connect a SimulateRefocusDataset node")
        run_name = _safe_name(run_name, "run_name")
        out = os.path.join(ca.output_directory(), "diffcamera_train", run_name)
        overrides = {"dataset": dataset["folder"], "size": int(dataset["size"]), "steps": int(steps),
                     "batch_size": int(batch_size), "lr": float(learning_rate), "lambda_stack": float(lambda_stack),
                     "depth_dropout": float(depth_dropout), "seed": int(seed), "output_dir": out,
                     "checkpoint_every": int(checkpoint_every)}
        if (base_path or "").strip():
            overrides["base_path"] = os.path.expanduser(base_path.strip())
        if (vae_path or "").strip():
            overrides["vae_path"] = os.path.expanduser(vae_path.strip())
        cfg = TrainConfig.load(config, overrides)
        if cfg.model_kind == "flux" and not cfg.base_path:
            raise ValueError("base_path: the FLUX config needs a local FLUX.1 Kontext [dev] transformer")
        progress = ca.Progress(cfg.steps, desc="train", node_id=getattr(cls.hidden, "unique_id", None))
        try:
            with ca.gradients_enabled():
                result = train(cfg, resume="auto", callback=progress, log=lambda s: None)
        finally:
            progress.close()
        path = result.lora_path
        if path:
            path = _publish(path, run_name)
        curve = core_to_comfy(loss_curve_image(result.losses))
        last = result.losses[-1] if result.losses else {}
        text = f"{result.steps_done} steps, loss {last.get('loss')}, file {path}"
        return io.NodeOutput(path or "", curve, ui=ui.PreviewText(value=text))


def _publish(path: str, run_name: str) -> str:
    """Copy the trained file (+ its .json) into the ``diffcamera`` model folder under a new name."""
    folders = ca.model_folder_paths("diffcamera")
    if not folders:
        return path
    dest_dir = folders[0]
    os.makedirs(dest_dir, exist_ok=True)
    stem = run_name
    n = 1
    while os.path.exists(os.path.join(dest_dir, stem + ".safetensors")) or os.path.exists(os.path.join(dest_dir, stem + ".json")):
        n += 1
        stem = f"{run_name}_{n}"
    dest = os.path.join(dest_dir, stem + ".safetensors")
    shutil.copyfile(path, dest)
    side = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(side):
        shutil.copyfile(side, os.path.join(dest_dir, stem + ".json"))
    return dest


NODES = [SimulateDataset, TrainRefocusLoRA]

"""``diffcamera train CONFIG``: train a refocus LoRA (or the toy model) with the stacking constraint.

CONFIG is a JSON file or a bundled config name (``toy``, ``flux_kontext_lora``; see
``training/configs/``). Unknown keys are refused. ``--set key=value`` overrides a field (JSON values).
A run folder with checkpoints is resumed exactly (``--resume auto``, the default); a checkpoint written with
another config is refused. Multi-GPU: ``accelerate launch -m diffcamera train CONFIG``.
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a refocus LoRA / the toy model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="training config JSON, or a bundled name (toy, flux_kontext_lora)")
    p.add_argument("--output-dir", default=None, help="run folder (overrides the config's output_dir)")
    p.add_argument("--dataset", default=None, help="simulated dataset folder (overrides the config's dataset)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides the config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field; VALUE is JSON (e.g. --set lambda_stack=0.5)")
    p.add_argument("--resume", default="auto",
                   help="auto (continue the run folder's latest checkpoint), never, or a checkpoint folder")
    return p


def parse_overrides(items) -> dict:
    import json
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run(args) -> int:
    from .. import runtime as rt
    from ..training.config import TrainConfig
    from ..training.trainer import train

    overrides = parse_overrides(args.set)
    for key, val in (("output_dir", args.output_dir), ("dataset", args.dataset), ("steps", args.steps)):
        if val is not None:
            overrides[key] = val
    config = TrainConfig.load(args.config, overrides)
    with rt.Progress(config.steps, desc="train") as progress:
        result = train(config, resume=args.resume, callback=progress)
    print(f"trained {result.steps_done} steps -> {result.lora_path or result.checkpoint}")
    return 0

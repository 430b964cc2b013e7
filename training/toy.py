"""The paper's ablation at toy scale: vanilla loss vs + stacking constraint vs + stacking + depth dropout.

:func:`run_ablation` trains the three variants of one base config (``training/configs/toy.json``) with the
same data, seed and step budget. They advance **in lockstep**, ``slice_steps`` at a time, each slice resuming
from the variant's own checkpoint (so a time limit stops all three at the same step count, and the runs
exercise exact resume). :func:`evaluate_model` then scores a trained model with the refocus suite of
``diffcamera bench`` (:mod:`diffcamera.core.benchmark`) on procedural scenes never used for training,
always next to the copy-the-input baseline.

CLI: ``python -m diffcamera.training.toy train --out DIR [--minutes M]`` and
``python -m diffcamera.training.toy eval --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional

import torch

from .config import TrainConfig

#: The three ablation variants (changes to the base config).
VARIANTS: Dict[str, Dict] = {
    "vanilla": {"lambda_stack": 0.0, "depth_dropout": 0.0},
    "stacking": {"lambda_stack": 1.0, "depth_dropout": 0.0},
    "stacking_dropout": {"lambda_stack": 1.0, "depth_dropout": 0.15},
}


def variant_configs(base: TrainConfig, out_root: str) -> Dict[str, TrainConfig]:
    return {name: base.replace(output_dir=os.path.join(out_root, name), **changes) for name, changes in VARIANTS.items()}


def run_ablation(base: TrainConfig, out_root: str, slice_steps: int = 25, deadline: Optional[float] = None,
                 log=print, only: Optional[str] = None) -> Dict[str, int]:
    """Train the variants in lockstep until ``base.steps`` or ``deadline`` (a ``time.time()`` value).

    ``only``: train just that variant (one process per variant; compare them at a step all reached — every
    slice leaves a checkpoint).

    Returns ``{variant: steps done}`` (equal for all variants). Wall time per variant is in each run's
    ``loss.jsonl`` (``seconds``: training time excluding set-up).
    """
    from .trainer import build_dataset, latest_checkpoint, train
    os.makedirs(out_root, exist_ok=True)
    cfgs = variant_configs(base, out_root)
    data = build_dataset(base)
    if only and only not in cfgs:
        raise ValueError(f"unknown variant {only!r}; choose one of {', '.join(cfgs)}")
    done = {name: 0 for name in cfgs}
    for name, cfg in cfgs.items():
        ck = latest_checkpoint(os.path.join(cfg.output_dir, "checkpoints"))
        if ck:
            done[name] = int(os.path.basename(ck).split("_")[1])
    if only:
        cfgs = {only: cfgs[only]}
        done = {only: done[only]}
    # start from the common step (a variant ahead of the others is brought back to it)
    common = min(done.values())
    while common < base.steps:
        if deadline is not None and time.time() > deadline:
            log(f"toy: deadline reached at step {common}")
            break
        for name, cfg in cfgs.items():
            if done[name] > common:
                continue
            ck = os.path.join(cfg.output_dir, "checkpoints", f"step_{common:07d}")
            resume = ck if common and os.path.isdir(ck) else ("auto" if common else "never")
            run_cfg = cfg.replace(checkpoint_every=slice_steps, keep_checkpoints=10_000)
            res = train(run_cfg, resume=resume, max_steps_this_run=slice_steps, dataset=data, log=lambda s: None)
            done[name] = res.steps_done
            last = res.losses[-1] if res.losses else {}
            log(f"toy: {name} step {res.steps_done} loss {last.get('loss')} rf {last.get('rf')} "
                f"stack {last.get('stack')} train-seconds {last.get('seconds')} at {time.strftime('%H:%M:%S')}")
        common = min(done.values())
    return done


# ------------------------------------------------------------------------------------------ evaluation
def load_variant_model(run_dir: str, step: Optional[int] = None):
    """The trained toy model of a run folder (final model, or the checkpoint of ``step``)."""
    from safetensors.torch import load_file
    from .trainer import build_model, named_trainable
    cfg = TrainConfig.load(os.path.join(run_dir, "config.json"))
    model = build_model(cfg)
    if step is None:
        from .checkpoint import latest_checkpoint
        ck = latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    else:
        ck = os.path.join(run_dir, "checkpoints", f"step_{step:07d}")
    weights = load_file(os.path.join(ck, "trainable.safetensors"))
    params = named_trainable(model)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(weights[k])
    return model.eval()


def export_asset(model, path: str, half: bool = True) -> str:
    """Write a whole toy model in D's ``diffcamera-model`` format, fp16 by default (loadable by
    :func:`diffcamera.core.dit.lora.load_model_file`, which casts back to float32)."""
    from ..core.dit import lora as L
    sd = {"transformer." + k: v.detach().cpu().contiguous() for k, v in model.transformer.state_dict().items()}
    sd.update(L._extras(model))
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return L._write(sd, model.config, path, L.MODEL_FORMAT)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffcamera.training.toy")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", default="toy")
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, default=None)
    t.add_argument("--slice", type=int, default=25)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dataset", default=None, help="a simulated dataset folder instead of the config's")
    t.add_argument("--scenes", type=int, default=None, help="procedural scenes (overrides the config)")
    t.add_argument("--only", choices=sorted(VARIANTS), default=None, help="train one variant only")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.cmd == "train":
        over = {"num_threads": a.threads}  # the trainer sets torch threads from the config
        if a.dataset:
            over["dataset"] = a.dataset
        if a.scenes:
            over["procedural_scenes"] = a.scenes
        base = TrainConfig.load(a.config, over)
        deadline = time.time() + 60 * a.minutes if a.minutes else None
        done = run_ablation(base, a.out, a.slice, deadline, only=a.only)
        print(json.dumps(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

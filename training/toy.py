"""The paper's ablation at toy scale — vanilla loss vs + stacking constraint vs + stacking + depth dropout — and the
shipped toy model.

Every variant changes only ``lambda_stack`` / ``depth_dropout`` of one base config (``training/configs/toy.json``);
the runs of an ablation share one simulated dataset (:func:`simulate_data`, the same groups the config's in-memory
procedural data would be), the step budget and, per seed, every random draw. Each run is one process (run at most
two at a time on a shared 2-core machine, one thread each); :func:`evaluate_runs` then scores the final models of
all runs on the cases of :mod:`diffcamera.evaluation.refocus_eval` (unseen thin-lens scenes) next to copy, re-blur,
physics and the oracle, and reports mean ± spread over seeds.

CLI (``python -m diffcamera.training.toy``)::

    simulate --out DATA                                   # the config's procedural data, once, to a folder
    train --out ROOT --variant stacking --seed 0 [--steps N] [--dataset DATA] [--threads 1]
    eval --out ROOT [--cases 24] [--sheet sheet.png]      # every finished run under ROOT
    export --run ROOT/stacking_s0 --to assets/toy_refocus  # fp16 whole-model file + its JSON
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


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def variant_config(base: TrainConfig, variant: str, seed: int, out_root: str, **changes) -> TrainConfig:
    """The config of one ablation run (``out_root/<variant>_s<seed>``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return base.replace(output_dir=os.path.join(out_root, run_name(variant, seed)), seed=seed,
                        **VARIANTS[variant], **changes)


def simulate_data(base: TrainConfig, out_dir: str, log=print) -> str:
    """Simulate the base config's procedural groups into ``out_dir`` (resumable); returns the folder."""
    from .simulate import simulate_dataset
    from .trainer import procedural_options
    simulate_dataset(out_dir, procedural_options(base), log=log)
    return out_dir


def load_run_model(run_dir: str):
    """The final model of a finished run (``refocus_model.safetensors``)."""
    from ..core.dit.model import load_model_file
    from .trainer import MODEL_NAME
    return load_model_file(os.path.join(run_dir, MODEL_NAME))


def export_asset(model, path: str, half: bool = True) -> str:
    """Write a whole toy model (``diffcamera-model`` format), fp16 by default (loadable by
    :func:`diffcamera.core.dit.model.load_model_file`, which casts back to float32)."""
    from ..core.dit.model import save_refocus_model
    return save_refocus_model(model, path, torch.float16 if half else torch.float32)


def finished_runs(out_root: str) -> Dict[str, List[str]]:
    """``{variant: [run folders]}`` of the runs under ``out_root`` that wrote their final model."""
    from .trainer import MODEL_NAME
    out: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(out_root)) if os.path.isdir(out_root) else []:
        variant = name.rsplit("_s", 1)[0]
        if variant in VARIANTS and os.path.isfile(os.path.join(out_root, name, MODEL_NAME)):
            out.setdefault(variant, []).append(os.path.join(out_root, name))
    return out


def evaluate_runs(out_root: str, cases: int = 24, steps: int = 28, denoise: float = 0.5, log=print) -> Dict:
    """Score every finished run under ``out_root`` and the baselines on the same cases; returns
    ``{"baselines": refocus_eval results, "runs": {run: results}, "table": markdown}``."""
    from ..evaluation import refocus_eval as E
    cs = E.make_cases(cases)
    base = E.evaluate(E.baseline_methods(), cs)
    runs = {}
    for variant, dirs in finished_runs(out_root).items():
        for d in dirs:
            t0 = time.time()
            runs[os.path.basename(d)] = E.evaluate({"dit": E.dit_method(load_run_model(d), steps, denoise)}, cs)["dit"]
            log(f"toy: evaluated {os.path.basename(d)} in {time.time() - t0:.0f} s")
    return {"baselines": base, "runs": runs, "table": ablation_table(base, runs)}


def ablation_table(baselines: Dict, runs: Dict) -> str:
    """Markdown: baselines (median over cases), then each variant's mean ± spread over its seeds of the medians."""
    from ..evaluation.refocus_eval import spread
    lines = ["| method | seeds | PSNR dB | SSIM | sharp-region PSNR dB | PSNR − physics dB (per-case median) |",
             "|---|---|---|---|---|---|"]
    phys = [c["psnr"] for c in baselines["physics"]["cases"]]

    def over_physics(result) -> float:
        return float(torch.tensor([c["psnr"] - p for c, p in zip(result["cases"], phys)]).median())
    for name in ("copy", "reblur", "physics", "oracle"):
        s = baselines[name]["median"]
        lines.append(f"| {name} | – | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['sharp_psnr']:.2f} | "
                     f"{over_physics(baselines[name]):+.2f} |")
    for variant in VARIANTS:
        results = [r for n, r in sorted(runs.items()) if n.rsplit("_s", 1)[0] == variant]
        mine = [r["median"] for r in results]
        if not mine:
            continue
        gains = [over_physics(r) for r in results]
        ssim = [m["ssim"] for m in mine]
        lines.append(f"| {variant} | {len(mine)} | {spread([m['psnr'] for m in mine])} | "
                     f"{sum(ssim) / len(ssim):.3f} ± {(max(ssim) - min(ssim)) / 2:.3f} | "
                     f"{spread([m['sharp_psnr'] for m in mine])} | {spread(gains)} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffcamera.training.toy")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("--config", default="toy")
    s.add_argument("--out", required=True)
    s.add_argument("--reference-renderer", choices=("same", "thin_lens"), default=None)
    t = sub.add_parser("train")
    t.add_argument("--config", default="toy")
    t.add_argument("--out", required=True, help="ablation root folder (the run goes to OUT/<variant>_s<seed>)")
    t.add_argument("--variant", choices=sorted(VARIANTS), default="stacking")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=None, help="step budget (default: the config's)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--dataset", default=None, help="a simulated dataset folder instead of the config's")
    e = sub.add_parser("eval")
    e.add_argument("--out", required=True)
    e.add_argument("--cases", type=int, default=24)
    e.add_argument("--steps", type=int, default=28)
    e.add_argument("--denoise", type=float, default=0.5)
    e.add_argument("--json", default=None, help="write the per-case results here")
    x = sub.add_parser("export")
    x.add_argument("--run", required=True)
    x.add_argument("--to", required=True)
    for q in (s, e, x):
        q.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.cmd == "simulate":
        over = {"reference_renderer": a.reference_renderer} if a.reference_renderer else {}
        simulate_data(TrainConfig.load(a.config, over), a.out)
    elif a.cmd == "train":
        from .trainer import train
        over = {"num_threads": a.threads}
        if a.dataset:
            over["dataset"] = a.dataset
        if a.steps:
            over["steps"] = a.steps
        cfg = variant_config(TrainConfig.load(a.config, over), a.variant, a.seed, a.out)
        t0 = time.time()
        res = train(cfg)
        print(json.dumps({"run": cfg.output_dir, "steps": res.steps_done, "wall_s": round(time.time() - t0, 1),
                          "train_s": res.losses[-1]["seconds"] if res.losses else None}))
    elif a.cmd == "eval":
        res = evaluate_runs(a.out, a.cases, a.steps, a.denoise)
        print(res["table"])
        if a.json:
            with open(a.json, "w", encoding="utf-8") as fh:
                json.dump({"baselines": {k: v["cases"] for k, v in res["baselines"].items()},
                           "runs": {k: v["cases"] for k, v in res["runs"].items()}}, fh)
    else:
        export_asset(load_run_model(a.run), os.path.join(a.to, "model.safetensors"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically. No pickle.

A checkpoint is a folder ``checkpoints/step_000100/``:

* ``trainable.safetensors`` — every trainable parameter (LoRA / toy weights / condition modules) by name;
* ``optimizer.safetensors`` — AdamW state tensors as ``state.<param index>.<name>``;
* ``rng.safetensors`` — torch CPU (and CUDA) generator states;
* ``state.json`` — step, config + fingerprint, optimizer param groups, LR-scheduler state, Python/NumPy RNG
  states, the number of loss-log lines, elapsed training time.

It is written into ``checkpoints/.tmp-step_000100-<pid>/`` and renamed into place with ``os.replace`` (atomic on
one filesystem); ``checkpoints/latest.json`` is then replaced atomically. If anything fails (a full disk raises
``OSError(ENOSPC)``), the temporary folder is removed and the previous checkpoint and ``latest.json`` are
untouched.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from typing import Dict, Optional

import torch

LATEST = "latest.json"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tensors(tensors: Dict[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """``safetensors.torch.save_file`` (CPU, contiguous copies). Separate so tests can make it fail."""
    from safetensors.torch import save_file
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def write_json(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def optimizer_to_flat(optimizer: torch.optim.Optimizer):
    """``(tensors, groups_json)``: state tensors keyed ``state.<i>.<name>``, JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"state.{idx}.{name}"] = val
            else:
                scalars[f"{idx}.{name}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], info: Dict) -> None:
    state: Dict[int, Dict] = {}
    for key, val in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = val
    for key, val in info.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def rng_state() -> Dict:
    """``(tensors, json)`` of every global RNG the training loop may touch."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    info = {"python": [py[0], list(py[1]), py[2]]}
    try:
        import numpy as np
        st = np.random.get_state()
        info["numpy"] = [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])]
    except ImportError:  # pragma: no cover
        pass
    return tensors, info


def set_rng_state(tensors: Dict[str, torch.Tensor], info: Dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if states and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    if "python" in info:
        v, s, g = info["python"]
        random.setstate((v, tuple(s), g))
    if "numpy" in info:
        import numpy as np
        name, keys, pos, has_gauss, cached = info["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(ckpt_root: str, step: int, trainable: Dict[str, torch.Tensor], optimizer, scheduler,
                    state: Dict, keep: int = 2) -> str:
    """Write checkpoint ``step`` atomically under ``ckpt_root``; keep the newest ``keep``. Returns its path."""
    os.makedirs(ckpt_root, exist_ok=True)
    name = f"step_{step:07d}"
    final = os.path.join(ckpt_root, name)
    tmp = os.path.join(ckpt_root, f".tmp-{name}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        os.makedirs(tmp)
        save_tensors(trainable, os.path.join(tmp, "trainable.safetensors"))
        opt_tensors, opt_info = optimizer_to_flat(optimizer)
        save_tensors(opt_tensors, os.path.join(tmp, "optimizer.safetensors"))
        rng_tensors, rng_info = rng_state()
        save_tensors(rng_tensors, os.path.join(tmp, "rng.safetensors"))
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        full = dict(state, step=step, optimizer=opt_info, scheduler=sched, rng=rng_info)
        write_json(full, os.path.join(tmp, "state.json"))
        _fsync_dir(tmp)
        if os.path.exists(final):  # re-saving the same step (e.g. interrupted right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        latest_tmp = os.path.join(ckpt_root, f".{LATEST}.tmp{os.getpid()}")
        write_json({"checkpoint": name, "step": step}, latest_tmp)
        os.replace(latest_tmp, os.path.join(ckpt_root, LATEST))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        lt = os.path.join(ckpt_root, f".{LATEST}.tmp{os.getpid()}")
        if os.path.exists(lt):
            os.remove(lt)
        raise
    olds = sorted(d for d in os.listdir(ckpt_root) if d.startswith("step_") and d != name)
    for d in olds[:max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(os.path.join(ckpt_root, d), ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: str) -> Optional[str]:
    """Path of the checkpoint ``latest.json`` names (falls back to the highest complete ``step_*``)."""
    if not os.path.isdir(ckpt_root):
        return None
    p = os.path.join(ckpt_root, LATEST)
    if os.path.isfile(p):
        with open(p, "r", encoding="utf-8") as fh:
            name = json.load(fh)["checkpoint"]
        if os.path.isfile(os.path.join(ckpt_root, name, "state.json")):
            return os.path.join(ckpt_root, name)
    done = sorted(d for d in os.listdir(ckpt_root)
                  if d.startswith("step_") and os.path.isfile(os.path.join(ckpt_root, d, "state.json")))
    return os.path.join(ckpt_root, done[-1]) if done else None


def read_state(path: str) -> Dict:
    p = os.path.join(path, "state.json")
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{path!r} is not a training checkpoint (no state.json)")
    with open(p, "r", encoding="utf-8") as fh:
        return json.load(fh)


def load_checkpoint(path: str, named_params: Dict[str, torch.nn.Parameter], optimizer, scheduler) -> Dict:
    """Restore weights, optimiser, scheduler and RNG states in place; returns ``state.json``'s dict."""
    from safetensors.torch import load_file
    state = read_state(path)
    weights = load_file(os.path.join(path, "trainable.safetensors"))
    missing = sorted(set(named_params) - set(weights))
    extra = sorted(set(weights) - set(named_params))
    if missing or extra:
        raise ValueError(f"checkpoint {path!r} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, p in named_params.items():
            p.copy_(weights[k].to(p.device, p.dtype))
    opt = load_file(os.path.join(path, "optimizer.safetensors"))
    optimizer_from_flat(optimizer, opt, state["optimizer"])
    sched = dict(state["scheduler"])
    sched["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    scheduler.load_state_dict(sched)
    set_rng_state(load_file(os.path.join(path, "rng.safetensors")), state.get("rng", {}))
    return state

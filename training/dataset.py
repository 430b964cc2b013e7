"""Reading simulated refocus groups (see :mod:`diffcamera.training.simulate`) and the deterministic data order.

A batch is a dict of float tensors (``B`` groups):

* ``reference``, ``target1``, ``target2``, ``physics1``, ``physics2``, ``composite``, ``aif``: ``[B,3,H,W]`` sRGB 0..1
* ``mask``: ``[B,1,H,W]`` 0/1 (1 where plane 1 is sharper); ``disparity``: ``[B,1,H,W]`` 0..1 near = 1
* ``focus_xy1``, ``focus_xy2``: ``[B,2]`` normalised points; ``focus_disparity1/2``, ``K``, ``level``,
  ``ref_focus_disparity``, ``ref_K``: ``[B]`` (K in px at the stored resolution)

The order is a pure function of ``(seed, sample counter)``: sample ``n`` of the run is element
``n mod N`` of the permutation of epoch ``n // N``, drawn from ``torch.Generator(seed + epoch)``. The trainer
only needs the step number to continue exactly where it stopped (no loader state to save).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import torch

from .simulate import FORMAT_VERSION, IMAGE_KEYS, SCALAR_KEYS


class PairDataset:
    """Simulated groups from a ``diffcamera simulate`` folder or from in-memory stacked tensors."""

    def __init__(self, tensors: Dict[str, torch.Tensor] = None, folder: str = None):
        self.folder = folder
        self._tensors = tensors
        self._files: List[str] = []
        self._offsets: List[int] = []
        self._handles: Dict[str, object] = {}
        if folder is not None:
            manifest = os.path.join(folder, "manifest.json")
            if not os.path.isfile(manifest):
                raise FileNotFoundError(f"{folder!r} is not a simulated dataset (no manifest.json); "
                                        f"make one with `diffcamera simulate`")
            with open(manifest, "r", encoding="utf-8") as fh:
                self.manifest = json.load(fh)
            fmt = self.manifest.get("format")
            if fmt != f"diffcamera-pairs-v{FORMAT_VERSION}":
                raise ValueError(f"{folder!r} is a {fmt or 'pre-v1'} dataset; this trainer needs "
                                 f"diffcamera-pairs-v{FORMAT_VERSION} (physics references, the layered renderer by "
                                 "default): simulate it again with `diffcamera simulate`")
            total = 0
            for shard in self.manifest["shards"]:
                self._files.append(os.path.join(folder, shard["file"]))
                self._offsets.append(total)
                total += int(shard["groups"])
            self._len = total
            self.size = int(self.manifest["size"])
        else:
            self.manifest = None
            self._len = int(tensors["reference"].shape[0])
            self.size = int(tensors["reference"].shape[-1])
        if self._len == 0:
            raise ValueError(f"dataset {folder or '(in memory)'} holds no group")

    def __len__(self) -> int:
        return self._len

    def _row(self, index: int) -> Dict[str, torch.Tensor]:
        if self._tensors is not None:
            return {k: v[index] for k, v in self._tensors.items()}
        import bisect
        from safetensors import safe_open
        s = bisect.bisect_right(self._offsets, index) - 1
        path = self._files[s]
        h = self._handles.get(path)
        if h is None:
            if len(self._handles) > 8:
                self._handles.clear()
            h = self._handles[path] = safe_open(path, framework="pt")
        i = index - self._offsets[s]
        return {k: h.get_slice(k)[i:i + 1][0] for k in h.keys()}

    def batch(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """Collate groups ``indices`` into the float batch described in the module docstring."""
        rows = [self._row(int(i)) for i in indices]
        out = {}
        for k in IMAGE_KEYS:
            out[k] = torch.stack([r[k] for r in rows]).float() / 255.0
        out["mask"] = torch.stack([r["mask"] for r in rows]).float()
        out["disparity"] = torch.stack([r["disparity"] for r in rows]).float()
        sc = torch.stack([r["scalars"] for r in rows]).float()
        col = {name: sc[:, j] for j, name in enumerate(SCALAR_KEYS)}
        out["focus_xy1"] = torch.stack([col["focus_x1"], col["focus_y1"]], 1)
        out["focus_xy2"] = torch.stack([col["focus_x2"], col["focus_y2"]], 1)
        for name in ("focus_disparity1", "focus_disparity2", "K", "level", "ref_focus_disparity", "ref_K"):
            out[name] = col[name]
        return out


def sample_indices(counter: int, count: int, length: int, seed: int) -> List[int]:
    """Dataset indices of samples ``counter .. counter+count-1`` of a run (epoch-wise permutations)."""
    out = []
    epoch, perm = None, None
    for n in range(counter, counter + count):
        e = n // length
        if e != epoch:
            epoch = e
            perm = torch.randperm(length, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + e))
        out.append(int(perm[n % length]))
    return out


def synthetic_batch(batch: int, size: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """A random batch of ``batch`` groups at ``size`` px in the format of :meth:`PairDataset.batch` (benchmarks and
    memory measurements: the values are plausible, not simulated). CPU float tensors."""
    g = generator

    def img():
        return torch.rand(batch, 3, size, size, generator=g)
    out = {k: img() for k in IMAGE_KEYS}
    out["disparity"] = torch.rand(batch, 1, size, size, generator=g)
    out["mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    out["focus_xy1"] = torch.rand(batch, 2, generator=g)
    out["focus_xy2"] = torch.rand(batch, 2, generator=g)
    for name in ("focus_disparity1", "focus_disparity2", "ref_focus_disparity"):
        out[name] = torch.rand(batch, generator=g)
    out["level"] = 8.0 + 88.0 * torch.rand(batch, generator=g)
    out["K"] = out["level"] * size / 1024.0
    out["ref_K"] = out["K"].clone()
    return out

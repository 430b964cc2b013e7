"""Monocular depth: load Depth Anything V2 (transformers format) and turn its output into our disparity.

Models (put one folder per variant under ComfyUI's ``models/depth_anything/``, or pass any folder):

=========================  ==========================================  ==========================
variant                    Hugging Face repository (transformers fmt)  licence
=========================  ==========================================  ==========================
Depth Anything V2 Small    ``depth-anything/Depth-Anything-V2-Small-hf``  Apache-2.0 (commercial use OK)
Depth Anything V2 Base     ``depth-anything/Depth-Anything-V2-Base-hf``   CC-BY-NC-4.0 (non-commercial)
Depth Anything V2 Large    ``depth-anything/Depth-Anything-V2-Large-hf``  CC-BY-NC-4.0 (non-commercial)
=========================  ==========================================  ==========================

A folder needs ``config.json`` and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``);
``preprocessor_config.json`` is optional (its ``image_mean``/``image_std`` are used when present). Only
safetensors weights are read and nothing is ever downloaded at run time.

Conventions (:mod:`diffcamera.core.conventions`): images ``[B,3,H,W]`` sRGB ``0..1``; the result is
normalised disparity ``[B,1,H,W]`` in ``0..1`` with near = 1, far = 0, at the image's own resolution.
Depth Anything V2 ("relative" checkpoints) predicts affine-invariant inverse depth, so its output is
min-max normalised per image; "metric" checkpoints predict depth in metres, which is inverted first.
"""
from __future__ import annotations

import json
import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .checks import check_finite, check_map
from .conventions import metric_depth_to_disparity, normalise_disparity

#: Default processing resolution (short side, px) of Depth Anything V2; must be a multiple of :data:`PATCH`.
DEFAULT_PROCESS_RES = 518
#: Patch size of the Dinov2 backbone: the network input is a multiple of it.
PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VARIANTS = (
    ("Depth Anything V2 Small", "depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0"),
    ("Depth Anything V2 Base", "depth-anything/Depth-Anything-V2-Base-hf", "CC-BY-NC-4.0 (non-commercial)"),
    ("Depth Anything V2 Large", "depth-anything/Depth-Anything-V2-Large-hf", "CC-BY-NC-4.0 (non-commercial)"),
)


#: Weight precisions of a depth model by name; ``"auto"`` is resolved by :func:`resolve_dtype`.
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device) -> torch.dtype:
    """The weight dtype of :data:`DTYPES` ``name`` for a model running on ``device``: ``"auto"`` = float16 on CUDA,
    float32 elsewhere."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if DTYPES[name] is not None:
        return DTYPES[name]
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


#: Disparity step between neighbouring pixels that counts as a depth discontinuity (a surface edge).
EDGE_THRESHOLD = 0.03


def depth_edges(disparity: torch.Tensor, threshold: float = EDGE_THRESHOLD, max_spacing: int = 1) -> torch.Tensor:
    """``[B, 1, H, W]`` bool: the pixels on either side of a disparity step above ``threshold``.

    Uses second differences along rows and columns, so smooth slopes (slanted and ground planes, at any size)
    are not edges while a step marks the two pixels that meet at it. With ``max_spacing > 1`` the second
    differences are also taken ``2, 4, …`` px apart (up to ``max_spacing``), which finds steps spread over a few
    pixels — a depth model's soft edges — and marks a band up to ``max_spacing`` px wide each side of them; a
    plane's slope is not marked as long as it changes by less than ``threshold`` over ``max_spacing`` px.
    """
    d0 = disparity.float()
    out = None
    s = 1
    while s <= max(1, int(max_spacing)):
        d = F.pad(d0, (s, s, s, s), mode="replicate")
        c = d[..., s:-s, s:-s]
        dxx = (d[..., s:-s, 2 * s:] - 2 * c + d[..., s:-s, :-2 * s]).abs()
        dyy = (d[..., 2 * s:, s:-s] - 2 * c + d[..., :-2 * s, s:-s]).abs()
        edge = torch.maximum(dxx, dyy) > threshold
        out = edge if out is None else out | edge
        s *= 2
    return out


def download_hint(folder_hint: str = "models/depth_anything") -> str:
    """What to download and where to put it, with each variant's licence (used in error messages)."""
    lines = [f"Download a Depth Anything V2 model in transformers format (config.json + model.safetensors) "
             f"into its own sub-folder of {folder_hint}/, e.g. "
             f"`huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf "
             f"--local-dir {folder_hint}/Depth-Anything-V2-Small-hf`. Variants:"]
    lines += [f"  - {name}: {repo} (licence {lic})" for name, repo, lic in VARIANTS]
    return "\n".join(lines)


class DepthModelError(ValueError):
    """A depth model folder is missing, incomplete or not a depth model; the message says what to do."""


def _check_folder(path: str) -> dict:
    """Validate a model folder before transformers sees it; returns its parsed ``config.json``."""
    if not path:
        raise DepthModelError("no depth model folder given.\n" + download_hint())
    if not os.path.exists(path):
        raise DepthModelError(f"depth model folder {path!r} does not exist.\n" + download_hint())
    if not os.path.isdir(path):
        raise DepthModelError(f"{path!r} is a file; give the folder that holds config.json and model.safetensors.\n"
                              + download_hint())
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise DepthModelError(f"{path!r} has no config.json, so it is not a transformers-format model folder "
                              f"(original .pth checkpoints are not supported).\n" + download_hint())
    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DepthModelError(f"{cfg_path!r} is not valid JSON ({exc}).\n" + download_hint()) from exc
    archs = config.get("architectures") or []
    is_depth = config.get("model_type") == "depth_anything" or any(a.endswith("ForDepthEstimation") for a in archs)
    if not is_depth:
        raise DepthModelError(
            f"{path!r} holds a {config.get('model_type', 'unknown')!r} model "
            f"(architectures {archs}), not a depth model.\n" + download_hint())
    files = set(os.listdir(path))
    if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
        pickles = sorted(f for f in files if f.endswith((".bin", ".pth", ".pt", ".ckpt")))
        extra = f" (found {pickles}: pickle checkpoints are never loaded, for safety)" if pickles else ""
        raise DepthModelError(f"{path!r} has no model.safetensors{extra}.\n" + download_hint())
    return config


def _read_normalisation(path: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    pre = os.path.join(path, "preprocessor_config.json")
    try:
        with open(pre, encoding="utf-8") as f:
            cfg = json.load(f)
        mean, std = tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"])
        if len(mean) == 3 and len(std) == 3:
            return mean, std
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return IMAGENET_MEAN, IMAGENET_STD


def load_depth_model(path: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load a Depth Anything (V2) folder with transformers ``AutoModelForDepthEstimation``, local files only.

    Args:
        path: folder with ``config.json`` + ``model.safetensors``.
        dtype: weight dtype (``torch.float32``, ``float16`` or ``bfloat16``).

    Returns:
        the model in eval mode on the CPU. Its ``diffcamera_info`` attribute is a dict with ``path``,
        ``mean``, ``std`` (normalisation), ``patch`` and ``depth_type`` (``"relative"`` or ``"metric"``).

    Raises:
        DepthModelError (a ``ValueError``): missing/wrong folder, with what to download and where.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    config = _check_folder(path)
    from transformers import AutoModelForDepthEstimation

    try:
        model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                            dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many kinds; all mean "bad folder"
        raise DepthModelError(f"could not load the depth model in {path!r}: {exc}\n" + download_hint()) from exc
    model.eval().requires_grad_(False)
    mean, std = _read_normalisation(path)
    patch = int(config.get("patch_size", PATCH) or PATCH)
    model.diffcamera_info = {"path": path, "mean": mean, "std": std, "patch": patch,
                             "depth_type": config.get("depth_estimation_type", "relative")}
    return model


def is_depth_model(model) -> bool:
    """Whether ``model`` is a depth estimator :func:`estimate_disparity` can run: a transformers
    ``*ForDepthEstimation`` module (what :func:`load_depth_model` returns)."""
    return isinstance(model, torch.nn.Module) and type(model).__name__.endswith("ForDepthEstimation")


# ------------------------------------------------------------------------------------- inference
def processing_size(height: int, width: int, process_res: int = DEFAULT_PROCESS_RES, multiple: int = PATCH):
    """Network input size ``(h, w)`` for an ``height`` × ``width`` image.

    The short side becomes ``process_res`` (rounded to ``multiple``), the long side keeps the aspect ratio and
    is rounded to the nearest multiple (at least one), as Depth Anything V2's own ``lower_bound`` resize does.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    res = max(multiple, int(round(process_res / multiple)) * multiple)
    scale = res / min(height, width)

    def fit(side):
        return max(multiple, int(round(side * scale / multiple)) * multiple)

    return fit(height), fit(width)


def preprocess(image: torch.Tensor, size: Sequence[int], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``[B,3,H,W]`` sRGB 0..1 -> normalised network input ``[B,3,h,w]`` (bicubic, antialiased, in torch)."""
    h, w = int(size[0]), int(size[1])
    x = image.float()
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def raw_to_disparity(raw: torch.Tensor, depth_type: str = "relative") -> torch.Tensor:
    """Network output ``[B,1,H,W]`` -> normalised disparity ``[B,1,H,W]`` 0..1 near = 1 (per image)."""
    raw = raw.float()
    if depth_type == "metric":
        return metric_depth_to_disparity(raw.clamp_min(1e-6))
    return normalise_disparity(raw).clamp(0.0, 1.0)


def _model_device_dtype(model: torch.nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


def estimate_disparity(model: torch.nn.Module, image: torch.Tensor, process_res: int = DEFAULT_PROCESS_RES,
                       batch_size: int = 4,
                       callback: Optional[Callable[[int, int, Optional[torch.Tensor]], None]] = None) -> torch.Tensor:
    """Run a depth model on an image batch; returns normalised disparity.

    Args:
        model: from :func:`load_depth_model` (any ``*ForDepthEstimation`` whose output has
            ``predicted_depth`` ``[B,h,w]``); it runs on whatever device/dtype its weights are on.
        image: ``[B,3,H,W]`` sRGB ``0..1`` (any device).
        process_res: short side of the network input in pixels (rounded to the patch multiple 14);
            larger = finer detail, slower. The aspect ratio is kept.
        batch_size: images per forward pass.
        callback: ``callback(done_images, total_images, None)`` after each chunk; may raise to interrupt.

    Returns:
        ``[B,1,H,W]`` float32 on the CPU, ``0..1``, near = 1, far = 0, min-max normalised per image,
        bilinearly resized back to ``H × W``.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B,3,H,W], got {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    info = getattr(model, "diffcamera_info", {})
    mean, std = info.get("mean", IMAGENET_MEAN), info.get("std", IMAGENET_STD)
    patch = info.get("patch", PATCH)
    depth_type = info.get("depth_type", "relative")
    device, dtype = _model_device_dtype(model)
    b, _, height, width = image.shape
    size = processing_size(height, width, process_res, patch)
    out = []
    if callback is not None:
        callback(0, b, None)
    with torch.no_grad():
        for start in range(0, b, batch_size):
            chunk = image[start:start + batch_size].to(device)
            pixels = preprocess(chunk, size, mean, std).to(dtype)
            raw = model(pixel_values=pixels).predicted_depth
            if raw.dim() == 3:
                raw = raw.unsqueeze(1)
            raw = raw.float()
            if not torch.isfinite(raw).all():
                raise FloatingPointError(
                    f"the depth model produced NaN/inf in {dtype}; load it in float32 or bfloat16 instead")
            raw = F.interpolate(raw, size=(height, width), mode="bilinear", align_corners=False)
            out.append(raw_to_disparity(raw, depth_type).cpu())
            if callback is not None:
                callback(min(start + batch_size, b), b, None)
    return torch.cat(out, 0)


def estimate_disparity_placed(placement, model: torch.nn.Module, image: torch.Tensor,
                              process_res: int = DEFAULT_PROCESS_RES, batch_size: int = 4,
                              callback: Optional[Callable[[int, int, Optional[torch.Tensor]], None]] = None
                              ) -> torch.Tensor:
    """:func:`estimate_disparity` with ``model`` placed by the host.

    ``placement`` (the host runtime's, e.g. :class:`diffcamera.runtime.ModelPlacement`): ``load()`` brings the model
    to its device first; a CUDA out-of-memory error with ``batch_size > 1`` is answered by ``release()``, ``load()``
    and one image at a time; ``unload()`` when done (also after an error).
    """
    placement.load()
    try:
        try:
            return estimate_disparity(model, image, process_res, batch_size, callback=callback)
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            placement.release()
            placement.load()
            return estimate_disparity(model, image, process_res, 1, callback=callback)
    finally:
        placement.unload()


#: Fixed working memory of one depth forward beyond its tensors (allocator, interpolation scratch), measured.
DEPTH_OVERHEAD_BYTES = 64 * 1024 * 1024


def estimate_depth_bytes(model: torch.nn.Module, batch: int, chunk: int, height: int, width: int,
                         process_res: int = DEFAULT_PROCESS_RES) -> int:
    """Peak working memory (bytes, an upper estimate) of :func:`estimate_disparity` on ``batch`` images of
    ``height × width`` in chunks of ``chunk``, beyond the model's weights.

    Per image at the network size ``h × w`` (:func:`processing_size`), ``G = (h/14)·(w/14)`` patch tokens and
    ``b`` bytes per value (the weights' dtype): the Dinov2 backbone's live activations ``T·hidden·(mlp_ratio+6)``
    plus the four kept stages ``4·T·hidden`` (and ``2·heads·T²`` attention matrices when the model uses eager
    attention); the DPT neck's reassembled maps at 4/2/1/0.5× the patch grid, projected to ``fusion`` channels,
    fused at 8× (three maps alive); the head's ``2·(fusion/2) + head_hidden`` channels at ``h × w``. Their sum is
    an upper bound of the peak (stages free their inputs). Plus, per chunk, the input and the float32 output
    resized to ``height × width``; for the whole batch the float32 disparity, its 3-channel preview and the node's
    IMAGE; and :data:`DEPTH_OVERHEAD_BYTES`. Against the measured peak RSS of random-weight Depth Anything V2
    Small / tiny models on the CPU (process_res 518 and 1036, batch 1-4): 1.25-1.55× (``benchmarks/bench_memory.py``).
    """
    cfg = getattr(model, "config", None)
    backbone = getattr(cfg, "backbone_config", None)
    hidden = int(getattr(backbone, "hidden_size", 1024))
    heads = int(getattr(backbone, "num_attention_heads", 16))
    mlp = float(getattr(backbone, "mlp_ratio", 4))
    neck = [int(c) for c in (getattr(cfg, "neck_hidden_sizes", None) or [256, 512, 1024, 1024])]
    fusion = int(getattr(cfg, "fusion_hidden_size", 256))
    head_hidden = int(getattr(cfg, "head_hidden_size", 32))
    patch = int(getattr(model, "diffcamera_info", {}).get("patch", PATCH))
    eager = getattr(backbone, "_attn_implementation", None) == "eager"  # what the Dinov2 layers run
    try:
        b = next(model.parameters()).element_size()
    except StopIteration:
        b = 4
    h, w = processing_size(height, width, process_res, patch)
    grid = (h // patch) * (w // patch)
    tokens = grid + 1
    scales = (16.0, 4.0, 1.0, 0.25)  # (4x, 2x, 1x, 0.5x of the patch grid)^2
    backbone_vals = tokens * hidden * (mlp + 6 + 4) + (2 * heads * tokens * tokens if eager else 0)
    neck_vals = sum(c * s * grid for c, s in zip(neck, scales)) + fusion * sum(scales) * grid + 3 * fusion * 64 * grid
    head_vals = (2 * (fusion // 2) + head_hidden + 1) * h * w  # conv1's output and its resize both alive
    per_image = b * (backbone_vals + neck_vals + head_vals) + 4 * 3 * h * w * 2
    per_chunk = chunk * (per_image + 4 * height * width * 3)
    whole = batch * height * width * 4 * (1 + 3 + 3)
    return int(per_chunk + whole + DEPTH_OVERHEAD_BYTES)


def disparity_preview(disparity: torch.Tensor) -> torch.Tensor:
    """``[B,1,H,W]`` disparity -> ``[B,3,H,W]`` grey image (near = white), the ControlNet-depth convention."""
    return disparity.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


# ------------------------------------------------------------------------ depth from elsewhere
#: How a foreign depth map encodes distance (see :func:`convert_depth_map`).
CONVENTIONS = ("disparity (near bright)", "depth (near dark)", "metric depth")


def convert_depth_map(values: torch.Tensor, convention: str = CONVENTIONS[0], normalise: bool = True,
                      size: Optional[Sequence[int]] = None, near: Optional[float] = None,
                      far: Optional[float] = None, name: str = "depth") -> torch.Tensor:
    """Turn a depth map from anywhere into our disparity ``[B,1,H,W]`` 0..1 near = 1.

    Args:
        values: ``[B,1,H,W]`` map (grey images and masks are reduced to one channel by the caller).
        convention: ``"disparity (near bright)"`` (Depth Anything, MiDaS, ControlNet depth previews: used as is),
            ``"depth (near dark)"`` (a normalised depth image: inverted, ``1 − v``), or ``"metric depth"``
            (positive distances in any unit, e.g. metres: ``1/z``; ``+inf`` = sky = farthest).
        normalise: min-max normalise per image (always done for metric depth; between ``1/far`` and ``1/near``
            when both are given).
        size: ``(H, W)`` to resize to (bilinear), e.g. the image the depth belongs to.
        near, far: metric depth only: the distances mapped to disparity 1 and 0 (both, or neither: ``None`` or 0 =
            not set, then the map's own nearest and farthest).
        name: the input's name, used in error messages.
    """
    if values.dim() != 4 or values.shape[1] != 1:
        raise ValueError(f"{name}: expected a [B,1,H,W] map, got {tuple(values.shape)}")
    v = values.float()
    if convention not in CONVENTIONS:
        raise ValueError(f"{name}: unknown convention {convention!r}; use one of {CONVENTIONS}")
    if torch.isnan(v).any():
        raise ValueError(f"{name}: the depth map contains NaN values; fill or mask them before converting")
    if convention == "metric depth":
        if (v <= 0).any():
            raise ValueError(f"{name}: metric depth must be > 0 everywhere (found {int((v <= 0).sum())} pixels <= 0); "
                             f"if near pixels are bright/0 here, this is not metric depth: pick another convention")
        finite = torch.isfinite(v)
        b = v.shape[0]
        fmax = torch.where(finite, v, torch.zeros_like(v)).reshape(b, -1).amax(1).view(-1, 1, 1, 1)
        v = torch.where(finite, v, fmax * 1e6)  # +inf (sky) -> far beyond everything: disparity ~ 0
        if bool(near) != bool(far):
            raise ValueError("near / far: set both (the metric depth range) or leave both at 0")
        if near and far:
            if not 0 < near < far:
                raise ValueError(f"{name}: need 0 < near < far, got near={near}, far={far}")
            d = metric_depth_to_disparity(v, near=near, far=far)
        else:
            d = metric_depth_to_disparity(v)
        d = torch.where(finite, d, torch.zeros_like(d))
    else:
        if not torch.isfinite(v).all():
            raise ValueError(f"{name}: the depth map contains infinite values; use the 'metric depth' convention "
                             f"or clean it first")
        d = v if convention == CONVENTIONS[0] else 1.0 - v
        d = normalise_disparity(d) if normalise else d.clamp(0.0, 1.0)
    if size is not None and tuple(d.shape[-2:]) != tuple(int(s) for s in size):
        d = F.interpolate(d, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    return d.clamp(0.0, 1.0).contiguous()


def depth_for_image(values: torch.Tensor, size: Sequence[int], name: str = "depth",
                    convention: Optional[str] = None) -> Tuple[torch.Tensor, List[str]]:
    """Disparity ``[F,1,H,W]`` 0..1 for an image of ``size`` ``(H, W)`` from a depth input, and notes for the user.

    ``values`` ``[F,1,h,w]``: our disparity already (``convention=None``, e.g. a DEPTH) or a map in ``convention``
    (converted and normalised by :func:`convert_depth_map`). A map of another size is resized (bilinear) and a
    note says so (the renderer itself refuses a size mismatch). Raises ``ValueError`` naming ``name``.
    """
    check_map(values, name, "depth map")
    disp = values.float() if convention is None else convert_depth_map(values, convention, normalise=True, name=name)
    check_finite(disp, name, "clean the depth map or estimate it again")
    notes = []
    h, w = int(size[0]), int(size[1])
    if tuple(disp.shape[-2:]) != (h, w):
        notes.append(f"{name} was {disp.shape[-1]}x{disp.shape[-2]}, resized to the image's {w}x{h}")
        disp = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return disp, notes

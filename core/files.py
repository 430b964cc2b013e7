"""File formats, read and written in one place: images and depth maps (the CLI, the simulator's image folders).

* **Images**: anything Pillow opens, read as RGB (grey, palette and alpha images are converted; alpha dropped;
  16-bit grey ``/65535``, 32-bit integer and float grey as for depth maps, clipped to ``0..1``)
  -> ``[1, 3, H, W]`` float32 sRGB ``0..1`` (:func:`read_image`), turned upright by its EXIF orientation (a
  phone's portrait JPEG), as ComfyUI's LoadImage does.
* **Depth maps** (:func:`read_depth`): grey images (8-bit ``/255``, 16-bit ``I;16*`` ``/65535``, 32-bit integer
  ``I`` ``/65535`` up to 65535 else ``/max``, float ``F`` as stored; colour images are read as their luma), or
  arrays: ``.npy`` (never pickled) and ``.safetensors`` (the first tensor), as stored (images turned upright by
  their EXIF orientation like :func:`read_image`, so a depth map saved with its photo's tag stays aligned with it)
  -> ``[1, 1, H, W]`` float32
  in the file's own convention; :func:`read_disparity` turns that into our disparity with
  :func:`diffcamera.core.depth.convert_depth_map` (``"disparity (near bright)"`` as ``diffcamera depth`` writes
  it, ``"depth (near dark)"``, ``"metric depth"``).
* **Writing** (:func:`write_image`): a core image ``[1|C, H, W]`` or ``[1, C, H, W]`` (C = 3 RGB or 1 grey) in
  ``0..1`` in the format of the file's extension (:data:`WRITE_FORMATS`: PNG, JPEG, WebP, TIFF, BMP; any other
  extension, or none, is refused by :func:`check_write_path` before anything is computed) at 8 bits, grey also
  at 16 bits (PNG, TIFF); written to a temporary
  file first and renamed (:func:`diffcamera.core.safe_paths.atomic_write`), so a failed write leaves nothing half
  written. Refusing to overwrite is the caller's (``--force``).

Unreadable or empty files raise ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from . import safe_paths

#: Pillow modes of 16-bit grey images (their values are ``/65535``).
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
#: File extensions :func:`write_image` writes, and their Pillow format.
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".bmp": "BMP"}
#: The formats of :data:`WRITE_FORMATS` that hold 16-bit grey.
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")


def check_write_path(path: str, name: str = "output", bits: int = 8) -> str:
    """``path`` ends in an extension :func:`write_image` writes at ``bits`` (8, or 16 for grey): else
    ``ValueError`` naming ``name`` and the extensions to use. Returns the Pillow format."""
    ext = os.path.splitext(path)[1].lower()
    fmt = WRITE_FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(WRITE_FORMATS)
        stem = os.path.splitext(path)[0] or "out"
        what = f"extension {ext!r} is not an image format this writes" if ext else "has no extension"
        raise ValueError(f"{name} {path}: {what}; end the name in one of {known} (e.g. {stem}.png)")
    if bits == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        raise ValueError(f"{name} {path}: {fmt} cannot hold 16-bit grey; use .png or .tif, or 8 bits")
    return fmt


def _open_error(path: str, what: str, exc: Exception) -> ValueError:
    return ValueError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})")


def _upright(im):
    """The Pillow image ``im`` turned as its EXIF orientation tag says (itself when it has none)."""
    from PIL import ImageOps
    return ImageOps.exif_transpose(im)


def read_image(path: str) -> torch.Tensor:
    """An image file -> ``[1, 3, H, W]`` float32 sRGB ``0..1``, upright (EXIF orientation applied)."""
    from PIL import Image
    try:
        with Image.open(path) as raw:
            im = _upright(raw)
            if im.mode in SIXTEEN_BIT_MODES or im.mode in ("I", "F"):  # Pillow's convert("RGB") clips these at 255
                arr = np.repeat(_grey_values(im)[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types
        raise _open_error(path, "image", exc) from exc
    if arr.size == 0:
        raise ValueError(f"{path}: empty image")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: the image holds NaN or infinite values; save it with finite colours 0..1")
    arr = np.clip(arr, 0.0, 1.0)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def _grey_values(im) -> np.ndarray:
    if im.mode in SIXTEEN_BIT_MODES:
        return np.asarray(im, dtype=np.float32) / 65535.0
    if im.mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        return (arr / (65535.0 if arr.size == 0 or arr.max() <= 65535 else arr.max())).astype(np.float32)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def read_depth(path: str) -> torch.Tensor:
    """A depth file -> ``[1, 1, H, W]`` float32 values in the file's own convention (see the module text)."""
    try:
        if path.lower().endswith(".npy"):
            with np.errstate(over="ignore"):   # values beyond float32 become inf, refused where they matter
                arr = np.load(path, allow_pickle=False).astype(np.float32)
        elif path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file
            arr = next(iter(load_file(path).values())).float().numpy()
        else:
            from PIL import Image
            with Image.open(path) as im:
                arr = _grey_values(_upright(im))
    except Exception as exc:  # noqa: BLE001 - numpy, safetensors and Pillow raise many types
        raise _open_error(path, "depth map", exc) from exc
    while arr.ndim > 2 and arr.shape[0] == 1:     # leading batch / channel axes of one ([1, 1, H, W] arrays)
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):   # H × W × channels: the first channel
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{path}: a depth map must be a single-channel 2-D image, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]


def read_disparity(path: str, convention: str = "disparity (near bright)", normalise: bool = True,
                   size: Optional[Sequence[int]] = None, name: str = "depth") -> torch.Tensor:
    """A depth file -> our disparity ``[1, 1, H, W]`` 0..1 (near = 1): :func:`read_depth`, then
    :func:`diffcamera.core.depth.convert_depth_map` (``convention``, ``normalise``, resized to ``size``; errors
    name ``name``)."""
    from .depth import convert_depth_map
    return convert_depth_map(read_depth(path), convention, normalise=normalise, size=size, name=name)


def write_image(image: torch.Tensor, path: str, bits: int = 8) -> None:
    """Write a core image ``[C, H, W]`` or ``[1, C, H, W]`` (C = 3 or 1) in ``0..1`` to ``path`` (folders created),
    8-bit, or 16-bit for grey (PNG)."""
    from PIL import Image
    t = image[0] if image.dim() == 4 else image
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"write_image: expected [C,H,W] with C = 1 or 3, got {tuple(image.shape)}")
    if bits not in (8, 16) or (bits == 16 and t.shape[0] != 1):
        raise ValueError(f"write_image: {bits}-bit is not supported for {t.shape[0]} channel(s) (8, or 16 for grey)")
    arr = t.detach().float().clamp(0, 1).cpu().numpy()
    scale, dtype = (65535.0, np.uint16) if bits == 16 else (255.0, np.uint8)
    arr = np.round(arr * scale).astype(dtype)
    fmt = check_write_path(path, "write_image:", bits)
    picture = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with safe_paths.atomic_write(path) as tmp:
        picture.save(tmp, format=fmt)

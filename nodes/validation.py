"""Every node input is untrusted: one checker, driven by each node's own schema, run before any work.

ComfyUI v0.3.64 converts widget values (``float()``, ``int()``, ``str()``) and checks ``min``/``max``, but lets
through NaN, V3 COMBO values outside their options, and whatever JSON a client sends for a custom type (a dict
as DIFFCAMERA_DATASET, a string as CONDITIONING). :func:`checked_inputs` wraps a node's ``execute``: it walks the
node's V1 input view (``cls.INPUT_TYPES()``, the same view ComfyUI validates against) and refuses, with a message
naming the input and the fix:

* FLOAT: not a real number, NaN, ±inf, outside ``min``/``max``;  INT: not an integer, outside ``min``/``max``;
* BOOLEAN: not a bool;  COMBO: a value that is not one of the options the node offers (named, listed);
* STRING: not a string, NUL/control characters (tab and newline excepted), over :data:`MAX_STRING_CHARS`;
* IMAGE ``[B,H,W,C]`` / MASK ``[B,H,W]``: not a float tensor of that shape, zero pixels, NaN/inf;
* CONDITIONING: not a non-empty list of ``[tensor, dict]``;
* the pack's own types by ``isinstance``: DEPTH (:class:`~diffcamera.core.values.DepthMap`), FOCUS
  (:class:`~diffcamera.core.values.Focus`), DIFFCAMERA_DATASET (:class:`~diffcamera.core.values.SimulatedDataset`),
  DEPTH_MODEL / DIFFCAMERA_MODEL / MODEL (a model handle with the right model inside);
* a required input that is missing (``None``).

:func:`require_memory` is the shared up-front memory refusal (the free memory comes from
:func:`diffcamera.runtime.free_memory`).
"""
from __future__ import annotations

import fractions
import functools
import inspect
import math
import numbers
from typing import Callable, Optional

import torch

from .. import runtime as rt
from ..core.checks import disparity_range_problem
from ..core.depth import is_depth_model
from ..core.pipeline import PhysicsOnly
from ..core.values import DepthMap, Focus, SimulatedDataset

#: Longest STRING input accepted (a focus-point list for a big batch fits easily).
MAX_STRING_CHARS = 16384
#: COMBO choices listed in an error message (the rest is counted).
LISTED_CHOICES = 12


class InputError(ValueError):
    """A node input was refused; the message names the input and the fix."""


class NotEnoughMemory(ValueError):
    """Work refused up front because its estimated peak memory exceeds the device's free memory."""


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return f"a {type(value).__name__}"


def _range_text(info: dict) -> str:
    lo, hi = info.get("min"), info.get("max")
    if lo is not None and hi is not None:
        return f" between {lo:g} and {hi:g}"
    if lo is not None:
        return f" of at least {lo:g}"
    if hi is not None:
        return f" of at most {hi:g}"
    return ""


def _check_number(name: str, value, info: dict, integer: bool) -> None:
    kind = "a whole number" if integer else "a finite number"
    # a float-like value (int, float, numpy scalar); a Fraction is Real but no widget value and not float-formattable
    ok_type = isinstance(value, numbers.Integral) if integer else (
        isinstance(value, numbers.Real) and not isinstance(value, fractions.Fraction))
    if isinstance(value, bool) or not ok_type:
        raise InputError(f"{name}: expected {kind}{_range_text(info)}, got {_describe(value)}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:   # an int too large for a float
        finite = False
    if not integer and not finite:
        raise InputError(f"{name}: must be {kind}{_range_text(info)}, got {str(value)[:40]}; type a number")
    lo, hi = info.get("min"), info.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{name}: must be{_range_text(info)}, got {value}")


def _check_string(name: str, value) -> None:
    if not isinstance(value, str):
        raise InputError(f"{name}: expected text, got {_describe(value)}")
    if len(value) > MAX_STRING_CHARS:
        raise InputError(f"{name}: {len(value)} characters is too long (at most {MAX_STRING_CHARS})")
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
        raise InputError(f"{name}: contains a NUL or control character; remove it")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):   # a lone surrogate (JSON "\ud800"): no UTF-8 text has it
        raise InputError(f"{name}: contains an invalid character (a lone UTF-16 surrogate); retype the text")


def _check_combo(name: str, value, info: dict) -> None:
    options = list(info.get("options") or [])
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value not in options:
        shown = ", ".join(repr(o) for o in options[:LISTED_CHOICES])
        more = f" and {len(options) - LISTED_CHOICES} more" if len(options) > LISTED_CHOICES else ""
        got = repr(value)[:80] if isinstance(value, (str, int, float)) else _describe(value)
        raise InputError(f"{name}: {got} is not one of the choices ({shown}{more}); pick one of them")


def _tensor_problem(value, dims, what: str, layout: str) -> Optional[str]:
    if not isinstance(value, torch.Tensor) or value.dim() not in dims or not value.is_floating_point():
        return f"expected {what} (a float tensor {layout}), got {_describe(value)}"
    if value.numel() == 0:
        return f"the {what.split()[-1].lower()} is empty (shape {tuple(value.shape)}); give at least one pixel"
    if not bool(torch.isfinite(value).all()):
        return f"the {what.split()[-1].lower()} contains NaN or infinite values; clean it first"
    return None


def _image_problem(value) -> Optional[str]:
    p = _tensor_problem(value, (4,), "an IMAGE", "[B,H,W,C]")
    if p is None and value.shape[-1] not in (1, 3, 4):
        return f"expected an IMAGE [B,H,W,C] with 1, 3 or 4 channels, got shape {tuple(value.shape)}"
    return p


def _mask_problem(value) -> Optional[str]:
    return _tensor_problem(value, (2, 3), "a MASK", "[B,H,W]")


def _conditioning_problem(value) -> Optional[str]:
    fix = "connect a text encoder's CONDITIONING output"
    if not isinstance(value, (list, tuple)) or not value:
        return f"expected CONDITIONING (a list of [tensor, dict]), got {_describe(value)}; {fix}"
    for i, item in enumerate(value):
        if (not isinstance(item, (list, tuple)) or len(item) < 2 or not isinstance(item[0], torch.Tensor)
                or item[0].dim() != 3 or item[0].numel() == 0 or not isinstance(item[1], dict)):
            return f"entry {i} is not [tensor [B,T,D], dict]; {fix}"
        pooled = item[1].get("pooled_output")
        if pooled is not None and not (isinstance(pooled, torch.Tensor) and pooled.dim() == 2 and pooled.numel() > 0
                                       and pooled.is_floating_point()):
            return f"entry {i}'s pooled_output is not a float tensor [B,D]; {fix}"
    return None


def _depth_problem(value) -> Optional[str]:
    if not isinstance(value, DepthMap):
        return f"expected a DEPTH (from DepthEstimate or DepthFromImage), got {_describe(value)}"
    if value.disparity.numel() == 0:
        return "the depth map is empty"
    return disparity_range_problem(value.disparity)


def _focus_problem(value) -> Optional[str]:
    if not isinstance(value, Focus):
        return f"expected a FOCUS (from FocusPicker), got {_describe(value)}"
    fix = "pick the focus again with FocusPicker"
    for field, what in (("disparity", "focus disparity"), ("x", "focus point's x"), ("y", "focus point's y")):
        t = getattr(value, field)
        if not isinstance(t, torch.Tensor) or t.numel() == 0 or not t.is_floating_point() \
                or not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > 1).any()):
            return f"the {what} must be finite values in 0..1; {fix}"
    if not value.x.numel() == value.y.numel() == value.disparity.numel():
        return f"the focus has {value.x.numel()} x, {value.y.numel()} y and {value.disparity.numel()} disparity values; {fix}"
    return None


def _handle_problem(value, what: str, source: str, needs: Callable) -> Optional[str]:
    model = getattr(value, "model", None)
    if model is None or not needs(model):
        return f"expected a {what} (from {source}), got {_describe(value)}"
    return None


TYPE_CHECKS = {
    "IMAGE": _image_problem,
    "MASK": _mask_problem,
    "CONDITIONING": _conditioning_problem,
    "DEPTH": _depth_problem,
    "FOCUS": _focus_problem,
    "DIFFCAMERA_DATASET": lambda v: None if isinstance(v, SimulatedDataset) else
    f"expected a DIFFCAMERA_DATASET (from SimulateRefocusDataset), got {_describe(v)}",
    "DEPTH_MODEL": lambda v: _handle_problem(v, "DEPTH_MODEL", "DepthModelLoader", is_depth_model),
    "DIFFCAMERA_MODEL": lambda v: None if isinstance(v, PhysicsOnly) else
    _handle_problem(v, "DIFFCAMERA_MODEL", "DiffCamera ModelLoader", lambda m: hasattr(m, "velocity")),
    "MODEL": lambda v: None if hasattr(v, "model") else
    f"expected a MODEL (from a diffusion model loader), got {_describe(v)}",
}


def check_value(name: str, io_type: str, info: dict, value, optional: bool) -> None:
    """Refuse ``value`` for input ``name`` of type ``io_type`` (V1 ``info`` dict) with an :class:`InputError`."""
    if value is None:
        if optional:
            return
        raise InputError(f"{name}: required; connect or set it")
    if io_type == "FLOAT":
        _check_number(name, value, info, integer=False)
    elif io_type == "INT":
        _check_number(name, value, info, integer=True)
    elif io_type == "BOOLEAN":
        if not isinstance(value, bool):
            raise InputError(f"{name}: expected true or false, got {_describe(value)}")
    elif io_type == "STRING":
        _check_string(name, value)
    elif io_type == "COMBO" or isinstance(io_type, list):
        _check_combo(name, value, info if io_type == "COMBO" else {"options": io_type})
    elif io_type in TYPE_CHECKS:
        problem = TYPE_CHECKS[io_type](value)
        if problem:
            raise InputError(f"{name}: {problem}")


def check_node_inputs(cls, values: dict) -> None:
    """Check every declared input present in ``values`` against ``cls``'s own schema (see the module doc)."""
    spec = cls.INPUT_TYPES()
    for section, optional in (("required", False), ("optional", True)):
        for name, entry in (spec.get(section) or {}).items():
            if name not in values:
                continue
            io_type = entry[0]
            info = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            check_value(name, io_type, info, values[name], optional)


def checked_inputs(execute):
    """Decorator for a node's ``execute`` (under ``@classmethod``): :func:`check_node_inputs` on the call's
    arguments (defaults included) before the body runs."""
    signature = inspect.signature(execute)

    @functools.wraps(execute)
    def wrapper(cls, *args, **kwargs):
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        values = {k: v for k, v in bound.arguments.items() if k != "cls"}
        check_node_inputs(cls, values)
        return execute(cls, *args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ memory
def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def require_memory(needed_bytes: int, device, what: str, fix: str) -> Optional[int]:
    """Refuse (:class:`NotEnoughMemory`) before starting when ``needed_bytes`` exceed the free memory of
    ``device`` (:func:`diffcamera.runtime.free_memory`); ``fix`` names the setting to change. Unknown free
    memory (no ``/proc/meminfo``, no CUDA query, no ``DIFFCAMERA_MEMORY_LIMIT_MB``) lets the work run. Returns the
    free memory it compared with."""
    device = torch.device(device) if device is not None else rt.compute_device()
    free = rt.free_memory(device)
    if free is not None and needed_bytes > free:
        raise NotEnoughMemory(f"{what} needs about {format_bytes(needed_bytes)} of {device.type.upper()} memory but "
                              f"only {format_bytes(free)} is free; {fix}")
    return free

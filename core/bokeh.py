"""``render_bokeh``: the public lens-blur renderer (a contract other modules call).

Two modes:

* ``"classical"`` — BokehMe's classical scatter, exactly the formula DiffCamera's simulator used (on
  ``image**gamma``, weights ``(0.5+0.5·tanh(4·(r−|p−q|)))/(r²+0.2)``, output ``(Σw·c/Σw)**(1/gamma)``),
  computed by :mod:`diffcamera.core.bokeh_classical` in a time independent of the blur radius.
* ``"layered"`` — occlusion-aware: depth-ordered layers blurred and composited back to front in linear
  light, hidden background extended behind foreground edges (:mod:`diffcamera.core.bokeh_layered`).

Blur radius convention (:mod:`diffcamera.core.conventions`): ``r = K·|d − d_f|`` px at the image's own
resolution; the signed circle of confusion ``c = K·(d − d_f)`` is positive in front of the focus plane.

Input checks happen before any work and raise ``ValueError`` naming the input. Image/depth of
different sizes are **refused** here (the node resizes the depth itself and says so in its output).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch

from .aperture import Aperture, validate_aperture
from .bokeh_classical import STRIP_BYTES
from .checks import check_blur_strength, check_image_and_depth, check_values
from .conventions import as_batch, linear_to_srgb, srgb_to_linear

Number = Union[float, int]
Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]
MODES = ("classical", "layered")


def check_bokeh_options(*, mode: str = "classical", gamma: float = 4.0, blades: int = 0, rotation: float = 0.0,
                        curvature: float = 0.0, highlight_threshold: float = 1.0, highlight_gain: float = 0.0,
                        catseye: float = 0.0, chromatic_aberration: float = 0.0, focus_range: float = 0.0,
                        focus_falloff: float = 0.05, **layered_options) -> None:
    """Raise ``ValueError`` naming the option for anything :func:`render_bokeh` would refuse among its keyword
    options (no image needed: callers that render frame by frame check once, before any work)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number (BokehMe uses 4), got {gamma}")
    validate_aperture(blades, curvature)
    for name, value, lo, hi in (("highlight_threshold", highlight_threshold, 0.0, 1.0),
                                ("highlight_gain", highlight_gain, 0.0, 1000.0),
                                ("catseye", catseye, 0.0, 1.0),
                                ("chromatic_aberration", chromatic_aberration, -0.1, 0.1),
                                ("focus_range", focus_range, 0.0, 1.0),
                                ("focus_falloff", focus_falloff, 0.0, 1.0)):
        if not (isinstance(value, (int, float)) and lo <= value <= hi):
            raise ValueError(f"{name} must be a number in {lo}..{hi}, got {value}")
    if layered_options and mode != "layered":
        raise ValueError(f"unknown option(s) {sorted(layered_options)} for mode {mode!r}")


def _check_inputs(image, disparity, focus_disparity, K) -> None:
    b = check_image_and_depth(image, disparity, "disparity",
                              "resize the depth map to the image (the BokehSimulate node does this for you)")
    check_values(focus_disparity, b, "focus_disparity")
    check_blur_strength(K, b, *image.shape[-2:])


def coc_map(disparity: torch.Tensor, focus_disparity, K, focus_range: float = 0.0,
            focus_falloff: float = 0.05) -> torch.Tensor:
    """Signed circle of confusion ``[B,1,H,W]`` in px: ``K·(d − d_f)``, or with a ``focus_range`` (a band of
    disparity width ``focus_range`` centred on ``d_f`` kept sharp) ``K·sign(Δ)·ramp(|Δ| − range/2)`` where
    ``ramp`` rises smoothly (C¹) from 0 over ``focus_falloff`` and then has slope 1."""
    b = disparity.shape[0]
    d_f = as_batch(focus_disparity, b, disparity).view(-1, 1, 1, 1)
    k = as_batch(K, b, disparity).view(-1, 1, 1, 1)
    delta = disparity - d_f
    if focus_range <= 0:
        return k * delta if delta.requires_grad else delta.mul_(k)
    e = (delta.abs() - focus_range / 2).clamp_min(0)
    fw = max(float(focus_falloff), 1e-6)
    ramp = torch.where(e < fw, e * e / (2 * fw), e - fw / 2)
    return k * torch.sign(delta) * ramp


def coc_to_mask(coc: torch.Tensor, K: Union[Number, torch.Tensor]) -> torch.Tensor:
    """Signed CoC ``[B,1,H,W]`` px -> the ``0..1`` CoC map (BokehSimulate's MASK output, ``diffcamera bokeh --coc``):
    ``clamp(0.5 + c / (2·K), 0, 1)``, i.e. 0.5 = sharp, 1 = ``c = +K`` (in front of the focus), 0 = ``c = −K``;
    ``K = 0`` gives 0.5 everywhere. ``K``: float or ``[B]``."""
    k = as_batch(K, coc.shape[0], coc).view(-1, 1, 1, 1)
    return torch.where(k > 0, 0.5 + coc / (2 * k.clamp_min(1e-12)), torch.full_like(coc, 0.5)).clamp(0, 1)


def _highlight_boost(image: torch.Tensor, threshold: float, gain: float) -> torch.Tensor:
    """Per-pixel multiplier ``[B,1,H,W]`` ≥ 1 of linear light: ``1 + gain·smoothstep`` of the linear
    luminance above ``threshold`` (both in linear light)."""
    lin = srgb_to_linear(image)
    lum = (0.2126 * lin[:, 0:1] + 0.7152 * lin[:, 1:2] + 0.0722 * lin[:, 2:3])
    x = ((lum - threshold) / max(1.0 - threshold, 1e-6)).clamp(0, 1)
    return 1.0 + gain * x * x * (3 - 2 * x)


def _chromatic_aberration(image: torch.Tensor, amount: float) -> torch.Tensor:
    """Lateral chromatic aberration: red magnified by ``1+amount``, blue by ``1−amount`` about the centre."""
    b, _, h, w = image.shape
    ys = torch.linspace(-1, 1, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1, 1, w, device=image.device, dtype=image.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    chans = []
    for ch, scale in ((0, 1.0 / (1.0 + amount)), (2, 1.0 / (1.0 - amount))):
        grid = torch.stack([gx * scale, gy * scale], dim=-1).unsqueeze(0).expand(b, h, w, 2)
        chans.append(torch.nn.functional.grid_sample(image[:, ch:ch + 1], grid, mode="bilinear",
                                                     padding_mode="border", align_corners=True))
    return torch.cat([chans[0], image[:, 1:2], chans[1]], dim=1)


def render_bokeh(image: torch.Tensor, disparity: torch.Tensor, focus_disparity: Union[Number, torch.Tensor],
                 K: Union[Number, torch.Tensor], *, mode: str = "classical", gamma: float = 4.0,
                 blades: int = 0, rotation: float = 0.0, curvature: float = 0.0,
                 highlight_threshold: float = 1.0, highlight_gain: float = 0.0,
                 catseye: float = 0.0, chromatic_aberration: float = 0.0,
                 focus_range: float = 0.0, focus_falloff: float = 0.05,
                 return_coc: bool = False, callback: Callback = None,
                 memory_budget: Optional[int] = None, **layered_options
                 ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Render lens blur from an all-in-focus image and its disparity.

    Args:
        image: ``[B,3,H,W]`` sRGB ``0..1``.
        disparity: ``[B,1,H,W]`` (or ``[1,1,H,W]``, broadcast) in ``0..1``, near = 1.
        focus_disparity: float or ``[B]`` tensor, the disparity rendered sharp.
        K: float or ``[B]`` tensor ≥ 0, blur radius in px per unit ``|d − d_f|`` at this resolution.
        mode: ``"classical"`` (BokehMe's scatter, DiffCamera's simulator) or ``"layered"`` (occlusion-aware).
        gamma: > 0, the classical mode's highlight exponent (ignored by ``"layered"``, which works in linear light).
        blades: 0 = circular aperture, 3..12 = polygonal iris; ``rotation`` (radians) and ``curvature``
            (0 straight .. 1 circular) shape it.
        highlight_threshold, highlight_gain: boost of linear-light highlights above the threshold
            (``0..1`` luminance) by up to ``1 + gain``; ``gain = 0`` (default) is off.
        catseye: 0..1, mechanical vignetting: towards the frame corners the aperture is clipped to a cat's
            eye (a shifted disk) by this strength; 0 (default) is off.
        chromatic_aberration: lateral CA, relative magnification difference of red/blue (e.g. 0.002); 0 = off.
        focus_range: width in disparity of a band around ``d_f`` kept sharp; ``focus_falloff`` its smooth edge.
        return_coc: also return the signed circle of confusion ``[B,1,H,W]`` in px (after ``focus_range``).
        callback: ``callback(done, total, preview)`` progress hook, called per layer (layered) or basis
            kernel (classical) and tile — every fraction of a second at 4096² — may raise to interrupt.
        memory_budget: bytes the render may allocate beyond its inputs: whole-image buffers plus the
            tiles it then works in (default 1 GiB); see :func:`estimate_render_bytes`.
        **layered_options: extra options of :func:`diffcamera.core.bokeh_layered.render_layered`.

    Returns:
        ``[B,3,H,W]`` sRGB ``0..1`` (and the signed CoC map when ``return_coc``). ``K = 0`` returns the
        input unchanged (exactly); a constant disparity at the focus returns it unchanged too.
    """
    _check_inputs(image, disparity, focus_disparity, K)
    check_bokeh_options(mode=mode, gamma=gamma, blades=blades, rotation=rotation, curvature=curvature,
                        highlight_threshold=highlight_threshold, highlight_gain=highlight_gain, catseye=catseye,
                        chromatic_aberration=chromatic_aberration, focus_range=focus_range,
                        focus_falloff=focus_falloff, **layered_options)
    b, _, h, w = image.shape
    if disparity.shape[0] != b:
        disparity = disparity.expand(b, -1, -1, -1)
    disparity = disparity.to(device=image.device, dtype=image.dtype)
    coc = coc_map(disparity, focus_disparity, K, focus_range, focus_falloff)
    r_max = max(-float(coc.detach().min()), float(coc.detach().max()))
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    working = working_budget(budget, b, h, w, mode, image.element_size())
    if r_max == 0.0 and highlight_gain == 0 and chromatic_aberration == 0:
        out = image.clone()
    else:
        aperture = Aperture(blades=int(blades), rotation=float(rotation), curvature=float(curvature))
        if mode == "classical":
            from .bokeh_classical import render_classical
            boost = _highlight_boost(image, highlight_threshold, highlight_gain) if highlight_gain > 0 else None
            out = render_classical(image, coc.abs(), gamma, aperture=aperture, boost=boost, callback=callback,
                                   catseye=catseye, memory_budget=working)
        else:
            from .bokeh_classical import by_rows
            from .bokeh_layered import render_layered

            def to_linear(x):
                lin = srgb_to_linear(x)
                return lin * _highlight_boost(x, highlight_threshold, highlight_gain) if highlight_gain > 0 else lin
            lin = by_rows(to_linear, image)
            out = render_layered(lin, coc, aperture=aperture, callback=callback, catseye=catseye,
                                 memory_budget=working, **layered_options)
            del lin
            out = by_rows(linear_to_srgb, out, None if out.requires_grad else out)
        if chromatic_aberration:
            out = _chromatic_aberration(out, float(chromatic_aberration))
        out = out.clamp(0, 1) if out.requires_grad else out.clamp_(0, 1)
    return (out, coc) if return_coc else out


#: Default ``memory_budget`` of :func:`render_bokeh` (bytes).
DEFAULT_MEMORY_BUDGET = 1024 ** 3
#: The renderer's working buffers never get less than this, even when the whole-image buffers alone
#: exceed the budget (so the estimate then exceeds the budget by whole-image bytes + this).
MIN_WORKING_BYTES = 64 * 1024 ** 2
#: Whole-image buffers of :func:`render_bokeh` per pixel and image, in floats (input excluded):
#: classical: CoC, radius, mass, c^γ, numerator, denominator, tile outputs; layered: CoC, the linear
#: copy, the output, one spare (a tile's output before it is copied).
_WHOLE_FLOATS = {"classical": 1 + 1 + 1 + 3 + 3 + 1 + 3, "layered": 1 + 3 + 3 + 1}
#: Peak resident memory exceeds the bytes the renderer counts by the allocator's overhead (freed tile
#: buffers not yet returned to the system): up to 13 % measured at 4096²; the estimate includes this factor.
ALLOCATOR_MARGIN = 1.2
#: Kernel spectra one render needs, in floats per pixel of its FFT grid: classical 9 + 7 full-resolution
#: basis kernels plus the reduced levels; layered two node kernels for each of up to ~24 layers.
_SPECTRA_FLOATS = {"classical": 20, "layered": 48}


def _whole_image_bytes(batch: int, height: int, width: int, mode: str, element_size: int = 4) -> int:
    """Whole-image buffers, strip temporaries and the kernel-spectrum cache (at most its bound)."""
    from .bokeh_classical import SPECTRUM_CACHE_BYTES
    spectra = min(SPECTRUM_CACHE_BYTES, height * width * _SPECTRA_FLOATS[mode] * element_size)
    return batch * height * width * _WHOLE_FLOATS[mode] * element_size + 8 * STRIP_BYTES + spectra


def working_budget(memory_budget: int, batch: int, height: int, width: int, mode: str,
                   element_size: int = 4) -> int:
    """Bytes left to the engine's working buffers (tiles, per-layer state) under ``memory_budget`` once
    the whole-image buffers and cached spectra are counted (at least :data:`MIN_WORKING_BYTES`)."""
    return max(MIN_WORKING_BYTES, int(memory_budget) - _whole_image_bytes(batch, height, width, mode, element_size))


def estimate_render_bytes(batch: int, height: int, width: int, mode: str = "layered", max_radius: float = 64.0,
                          *, memory_budget: Optional[int] = None, catseye: float = 0.0,
                          element_size: int = 4) -> int:
    """Peak bytes that :func:`render_bokeh` allocates (on top of its inputs) for ``batch`` images of
    ``height × width`` in ``mode`` with blur radii up to ``max_radius`` px (``K·max|d − d_f|``), float32.

    The renderer tiles itself so that the buffers it counts — whole-image buffers, the kernel-spectrum
    cache and its tiles — stay within ``memory_budget`` (default :data:`DEFAULT_MEMORY_BUDGET`); the
    allocator's overhead comes on top (:data:`ALLOCATOR_MARGIN`, included here), and when the whole-image
    buffers alone exceed the budget (about 8192² and up at 1 GiB) the tiles get :data:`MIN_WORKING_BYTES`.
    Calibrated against peak resident memory at 1024², 2048² and 4096² (README): measured peaks stay below
    it. Raises ``ValueError`` for an unknown mode or negative sizes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch < 0 or height < 0 or width < 0 or max_radius < 0:
        raise ValueError("batch, height, width and max_radius must be >= 0")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    whole = _whole_image_bytes(batch, height, width, mode, element_size)
    work_budget = working_budget(budget, batch, height, width, mode, element_size)
    if mode == "classical":
        from .bokeh_classical import _estimate_bytes, band_layout
        s_max = band_layout(max_radius)[-1].level
        reach = int(math.ceil(max_radius)) + 2 + 3 * s_max
        one_pass = _estimate_bytes(3, height, width, 2 * reach) * element_size // 4
        anchors = 1
    else:
        from .bokeh_layered import _plan_layers, working_bytes_per_px
        one_pass = height * width * working_bytes_per_px(_plan_layers(max_radius), False, element_size)
        anchors = 1
    if catseye > 0:   # the anchors' renders are summed into one more whole-image accumulator
        whole += batch * height * width * 3 * element_size
    return int(ALLOCATOR_MARGIN * (whole + min(one_pass, work_budget) * anchors))

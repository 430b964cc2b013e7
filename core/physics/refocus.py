"""Physics refocus: invert the layered renderer for the image's current blur, render the requested one.

``refocus_physics(image, disparity, focus_disparity, K)``:

1. the input's own focus disparity ``d_in`` and blur strength ``K_in`` — given, or estimated from the image
   and its depth (:func:`~diffcamera.core.physics.blur_estimate.estimate_input_blur`);
2. its all-in-focus image and the colour behind its foreground rims, by inverting the layered renderer
   (:func:`~diffcamera.core.physics.deconvolve.deconvolve`);
3. the layered render of that estimate at the requested focus ``d_f`` and strength ``K`` (the estimated
   hidden colour shows through the requested blurred rims instead of a guess).

Works on batches (per-image focus, strength and depth), on the device of ``image``; deterministic. Needs no
weights: it is the DiffCameraRefocus node's default ("physics") and the starting point of the DiT models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch

from ..aperture import Aperture
from ..bokeh_layered import LayeredOperator
from ..checks import check_blur_strength, check_image_and_depth, check_values
from ..conventions import as_batch, linear_to_srgb, srgb_to_linear
from .blur_estimate import BlurEstimate, estimate_input_blur
from .deconvolve import Deconvolution, SolverSettings, deconvolve

Number = Union[float, int]
Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]


@dataclass
class PhysicsResult:
    """The physics refocus of a batch.

    Attributes:
        image: ``[B, 3, H, W]`` sRGB ``0..1``: the refocused image.
        all_in_focus: ``[B, 3, H, W]`` sRGB ``0..1``: the deblurred estimate (the deblur task).
        hidden: ``[B, 3, H, W]`` sRGB ``0..1``: the estimated colour behind foreground rims (the input itself for an
            image with no input blur: nothing was estimated, and the render used the renderer's own guess).
        input_focus_disparity: ``[B]`` the input's focus disparity used (given or estimated).
        input_K: ``[B]`` the input's blur strength used, px per unit disparity at this resolution.
        estimate: the :class:`BlurEstimate` when the input's blur was estimated, else ``None``.
        iterations: CG iterations run per image.
        estimated: whether ``(input_focus_disparity, input_K)`` each came from ``estimate`` (a given one overrides
            its estimate).
    """

    image: torch.Tensor
    all_in_focus: torch.Tensor
    hidden: torch.Tensor
    input_focus_disparity: torch.Tensor
    input_K: torch.Tensor
    estimate: Optional[BlurEstimate]
    iterations: int
    estimated: Tuple[bool, bool] = (False, False)

    def describe(self) -> str:
        return describe_input_blur(self.input_focus_disparity, self.input_K, self.estimate, self.estimated)


def describe_input_blur(focus_disparity: torch.Tensor, K: torch.Tensor, estimate: Optional[BlurEstimate],
                        estimated: Tuple[bool, bool] = (True, True)) -> str:
    """One line per image of the input blur a refocus used (``[B]`` focus disparities and ``K`` px), saying which of
    the two were estimated (``estimated``; both given when ``estimate`` is ``None``) and, where an estimated blur is
    weak, :meth:`BlurEstimate.caveat`."""
    focus_est, k_est = estimated if estimate is not None else (False, False)
    how = lambda est: "estimated" if est else "given"  # noqa: E731
    parts = []
    for i, (d, k) in enumerate(zip(focus_disparity, K)):
        if focus_est == k_est:
            line = f"input focus disparity {float(d):.3f}, blur K {float(k):.2f} px ({how(k_est)})"
        else:
            line = (f"input focus disparity {float(d):.3f} ({how(focus_est)}), "
                    f"blur K {float(k):.2f} px ({how(k_est)})")
        caveat = estimate.caveat(i) if k_est else ""
        parts.append(line + (f": {caveat}" if caveat else ""))
    return "; ".join(parts)


def check_physics_inputs(image: torch.Tensor, disparity: torch.Tensor, focus_disparity, K,
                         input_focus_disparity=None, input_K=None) -> int:
    """Raise ``ValueError`` naming the input before any work (:mod:`diffcamera.core.checks`); returns the batch
    size. Blur strengths are bounded by the largest bokeh level (:func:`~diffcamera.core.checks.check_blur_strength`)."""
    b = check_image_and_depth(image, disparity, "depth", "estimate the depth from this image (or resize it)")
    h, w = image.shape[-2:]
    check_values(focus_disparity, b, "focus disparity", 0.0, 1.0)
    check_values(input_focus_disparity, b, "input focus disparity", 0.0, 1.0)
    check_blur_strength(K, b, h, w, "K")
    check_blur_strength(input_K, b, h, w, "input K")
    return b


def estimate_physics_bytes(batch: int, height: int, width: int, max_radius: float) -> int:
    """Peak bytes (an upper estimate) that :func:`refocus_physics` allocates beyond its inputs for ``batch`` images of
    ``height × width`` whose input or requested blur reaches ``max_radius`` px: the conjugate-gradient state and
    IRLS weights of the solve (32 three-channel float32 maps, the pyramid included) and twice the layered
    operator's own peak (:func:`diffcamera.core.bokeh.estimate_render_bytes`: its precomputation is kept while it
    is applied). Measured peak resident growth, one image, level 64: 294 / 1325 / 3519 MiB at 512² / 1024² /
    2048² against estimates of 440 / 1526 / 3994 MiB."""
    from ..bokeh import estimate_render_bytes
    maps = 32 * 3 * 4 * int(batch) * int(height) * int(width)
    return maps + 2 * estimate_render_bytes(int(batch), int(height), int(width), "layered", float(max_radius))


def _render_request(coc: torch.Tensor, aperture: Aperture, sol: Deconvolution) -> torch.Tensor:
    """The request's layered render (signed CoC ``coc [B, 1, H, W]`` px) of the all-in-focus estimate,
    ``[B, 3, H, W]`` linear light.

    Where an image was deblurred (``sol.deblurred``), the solved hidden colour shows through the request's
    blurred rims. An image that had no blur to invert has no hidden colour estimate (the solve returns the input,
    whose pixels behind a rim are the occluder itself), so the renderer's own guess from the surface's neighbouring
    pixels is used, as BokehSimulate does (measured: 0.13 / 0.16 dB better at 64² / 256² than using the input).
    A batch that mixes both is rendered as two sub-batches (each image once).
    """
    deblurred = sol.deblurred.to(sol.image.device)
    out = torch.empty_like(sol.image)
    for with_hidden in (True, False):
        idx = (deblurred == with_hidden).nonzero().flatten()
        if idx.numel():
            op = LayeredOperator(coc[idx].contiguous(), aperture=aperture)
            out[idx] = op(sol.image[idx].contiguous(), hidden=sol.hidden[idx].contiguous() if with_hidden else None)
    return out


def refocus_physics(image: torch.Tensor, disparity: torch.Tensor, focus_disparity: Union[Number, torch.Tensor],
                    K: Union[Number, torch.Tensor], *, input_focus_disparity: Union[None, Number, torch.Tensor] = None,
                    input_K: Union[None, Number, torch.Tensor] = None, aperture: Aperture = Aperture(),
                    settings: SolverSettings = SolverSettings(), callback: Callback = None) -> PhysicsResult:
    """Refocus ``image`` to ``focus_disparity`` with blur strength ``K`` (module docstring).

    Args:
        image: ``[B, 3, H, W]`` sRGB ``0..1``.
        disparity: ``[B|1, 1, H, W]`` ``0..1``, near = 1, same size.
        focus_disparity: the requested focus disparity ``d_f``: float or ``[B]``.
        K: the requested blur strength, px per unit disparity at this resolution (``level_to_K``): float or ``[B]``.
        input_focus_disparity, input_K: the input's own focus and strength; estimated from the image when
            either is ``None`` (a given one overrides its estimate).
        aperture: aperture shape of both the input and the request.
        settings: the solver's weights and iteration counts.
        callback: ``callback(done, total, None)`` during the solve (may raise to interrupt: Cancel).

    Returns:
        :class:`PhysicsResult`.
    """
    b = check_physics_inputs(image, disparity, focus_disparity, K, input_focus_disparity, input_K)
    img = image.float()
    dev = img.device
    disp = disparity.to(device=dev, dtype=torch.float32).expand(b, -1, -1, -1).contiguous()
    estimate = None
    if input_focus_disparity is None or input_K is None:
        estimate = estimate_input_blur(img, disp)
    d_in = as_batch(estimate.focus_disparity if input_focus_disparity is None else input_focus_disparity, b, disp)
    k_in = as_batch(estimate.K if input_K is None else input_K, b, disp)
    d_req = as_batch(focus_disparity, b, disp)
    k_req = as_batch(K, b, disp)
    progress = None if callback is None else (lambda done, total: callback(done, total, None))
    lin = srgb_to_linear(img)
    with torch.no_grad():
        sol = deconvolve(lin, disp, d_in, k_in, aperture=aperture, settings=settings, callback=progress)
        coc = k_req.view(-1, 1, 1, 1) * (disp - d_req.view(-1, 1, 1, 1))
        out = _render_request(coc, aperture, sol)
    return PhysicsResult(linear_to_srgb(out.clamp(0, 1)), linear_to_srgb(sol.image), linear_to_srgb(sol.hidden),
                         d_in.cpu(), k_in.cpu(), estimate, sol.iterations,
                         (input_focus_disparity is None, input_K is None))

"""``RefocusPipeline``: the one object that refocuses an image, with or without a learned model.

Steps of a call (as diffusers' pipelines, everything a refocus needs is decided here):

1. check the inputs before any work (sizes, batches, values);
2. **physics** (:func:`diffcamera.core.physics.refocus_physics`): the input's current focus and blur (given or
   estimated), its all-in-focus image by inverting the layered renderer, and the layered render of the request;
3. **refinement** (only with a denoiser): the DiT starts from the physics estimate noised to ``denoise`` and
   denoises it, conditioned on the estimate and the per-pixel camera map of the request
   (:func:`diffcamera.core.dit.sampler.refocus`): it adds what physics cannot recover.

Where the denoiser runs is owned by the :class:`Placement` the host gives (ComfyUI's model management, or plain
torch in the CLI); the prompt embedding is passed per call, never stored on the model; a CUDA out-of-memory
error is turned into advice naming the loader setting to change; ``callback(done, total, preview)`` reports
progress over both stages and may raise to cancel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Tuple, Union

import torch

from .checks import check_batch, check_image_and_depth
from .conventions import as_batch
from .physics import BlurEstimate, SolverSettings, check_physics_inputs, describe_input_blur, refocus_physics
from .values import Focus

Callback = Optional[Callable[[int, int, Optional[torch.Tensor]], None]]


class PhysicsOnly:
    """The weight-free choice of the model loader: refocus by physics alone (no denoiser, no file)."""

    def __repr__(self) -> str:
        return "PhysicsOnly()"


class Placement(Protocol):
    """Where a denoiser runs: implemented by the host runtime (ComfyUI's model management or plain torch)."""

    def load(self) -> None:
        """Bring the denoiser's modules to their compute device (freeing others' memory if needed)."""

    def release(self) -> None:
        """After an out-of-memory error: free what was loaded."""

    def advice(self) -> str:
        """What to change when the work does not fit (e.g. the loader's weight storage or offload mode)."""


class Denoiser(Protocol):
    """What the sampler needs of a refocus model (toy, FLUX + LoRA, or ComfyUI's FLUX MODEL):
    ``config`` (a :class:`~diffcamera.core.dit.config.RefocusModelConfig`), ``autoencoder``, ``device``,
    ``condition_tokens(ref_latents, camera_map)`` and ``velocity_from_tokens(noisy, sigma, tokens, ids, guidance)``."""

    config: object
    autoencoder: torch.nn.Module
    device: torch.device


@dataclass
class RefocusOutput:
    """``image`` (the refocused image) and ``all_in_focus`` ``[B, 3, H, W]`` sRGB ``0..1`` on the CPU; ``physics``
    the physics stage's refocus (equal to ``image`` without a denoiser); the input blur used and, when it was
    estimated, the :class:`~diffcamera.core.physics.BlurEstimate` (``estimated``: whether the focus and the strength
    each came from it)."""

    image: torch.Tensor
    all_in_focus: torch.Tensor
    physics: torch.Tensor
    input_focus_disparity: torch.Tensor
    input_K: torch.Tensor
    estimate: Optional[BlurEstimate]
    estimated: Tuple[bool, bool] = (False, False)

    def describe(self) -> str:
        return describe_input_blur(self.input_focus_disparity, self.input_K, self.estimate, self.estimated)


class _Stages:
    """Progress over the physics solve and the denoising steps, as one bar."""

    def __init__(self, callback: Callback, physics_total: int, steps: int):
        self.callback, self.physics_total, self.steps = callback, physics_total, steps

    def physics(self, done, total, preview=None):
        if self.callback is not None:
            self.physics_total = total
            self.callback(done, total + self.steps, preview)

    def denoise(self, done, total, preview=None):
        if self.callback is not None:
            self.callback(self.physics_total + done, self.physics_total + total, preview)


class RefocusPipeline:
    """Refocus images: physics, optionally refined by a denoiser (module docstring).

    Args:
        denoiser: a refocus model (:class:`Denoiser`), or ``None`` for the weight-free physics refocus.
        placement: where the denoiser runs (:class:`Placement`); ``None`` = it stays where it is.
        settings: the physics solver's settings.
        device: where the physics runs (default: the denoiser's device, else the CPU).
        interrupt: ``fn()`` that raises to cancel, checked inside every denoising step (per tile and block).
    """

    def __init__(self, denoiser: Optional[Denoiser] = None, placement: Optional[Placement] = None, *,
                 settings: SolverSettings = SolverSettings(), device: Optional[torch.device] = None,
                 interrupt: Optional[Callable[[], None]] = None):
        self.denoiser = denoiser
        self.placement = placement
        self.settings = settings
        self.device = torch.device(device) if device is not None else None
        self.interrupt = interrupt

    @property
    def weight_free(self) -> bool:
        return self.denoiser is None

    def check(self, image: torch.Tensor, disparity: torch.Tensor, focus: Focus, K, *, steps: int = 28,
              denoise: float = 0.5, input_focus_disparity=None, input_K=None) -> int:
        """Refuse bad input (``ValueError`` naming it) before any work; returns the batch size."""
        if not isinstance(focus, Focus):
            raise ValueError(f"focus must be a Focus (FocusPicker), got {type(focus).__name__}")
        check_image_and_depth(image, disparity)
        b = check_physics_inputs(image, disparity, focus.disparity, K, input_focus_disparity, input_K)
        check_batch(focus.batch, b, "focus", "entries")
        if self.denoiser is not None:
            from .dit.sampler import check_inputs
            check_inputs(self.denoiser, image, disparity, focus, K, steps, denoise)
        return b

    @property
    def physics_device(self) -> torch.device:
        """Where the physics stage runs: the pipeline's device, else the denoiser's, else the CPU."""
        if self.device is not None:
            return self.device
        return self.denoiser.device if self.denoiser is not None else torch.device("cpu")

    def physics_bytes(self, image: torch.Tensor, K, input_K=None) -> int:
        """Peak bytes of the physics stage for these inputs (:func:`~diffcamera.core.physics.estimate_physics_bytes`;
        blur radius up to the larger ``K`` of the request and the given input, or twice the request's when the
        input's is estimated: disparities span at most 1)."""
        from .physics import estimate_physics_bytes
        b, _, h, w = image.shape
        k_req = float(torch.as_tensor(K, dtype=torch.float32).max())
        k_in = 2.0 * k_req if input_K is None else float(torch.as_tensor(input_K, dtype=torch.float32).max())
        return estimate_physics_bytes(b, h, w, max(k_req, k_in))

    def tile_size(self, height: int, width: int, tiling: str = "auto", size: int = 0) -> Optional[int]:
        """The denoiser's tile side for an ``height × width`` image (:func:`diffcamera.core.dit.tiling.tile_size_for`:
        ``tiling`` ``"auto"``/``"on"``/``"off"``, ``size`` 0 = the trained size), ``None`` for one pass or without
        a denoiser."""
        if self.denoiser is None:
            return None
        from .dit.tiling import tile_size_for
        return tile_size_for(self.denoiser, height, width, tiling, size)

    def __call__(self, image: torch.Tensor, disparity: torch.Tensor, focus: Focus,
                 K: Union[float, torch.Tensor], *, input_focus_disparity=None, input_K=None, steps: int = 28,
                 seed: int = 0, guidance: float = 2.5, denoise: float = 0.5, tile_size: Optional[int] = None,
                 prompt: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, preview: bool = False,
                 callback: Callback = None) -> RefocusOutput:
        """Refocus ``image`` ``[B, 3, H, W]`` (sRGB ``0..1``) with ``disparity`` ``[B|1, 1, H, W]`` to ``focus``
        with strength ``K`` (px per unit disparity at this resolution; float or ``[B]``).

        ``input_focus_disparity`` / ``input_K``: the input's own focus and strength (``None``: estimated).
        ``steps``, ``seed``, ``guidance``, ``denoise`` (``0 < denoise ≤ 1``: how far the denoiser may move
        from the physics estimate), ``tile_size``, ``prompt`` (``(sequence [1,T,D], pooled [1,P])``, e.g.
        from ComfyUI CONDITIONING; default: the model's own) and ``preview`` only concern the denoiser.
        """
        b = self.check(image, disparity, focus, K, steps=steps, denoise=denoise,
                       input_focus_disparity=input_focus_disparity, input_K=input_K)
        dev = self.physics_device
        img = image.float().to(dev)
        disp = disparity.float().to(dev).expand(b, -1, -1, -1)
        stages = _Stages(callback, self.settings.iterations(1), 0 if self.denoiser is None else int(steps))
        if self.denoiser is not None and self.placement is not None:
            self.placement.load()
            dev = self.denoiser.device
            img, disp = img.to(dev), disp.to(dev)
        try:
            phys = refocus_physics(img, disp, as_batch(focus.disparity.float(), b, disp), K,
                                   input_focus_disparity=input_focus_disparity, input_K=input_K,
                                   settings=self.settings, callback=stages.physics)
            out = phys.image
            if self.denoiser is not None:
                from .dit.sampler import refocus
                out = refocus(self.denoiser, phys.image, disp, focus, K, steps=int(steps), seed=int(seed),
                              guidance=float(guidance), denoise=float(denoise), tile_size=tile_size,
                              callback=stages.denoise, preview=preview, interrupt=self.interrupt,
                              init_image=phys.image, prompt=prompt)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are translated
            from .dit.memory import is_oom
            if is_oom(exc):
                if self.placement is not None:
                    self.placement.release()
                advice = self.placement.advice() if self.placement is not None else "use a smaller image"
                raise RuntimeError(f"out of GPU memory during refocus; the models were unloaded. To fit, {advice}.") \
                    from None
            raise
        return RefocusOutput(out.float().cpu().clamp(0, 1), phys.all_in_focus.float().cpu(), phys.image.float().cpu(),
                             phys.input_focus_disparity, phys.input_K, phys.estimate, phys.estimated)

"""Video maths: a rack focus (a focus pull from one subject to another over a shot), and temporal stability.

Pure torch. Conventions (:mod:`diffcamera.core.conventions`): disparity ``[N,1,H,W]`` in ``0..1`` (near = 1),
a focus point ``(x, y)`` normalised (``0..1``, x right, y down); the frame axis is the batch axis of ComfyUI's
IMAGE / MASK / our DEPTH and FOCUS values.

**Schedule.** A rack focus over ``frames`` frames holds the start focus for ``hold_start`` frames, pulls over
the ``frames − hold_start − hold_end`` frames in between and holds the end focus for ``hold_end`` frames. The
progress of transition frame ``k`` (``0 ≤ k < M``, ``M`` transition frames) is ``ease((k + 1) / (M + 1))``:
strictly between 0 and 1, so exactly ``hold_start`` frames sit at the start focus and ``hold_end`` at the end
focus (with no transition frames the focus cuts). Easing curves of the progress ``t ∈ [0, 1]``:

=============  ===========================  ============================================
``linear``     ``t``                        constant speed
``ease-in``    ``t²``                       starts slowly, arrives at full speed
``ease-out``   ``1 − (1 − t)²``             starts at full speed, settles
``ease-in-out`` ``3t² − 2t³`` (smoothstep)  starts and settles slowly (the classic focus pull)
=============  ===========================  ============================================

**Rendering frames.** :func:`render_frames` is BokehSimulate's job on core tensors: ``image``, depth and focus
each carry one frame (used for every frame) or ``N``; the output has ``N`` frames, rendered one by one with
:func:`diffcamera.core.bokeh.render_bokeh` after the optional temporal smoothing of the depth and the focus.

**Temporal stability.** :func:`smooth_frames` is a centred moving average over the frame axis: frame ``i``
becomes the mean of frames ``i − r … i + r`` (the window is cut at the ends of the shot and renormalised).
It has no lag: a symmetric window leaves a linear ramp in place and moves the midpoint of a symmetric focus
pull by zero frames; it only rounds the pull's corners within ``r`` frames of them, and frames farther than
``r`` from any change are left exactly as they were. Per-frame noise of a static scene falls by about
``1/√(2r + 1)`` (independent noise), frame-to-frame differences by about as much again; moving content is
blurred over ``2r + 1`` frames, so keep ``r`` small for moving shots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from . import focus as core_focus
from .bokeh import check_bokeh_options, estimate_render_bytes, render_bokeh
from .checks import check_batch, check_image, check_map, check_same_size
from .values import Focus

EASINGS = ("ease-in-out", "linear", "ease-in", "ease-out")

#: A rack end: a point ``(x, y)`` (normalised) or a mask ``[1|N,1,H,W]`` (0..1) whose median disparity is used.
End = Union[Tuple[float, float], torch.Tensor]


def ease(t: torch.Tensor, curve: str = "ease-in-out") -> torch.Tensor:
    """Easing curve ``curve`` (one of :data:`EASINGS`) of the progress ``t`` (clamped to ``0..1``)."""
    t = torch.as_tensor(t, dtype=torch.float32).clamp(0.0, 1.0)
    if curve == "linear":
        return t
    if curve == "ease-in":
        return t * t
    if curve == "ease-out":
        return 1.0 - (1.0 - t) ** 2
    if curve == "ease-in-out":
        return t * t * (3.0 - 2.0 * t)
    raise ValueError(f"easing: unknown curve {curve!r}; use one of {', '.join(EASINGS)}")


def check_schedule(frames: int, hold_start: int, hold_end: int) -> None:
    """Raise ``ValueError`` naming the input unless ``frames ≥ 1``, holds ``≥ 0`` and the holds fit in the shot."""
    for name, value in (("frames", frames), ("hold_start", hold_start), ("hold_end", hold_end)):
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"{name}: must be a whole number of frames, got {value!r}")
    if frames < 1:
        raise ValueError(f"frames: a shot needs at least 1 frame, got {frames}")
    if hold_start < 0 or hold_end < 0:
        raise ValueError(f"hold_start / hold_end: must be >= 0, got {hold_start} / {hold_end}")
    if hold_start + hold_end > frames:
        raise ValueError(f"hold_start + hold_end: {hold_start} + {hold_end} frames held do not fit in {frames} "
                         f"frames; lower the holds or raise frames")


def rack_schedule(frames: int, hold_start: int = 0, hold_end: int = 0, curve: str = "ease-in-out") -> torch.Tensor:
    """Progress ``[frames]`` (float32, 0 = start focus, 1 = end focus) of a rack focus (see the module text)."""
    check_schedule(frames, hold_start, hold_end)
    moving = frames - hold_start - hold_end
    t = torch.arange(1, moving + 1, dtype=torch.float32) / (moving + 1)
    return torch.cat([torch.zeros(hold_start), ease(t, curve), torch.ones(hold_end)])


def _focus_at(disparity: torch.Tensor, end: End, frames: int, window: Optional[int], name: str):
    """``(disparity, x, y)``, each ``[1]`` or ``[frames]``, of one rack end read on the depth map(s)."""
    if isinstance(end, torch.Tensor):
        mask = end.float()
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        check_map(mask, name, "mask (0..1; or [N,H,W])")
        check_batch(mask.shape[0], frames, name, "masks", "frames")
        if mask.shape[0] > disparity.shape[0]:  # a mask per frame over a still's depth
            disparity = disparity.expand(mask.shape[0], -1, -1, -1)
        picked = core_focus.focus_from_mask(disparity, mask, name=name)
    else:
        x, y = end
        picked = core_focus.focus_from_point(disparity, float(x), float(y), window=window)
    return picked.disparity.float(), picked.x.float(), picked.y.float()


def rack_focus(disparity: torch.Tensor, start: End, end: End, frames: int, hold_start: int = 0, hold_end: int = 0,
               curve: str = "ease-in-out", window: Optional[int] = None,
               names: Tuple[str, str] = ("start", "end")) -> Focus:
    """A FOCUS batch of ``frames`` frames pulling from ``start`` to ``end``.

    Args:
        disparity: ``[1|frames, 1, H, W]`` normalised disparity: one map for a still (or a locked-off shot), or
            one per frame (then each frame's focus is read on its own map).
        start, end: where the focus starts / ends: a point ``(x, y)`` (normalised; the cluster median of a small
            window around it is read, as FocusPicker does) or a mask ``[1|frames,1,H,W]`` (its median disparity).
        frames, hold_start, hold_end, curve: the schedule (:func:`rack_schedule`).
        window: window side in px for reading a point (``None`` = automatic).
        names: what errors call ``start`` and ``end`` (the caller's input names).

    Returns:
        :class:`Focus` with ``[frames]`` disparities ``d = d_start + p·(d_end − d_start)`` (``p`` the schedule's
        progress), the point moving the same way (for markers), method ``"rack:<curve>"``.
    """
    check_schedule(frames, hold_start, hold_end)
    disparity = core_focus.check_disparity(disparity, "depth")
    check_batch(disparity.shape[0], frames, "depth", "depth maps", "frames")
    progress = rack_schedule(frames, hold_start, hold_end, curve)
    d0, x0, y0 = _focus_at(disparity, start, frames, window, names[0])
    d1, x1, y1 = _focus_at(disparity, end, frames, window, names[1])
    lerp = lambda a, b: (a + progress * (b - a)).float()  # noqa: E731 - [1|F] against [frames]
    return Focus(lerp(x0, x1), lerp(y0, y1), lerp(d0, d1).clamp(0.0, 1.0), [f"rack:{curve}"] * frames)


def smooth_frames(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Centred moving average of ``x`` ``[N, ...]`` over its first (frame) axis, window ``2·radius + 1`` frames cut
    at the ends and renormalised (see the module text). ``radius = 0`` or ``N = 1`` returns ``x`` unchanged."""
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"temporal_smoothing: a radius in frames >= 0, got {radius!r}")
    n = x.shape[0]
    radius = int(radius)
    if radius == 0 or n == 1:
        return x
    flat = x.reshape(n, -1).double()
    csum = torch.cat([torch.zeros(1, flat.shape[1], dtype=flat.dtype, device=flat.device), flat.cumsum(0)])
    idx = torch.arange(n, device=flat.device)
    lo = (idx - radius).clamp(min=0)
    hi = (idx + radius + 1).clamp(max=n)
    mean = (csum[hi] - csum[lo]) / (hi - lo).unsqueeze(1).to(flat.dtype)
    return mean.to(x.dtype).reshape(x.shape)


def temporal_flicker(frames: torch.Tensor) -> float:
    """Mean absolute frame-to-frame difference ``mean |f[t+1] − f[t]|`` of ``frames`` ``[N, ...]`` (N ≥ 2)."""
    if frames.shape[0] < 2:
        raise ValueError("temporal_flicker: needs at least 2 frames")
    return float((frames[1:].double() - frames[:-1].double()).abs().mean())


def frame_counts(name_batches: Sequence[Tuple[str, int]]) -> int:
    """The frame count ``N`` of inputs that are each 1 frame (broadcast) or ``N``; raises naming every input.

    ``name_batches``: ``(input name, its batch size)`` pairs, e.g. ``[("image", 1), ("focus", 24)]`` -> 24.
    """
    n = max(b for _, b in name_batches)
    if any(b not in (1, n) for _, b in name_batches):
        counts = ", ".join(f"{name} {b}" for name, b in name_batches)
        raise ValueError(f"frame counts differ ({counts}): give each input 1 frame (used for every frame) or the "
                         f"same number of frames")
    return n


#: Bytes per pixel and frame of :func:`render_frames` beyond the renderer's own buffers (float32): the image and
#: depth in core layout, each frame's output and CoC, the concatenated result and CoC, and the caller's
#: ComfyUI copies (IMAGE, MASK).
FRAME_BYTES_PER_PIXEL = 4 * (3 + 1 + 3 + 1 + 3 + 1 + 3)


def estimate_frames_bytes(frames: int, height: int, width: int, mode: str = "layered", K: float = 0.0,
                          catseye: float = 0.0) -> int:
    """Peak bytes of :func:`render_frames` for ``frames`` frames of ``height × width`` (frames render one at a
    time: the renderer's estimate for one image, :func:`~diffcamera.core.bokeh.estimate_render_bytes`, plus
    :data:`FRAME_BYTES_PER_PIXEL` for every frame)."""
    return (frames * height * width * FRAME_BYTES_PER_PIXEL
            + estimate_render_bytes(1, height, width, mode, K, catseye=float(catseye)))


@dataclass
class Frames:
    """What :func:`render_frames` made: ``image`` ``[N,3,H,W]`` sRGB 0..1 and ``coc`` ``[N,1,H,W]`` (signed circle of
    confusion in px) on the CPU, the focus disparity ``[1|N]`` each frame was rendered at (after smoothing), ``K``
    and notes for the user (resized depth, smoothing)."""

    image: torch.Tensor
    coc: torch.Tensor
    focus_disparity: torch.Tensor
    K: float
    notes: List[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return int(self.image.shape[0])

    def describe_focus(self, shown: int = 4) -> str:
        d = self.focus_disparity.reshape(-1)
        return ", ".join(f"{float(x):.3f}" for x in d[:shown]) + (" ..." if d.numel() > shown else "")


def render_frames(image: torch.Tensor, disparity: torch.Tensor, focus_disparity: torch.Tensor, K: float, *,
                  depth_name: str = "depth", temporal_smoothing: int = 0, device: Optional[torch.device] = None,
                  callback: Optional[Callable[[int, int, Optional[torch.Tensor]], None]] = None,
                  notes: Sequence[str] = (), **options) -> Frames:
    """Lens blur of ``N`` frames, one at a time (see the module text).

    Args:
        image: ``[1|N,3,H,W]`` sRGB 0..1; disparity: ``[1|N,1,H,W]`` 0..1 at the image's size
            (:func:`diffcamera.core.depth.depth_for_image` resizes a depth input); focus_disparity: ``[1|N]``
            (:func:`diffcamera.core.focus.focus_disparities`); K: px per unit disparity at this resolution.
        depth_name: the depth input's name in messages. temporal_smoothing: radius in frames of
            :func:`smooth_frames` over the depth and the focus (0 = off).
        device: where the frames render (default: the image's); callback: ``callback(done, total, None)`` per
            frame, may raise to cancel. notes: notes to keep in the result (e.g. from the depth conversion).
        **options: :func:`~diffcamera.core.bokeh.render_bokeh`'s keyword options, checked before any work.

    Raises ``ValueError`` naming the input (frame counts that differ, bad options) before any rendering.
    """
    check_image(image)
    check_map(disparity, depth_name)
    check_same_size(disparity, image.shape[-2:], depth_name, "resize it to the image first")
    d_f = torch.as_tensor(focus_disparity, dtype=torch.float32).reshape(-1)
    n = frame_counts([("image", image.shape[0]), (depth_name, disparity.shape[0]), ("focus", d_f.numel())])
    check_bokeh_options(**options)
    disparity = smooth_frames(disparity, temporal_smoothing)
    d_f = smooth_frames(d_f, temporal_smoothing)
    notes = list(notes)
    if temporal_smoothing and max(disparity.shape[0], d_f.numel()) > 1:
        notes.append(f"focus and depth smoothed over ±{int(temporal_smoothing)} frames")
    device = image.device if device is None else device
    frame = lambda t, i: t[i:i + 1] if t.shape[0] > 1 else t[:1]  # noqa: E731 - one frame, or the only one
    outs, cocs = [], []
    for i in range(n):
        out, coc = render_bokeh(frame(image, i).to(device), frame(disparity, i).to(device), float(frame(d_f, i)), K,
                                return_coc=True, **options)
        outs.append(out.cpu())
        cocs.append(coc.cpu())
        if callback is not None:
            callback(i + 1, n, None)
    return Frames(torch.cat(outs), torch.cat(cocs), d_f, float(K), notes)

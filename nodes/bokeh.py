"""BokehSimulate: physically based, occlusion-aware lens blur from an all-in-focus image and its depth.

Outputs the blurred IMAGE and the circle-of-confusion map as a MASK: ``mask = clamp(0.5 + c / (2·K), 0, 1)``
with ``c = K·(d − d_f)`` the signed CoC in px (after the focus range), i.e. **0.5 = sharp, 1 = the
nearest possible surface (d = 1 in front of d_f = 0), 0 = the farthest**; ``|mask − 0.5|·2·K`` is the blur
radius in px. With K = 0 the mask is 0.5 everywhere.

A depth map of another size than the image is resized (bilinear) to the image, and the node says so
in its text output; the core function :func:`diffcamera.core.bokeh.render_bokeh` refuses such input.

Video: the batch axis is the frame axis. ``image``, the depth and ``focus`` each carry one frame (used for every
frame) or ``N``; the output has ``N`` frames, so one image with a FOCUS batch from RackFocus renders a rack focus
(one image in, ``N`` frames out), and a clip with per-frame depth and focus renders frame by frame.
``temporal_smoothing`` (radius in frames) smooths the focus disparity and the depth over the frame axis first
(:func:`diffcamera.core.video.smooth_frames`, a centred moving average: no lag) so noisy per-frame depth does
not make the focus flicker.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import comfy_adapter as ca
from ..comfy_adapter import io, ui
from ..core import depth as core_depth
from ..core.bokeh import MODES, estimate_render_bytes, render_bokeh
from ..core.conventions import comfy_to_core, core_to_comfy, level_to_K
from ..core.values import DepthMap, Focus
from ..core.video import frame_counts, smooth_frames
from .common import CATEGORY, Depth, FocusType, core_to_mask, mask_to_core
from .validation import checked_inputs, require_memory

#: Bytes per pixel per image of the node's own float32 buffers: the core image and depth, each image's output and
#: CoC, the concatenated result, CoC mask and IMAGE.
NODE_BYTES_PER_PIXEL = 4 * (3 + 1 + 3 + 1 + 3 + 1 + 3)

MODE_OPTIONS = ["layered", "classical"]
assert set(MODE_OPTIONS) == set(MODES)


def coc_to_mask(coc: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Signed CoC ``[B,1,H,W]`` px -> ``0..1`` (0.5 = sharp, 1 = c = +K, 0 = c = −K)."""
    k = K.view(-1, 1, 1, 1).to(coc)
    return torch.where(k > 0, 0.5 + coc / (2 * k.clamp_min(1e-12)), torch.full_like(coc, 0.5)).clamp(0, 1)


def resolve_depth(depth, depth_image, depth_mask, convention: str, size) -> tuple:
    """The disparity ``[F, 1, H, W]`` (``F`` maps: one, or one per frame) at the image ``size`` from exactly one
    depth input, the input's name, and notes."""
    given = [n for n, v in (("depth", depth), ("depth_image", depth_image), ("depth_mask", depth_mask))
             if v is not None]
    if len(given) != 1:
        raise ValueError("depth / depth_image / depth_mask: connect exactly one depth input "
                         f"(got {', '.join(given) if given else 'none'})")
    name = given[0]
    notes = []
    if depth is not None:
        if not isinstance(depth, DepthMap):
            raise ValueError(f"depth: expected a DEPTH value (DepthEstimate / DepthFromImage), got {type(depth).__name__}")
        disp = depth.disparity.float()
    else:
        if depth_image is not None:
            if not isinstance(depth_image, torch.Tensor) or depth_image.dim() not in (3, 4):
                raise ValueError("depth_image: expected a ComfyUI IMAGE [B,H,W,C]")
            values = comfy_to_core(depth_image[..., :3] if depth_image.shape[-1] >= 3
                                   else depth_image.expand(*depth_image.shape[:-1], 3)).mean(1, keepdim=True)
        else:
            if not isinstance(depth_mask, torch.Tensor) or depth_mask.dim() not in (2, 3):
                raise ValueError("depth_mask: expected a ComfyUI MASK [B,H,W]")
            values = mask_to_core(depth_mask)
        if values.numel() == 0:
            raise ValueError(f"{name}: the depth map is empty")
        disp = core_depth.convert_depth_map(values, convention, normalise=True, name=name)
    if not torch.isfinite(disp).all():
        raise ValueError(f"{name}: the depth map contains NaN or infinite values")
    if tuple(disp.shape[-2:]) != tuple(size):
        notes.append(f"{name} was {disp.shape[-1]}x{disp.shape[-2]}, resized to the image's {size[1]}x{size[0]}")
        disp = F.interpolate(disp, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)
    return disp, name, notes


def resolve_focus(focus, focus_disparity: float) -> torch.Tensor:
    """``[F]`` focus disparities (one, or one per frame) from a FOCUS or the plain value."""
    if focus is None:
        if not 0.0 <= float(focus_disparity) <= 1.0:
            raise ValueError(f"focus_disparity: must be in 0..1, got {focus_disparity}")
        return torch.full((1,), float(focus_disparity))
    if not isinstance(focus, Focus):
        raise ValueError(f"focus: expected a FOCUS value (FocusPicker, RackFocus), got {type(focus).__name__}")
    d = focus.disparity.float().reshape(-1)
    if d.numel() == 0 or not torch.isfinite(d).all():
        raise ValueError("focus: the FOCUS holds no (finite) focus disparity")
    return d


class BokehSimulate(io.ComfyNode):
    """Lens blur (bokeh) from an all-in-focus image and a depth map."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_BokehSimulate",
            display_name="BokehSimulate",
            category=f"{CATEGORY}/Bokeh",
            description=("Physically based lens blur of an all-in-focus image from its depth: each point spreads "
                         "into the aperture's shape with radius K·|d − d_f|. 'layered' (default) is "
                         "occlusion-aware (a sharp foreground never bleeds over a blurred background; a blurred "
                         "foreground's rim lets the background show through), composited in linear light. "
                         "'classical' is BokehMe's scatter, the simulator DiffCamera was trained with. Cost does "
                         "not grow with the blur size. Outputs the image and the circle-of-confusion map "
                         "(MASK: 0.5 = sharp, towards 1 = blurred in front of the focus, towards 0 = behind)."),
            inputs=[
                io.Image.Input(id="image", tooltip="All-in-focus images (any size, any batch)."),
                io.Float.Input(id="bokeh_level", default=20.0, min=0.0, max=400.0, step=0.5,
                               tooltip=("Blur strength: radius in px per 1024 px of the long side for a disparity "
                                        "difference of 1, so the same level looks the same at any resolution. "
                                        "0 = no blur.")),
                io.Combo.Input(id="mode", options=MODE_OPTIONS, default="layered",
                               tooltip=("layered: occlusion-aware, linear light (best looking). classical: "
                                        "BokehMe's scatter (DiffCamera-compatible training data).")),
                Depth.Input(id="depth", optional=True,
                            tooltip="Depth from DepthEstimate / DepthFromImage. Connect exactly one depth input."),
                io.Image.Input(id="depth_image", optional=True,
                               tooltip="Or a depth map IMAGE from any node (grey); see 'convention'."),
                io.Mask.Input(id="depth_mask", optional=True,
                              tooltip="Or a depth map MASK from any node; see 'convention'."),
                io.Combo.Input(id="convention", options=list(core_depth.CONVENTIONS),
                               default=core_depth.CONVENTIONS[0],
                               tooltip=("For depth_image / depth_mask: 'disparity (near bright)' as most depth "
                                        "estimators output; 'depth (near dark)' is inverted; 'metric depth' "
                                        "(distances) is turned into 1/z. Maps are normalised to 0..1.")),
                FocusType.Input(id="focus", optional=True,
                                tooltip=("The focus from FocusPicker or RackFocus: one for all frames or one per "
                                         "frame. One image with N focus frames gives N frames (a rack focus).")),
                io.Float.Input(id="focus_disparity", default=0.5, min=0.0, max=1.0, step=0.001,
                               tooltip="Without a FOCUS input: the disparity rendered sharp (0 = far, 1 = near)."),
                io.Float.Input(id="focus_range", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="A band of disparity around the focus kept perfectly sharp (0 = off)."),
                io.Int.Input(id="blades", default=0, min=0, max=12,
                             tooltip="Aperture: 0 = circular; 3..12 = a polygonal iris with this many blades."),
                io.Float.Input(id="blade_rotation", default=0.0, min=-360.0, max=360.0, step=1.0,
                               tooltip="Rotation of the polygonal aperture, degrees."),
                io.Float.Input(id="blade_curvature", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="0 = straight blades, 1 = round (circular) aperture."),
                io.Float.Input(id="highlight_threshold", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip="Linear-light luminance above which highlights are boosted."),
                io.Float.Input(id="highlight_gain", default=0.0, min=0.0, max=50.0, step=0.1,
                               tooltip="Highlight boost (bright bokeh balls from clipped lights). 0 = off."),
                io.Float.Input(id="catseye", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Cat's-eye bokeh towards the frame corners (mechanical vignetting). 0 = off; "
                                       "slower (nine aperture shapes)."),
                io.Float.Input(id="chromatic_aberration", default=0.0, min=0.0, max=0.05, step=0.001,
                               tooltip="Lateral chromatic aberration (red/blue magnification difference). 0 = off."),
                io.Float.Input(id="gamma", default=4.0, min=0.1, max=10.0, step=0.1,
                               tooltip="classical mode only: BokehMe's highlight exponent (4 as in DiffCamera)."),
                io.Int.Input(id="temporal_smoothing", default=0, min=0, max=30,
                             tooltip=("Video: radius in frames of a centred moving average of the focus disparity "
                                      "and the depth over the frames (0 = off). Stops noisy per-frame depth from "
                                      "making the focus flicker, without delaying a focus pull; moving objects' "
                                      "depth is averaged over 2·radius+1 frames, so keep it small for motion.")),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Mask.Output(display_name="coc")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked_inputs
    def execute(cls, image, bokeh_level=20.0, mode="layered", depth=None, depth_image=None, depth_mask=None,
                convention=core_depth.CONVENTIONS[0], focus=None, focus_disparity=0.5, focus_range=0.0, blades=0,
                blade_rotation=0.0, blade_curvature=0.0, highlight_threshold=0.9, highlight_gain=0.0, catseye=0.0,
                chromatic_aberration=0.0, gamma=4.0, temporal_smoothing=0):
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image: expected a ComfyUI IMAGE [B,H,W,3], got {shape}")
        if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"image: the image is empty ({tuple(image.shape)})")
        img = comfy_to_core(image)
        _, _, h, w = img.shape
        if not (isinstance(bokeh_level, (int, float)) and math.isfinite(bokeh_level) and bokeh_level >= 0):
            raise ValueError(f"bokeh_level: must be >= 0, got {bokeh_level}")
        if blades not in (0,) and not 3 <= int(blades) <= 12:
            raise ValueError(f"blades: 0 (circular) or 3..12, got {blades}")
        K = level_to_K(bokeh_level, h, w)
        given = next((v for v in (depth, depth_image, depth_mask) if v is not None), None)
        depth_frames = given.disparity.shape[0] if isinstance(given, DepthMap) else (
            given.shape[0] if isinstance(given, torch.Tensor) and given.dim() >= 3 else 1)
        frames = max(img.shape[0], depth_frames, focus.batch if isinstance(focus, Focus) else 1)
        need = frames * h * w * NODE_BYTES_PER_PIXEL + estimate_render_bytes(1, h, w, mode, K, catseye=float(catseye))
        require_memory(need, ca.compute_device(), f"BokehSimulate ({frames} frame(s) {w}x{h}, mode {mode}, "
                       f"K {K:.0f} px)", "use a smaller image (or fewer frames)")  # renders frame by frame
        disp, depth_name, notes = resolve_depth(depth, depth_image, depth_mask, convention, (h, w))
        d_f = resolve_focus(focus, focus_disparity)
        b = frame_counts([("image", img.shape[0]), (depth_name, disp.shape[0]), ("focus", d_f.numel())])
        disp = smooth_frames(disp, temporal_smoothing)
        d_f = smooth_frames(d_f, temporal_smoothing)
        if temporal_smoothing and max(disp.shape[0], d_f.numel()) > 1:
            notes.append(f"focus and depth smoothed over ±{int(temporal_smoothing)} frames")
        options = dict(mode=mode, gamma=float(gamma), blades=int(blades),
                       rotation=math.radians(float(blade_rotation)), curvature=float(blade_curvature),
                       highlight_threshold=float(highlight_threshold), highlight_gain=float(highlight_gain),
                       catseye=float(catseye), chromatic_aberration=float(chromatic_aberration),
                       focus_range=float(focus_range))
        # validate everything on the first image before any work (raises ValueError naming the input)
        render_bokeh(img[:1, :, :1, :1], disp[:1, :, :1, :1], float(d_f[0]), 0.0, **options)
        device = ca.compute_device()
        progress = ca.Progress(b, desc="bokeh", node_id=getattr(cls.hidden, "unique_id", None))
        outs, masks = [], []
        frame = lambda t, i: t[i:i + 1] if t.shape[0] > 1 else t[:1]  # noqa: E731 - one frame, or the only one
        for i in range(b):
            out, coc = render_bokeh(frame(img, i).to(device), frame(disp, i).to(device),
                                    float(frame(d_f, i)), K, return_coc=True, **options)
            outs.append(out.cpu())
            masks.append(coc_to_mask(coc.cpu(), torch.tensor([K])))
            progress(i + 1, b, None)
        progress.close() if hasattr(progress, "close") else None
        result = core_to_comfy(torch.cat(outs))
        mask = core_to_mask(torch.cat(masks))
        text = (f"BokehSimulate: {b} frame(s) {w}x{h}, mode {mode}, level {bokeh_level:g} -> K = {K:.2f} px, "
                f"focus disparity {', '.join(f'{float(x):.3f}' for x in d_f[:4])}{' ...' if d_f.numel() > 4 else ''}"
                + ("".join("; " + n for n in notes)))
        return io.NodeOutput(result, mask, ui=ca.combine_ui(ui.PreviewImage(image=result, cls=cls),
                                                            ui.PreviewText(value=text)))


NODES = [BokehSimulate]

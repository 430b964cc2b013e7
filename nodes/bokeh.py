"""BokehSimulate: physically based, occlusion-aware lens blur from an all-in-focus image and its depth.

Outputs the blurred IMAGE and the circle-of-confusion map as a MASK: ``mask = clamp(0.5 + c / (2·K), 0, 1)``
with ``c = K·(d − d_f)`` the signed CoC in px (after the focus range), i.e. **0.5 = sharp, 1 = the
nearest possible surface (d = 1 in front of d_f = 0), 0 = the farthest**; ``|mask − 0.5|·2·K`` is the blur
radius in px. With K = 0 the mask is 0.5 everywhere.

A depth map of another size than the image is resized (bilinear) to the image, and the node says so
in its text output (:func:`diffcamera.core.depth.depth_for_image`); the renderer
:func:`diffcamera.core.bokeh.render_bokeh` refuses such input.

Video: the batch axis is the frame axis. ``image``, the depth and ``focus`` each carry one frame (used for every
frame) or ``N``; the output has ``N`` frames, so one image with a FOCUS batch from RackFocus renders a rack focus
(one image in, ``N`` frames out), and a clip with per-frame depth and focus renders frame by frame
(:func:`diffcamera.core.video.render_frames`). ``temporal_smoothing`` (radius in frames) smooths the focus
disparity and the depth over the frame axis first (:func:`diffcamera.core.video.smooth_frames`, a centred moving
average: no lag) so noisy per-frame depth does not make the focus flicker.
"""
from __future__ import annotations

import math

from .. import runtime as rt
from ..core import depth as core_depth
from ..core import video as core_video
from ..core.bokeh import MODES, coc_to_mask
from ..core.conventions import comfy_to_core, core_to_comfy, core_to_comfy_mask, level_to_K
from ..core.focus import focus_disparities
from ..runtime import io, ui
from .common import CATEGORY, Depth, FocusType, combine_ui, depth_values, frames_of, node_progress, one_depth_input
from .validation import checked_inputs, require_memory

MODE_OPTIONS = ["layered", "classical"]
assert set(MODE_OPTIONS) == set(MODES)


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
        img = comfy_to_core(image)
        h, w = img.shape[-2:]
        K = level_to_K(bokeh_level, h, w)
        depth_name, given = one_depth_input(depth=depth, depth_image=depth_image, depth_mask=depth_mask)
        frames = max(img.shape[0], frames_of(given), 1 if focus is None else focus.batch)
        require_memory(core_video.estimate_frames_bytes(frames, h, w, mode, K, catseye), rt.compute_device(),
                       f"BokehSimulate ({frames} frame(s) {w}x{h}, mode {mode}, K {K:.0f} px)",
                       "use a smaller image (or fewer frames)")
        disp, notes = core_depth.depth_for_image(depth_values(given), (h, w), depth_name,
                                                 None if depth is not None else convention)
        options = dict(mode=mode, gamma=gamma, blades=blades, rotation=math.radians(blade_rotation),
                       curvature=blade_curvature, highlight_threshold=highlight_threshold,
                       highlight_gain=highlight_gain, catseye=catseye, chromatic_aberration=chromatic_aberration,
                       focus_range=focus_range)
        with node_progress(cls, frames, "bokeh") as progress:
            out = core_video.render_frames(img, disp, focus_disparities(focus_disparity if focus is None else focus),
                                           K, depth_name=depth_name, temporal_smoothing=temporal_smoothing,
                                           device=rt.compute_device(), callback=progress, notes=notes, **options)
        result = core_to_comfy(out.image)
        text = (f"BokehSimulate: {out.frames} frame(s) {w}x{h}, mode {mode}, level {bokeh_level:g} -> K = {K:.2f} px, "
                f"focus disparity {out.describe_focus()}" + "".join("; " + n for n in out.notes))
        return io.NodeOutput(result, core_to_comfy_mask(coc_to_mask(out.coc, K)),
                             ui=combine_ui(ui.PreviewImage(image=result, cls=cls), ui.PreviewText(value=text)))


NODES = [BokehSimulate]

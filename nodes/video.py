"""RackFocus: a FOCUS batch that pulls focus from one subject to another over a shot.

The maths (schedule, easing, reading the two subjects' disparity) is :func:`diffcamera.core.video.rack_focus`;
the batch axis is the frame axis. Feed the FOCUS to BokehSimulate with one image (one image in, ``frames``
frames out) or with a clip and its per-frame depth, then to a video or animated-image saver.
"""
from __future__ import annotations

from ..core import focus as core_focus
from ..core import video as core_video
from ..core.conventions import comfy_mask_to_core
from ..runtime import io, ui
from .common import CATEGORY, Depth, FocusType
from .validation import checked_inputs


class RackFocus(io.ComfyNode):
    """A focus pull over N frames, from a start point (or mask) to an end point (or mask)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_RackFocus",
            display_name="RackFocus",
            category=f"{CATEGORY}/focus",
            description=("Makes a FOCUS batch for a rack focus: holds the focus on the start subject, pulls it "
                         "to the end subject with an easing curve, and holds it there. Each subject is a point "
                         '({"x": 0.3, "y": 0.5}, 0..1 from the left/top) or a mask; its disparity is read on '
                         "the depth (one map for a still, or one per frame of a clip). Connect it to "
                         "BokehSimulate's focus: one image in, one frame per focus out."),
            inputs=[
                Depth.Input(id="depth", tooltip=("Depth from DepthEstimate / DepthFromImage: one map (a still or a "
                                                 "locked-off shot) or one per frame.")),
                io.Int.Input(id="frames", default=24, min=1, max=4096,
                             tooltip="Frames in the shot (with per-frame depth: its number of maps, or 1 map)."),
                io.String.Input(id="start_point", default='{"x": 0.3, "y": 0.5}', multiline=False,
                                tooltip='Where the focus starts: {"x": .., "y": ..}, 0..1 from the left and top.'),
                io.String.Input(id="end_point", default='{"x": 0.7, "y": 0.5}', multiline=False,
                                tooltip='Where the focus ends: {"x": .., "y": ..}, 0..1 from the left and top.'),
                io.Combo.Input(id="easing", options=list(core_video.EASINGS), default=core_video.EASINGS[0],
                               tooltip=("How the focus moves: ease-in-out starts and settles slowly (the classic "
                                        "pull), linear at constant speed, ease-in speeds up, ease-out slows down.")),
                io.Int.Input(id="hold_start", default=6, min=0, max=4096,
                             tooltip="Frames held on the start subject before the pull."),
                io.Int.Input(id="hold_end", default=6, min=0, max=4096,
                             tooltip="Frames held on the end subject after the pull."),
                io.Int.Input(id="window", default=0, min=0, max=255,
                             tooltip=("Side in pixels of the window whose (cluster) median is read under each "
                                      "point; 0 = automatic (about 1% of the long side, at least 5).")),
                io.Mask.Input(id="start_mask", optional=True,
                              tooltip="Optional: start on the median disparity inside this mask (replaces the point)."),
                io.Mask.Input(id="end_mask", optional=True,
                              tooltip="Optional: end on the median disparity inside this mask (replaces the point)."),
            ],
            outputs=[FocusType.Output(display_name="focus")],
        )

    @classmethod
    def validate_inputs(cls, start_point='{"x": 0.3, "y": 0.5}', end_point='{"x": 0.7, "y": 0.5}'):
        for name, text in (("start_point", start_point), ("end_point", end_point)):
            if isinstance(text, str):  # linked from another node: checked at run time
                try:
                    core_focus.parse_point_json(text, name)
                except ValueError as exc:
                    return str(exc)
        return True

    @classmethod
    @checked_inputs
    def execute(cls, depth, frames=24, start_point='{"x": 0.3, "y": 0.5}', end_point='{"x": 0.7, "y": 0.5}',
                easing=core_video.EASINGS[0], hold_start=6, hold_end=6, window=0, start_mask=None, end_mask=None):
        start = (comfy_mask_to_core(start_mask) if start_mask is not None
                 else core_focus.parse_point_json(start_point, "start_point"))
        end = comfy_mask_to_core(end_mask) if end_mask is not None else core_focus.parse_point_json(end_point, "end_point")
        names = ("start_point" if start_mask is None else "start_mask", "end_point" if end_mask is None else "end_mask")
        focus = core_video.rack_focus(depth.disparity, start, end, int(frames), int(hold_start), int(hold_end),
                                      easing, window=int(window) or None, names=names)
        d = focus.disparity
        text = (f"RackFocus: {int(frames)} frames, {easing}, focus disparity {float(d[0]):.3f} -> {float(d[-1]):.3f} "
                f"(held {int(hold_start)} + {int(hold_end)} frames)")
        return io.NodeOutput(focus, ui=ui.PreviewText(value=text))


NODES = [RackFocus]

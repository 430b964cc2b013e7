"""FocusPicker: where to focus, from a clicked point, a mask, or a number.

The point is a plain JSON STRING widget, ``{"x": 0.5, "y": 0.5}`` (normalised: 0..1 from the left/top edge),
or a list of such points, one per image of the batch. The front-end extension ``web/js/focus_picker.js``
writes it when the artist clicks the node's preview; API users set it directly.
"""
from __future__ import annotations

from ..core import focus as core_focus
from ..core.conventions import comfy_mask_to_core, comfy_to_core, core_to_comfy, level_to_K
from ..core.values import Focus
from ..runtime import io, ui
from .common import CATEGORY, Depth, FocusType
from .validation import checked_inputs

POINT_WIDGET = "focus_point"
OVERRIDE_OFF = -1.0
#: ui keys the front end reads (web/js/focus_picker.js): the preview images (``{filename, subfolder, type}``
#: entries, as ``ui.images`` has them, under our own key so the front end draws no second, stock preview) and
#: the picked focus per image.
PREVIEW_UI_KEY = "diffcamera_preview"
FOCUS_UI_KEY = "diffcamera_focus"


def _focus_json(focus: Focus) -> list:
    return [{"x": round(float(focus.x[i]), 4), "y": round(float(focus.y[i]), 4),
             "disparity": round(float(focus.disparity[i]), 4), "method": focus.method[i]}
            for i in range(focus.batch)]


class FocusPicker(io.ComfyNode):
    """Choose the focus: click the preview, or draw a mask, or type a disparity."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_FocusPicker",
            display_name="FocusPicker",
            category=f"{CATEGORY}/focus",
            description=("Chooses what will be in focus. Click the preview to set the point (or type "
                         '{"x": 0.5, "y": 0.5}, normalised 0..1 from the left/top; a list gives one point per '
                         "image); the disparity under it is read robustly (median of a small window, so a click "
                         "on an edge does not pick a stray pixel). A mask focuses on its median disparity; the "
                         "override sets the focus disparity directly. The preview tints what will be sharp "
                         "(blur under 1 px) at the chosen bokeh level."),
            inputs=[
                io.Image.Input(id="image", tooltip="The image to refocus."),
                Depth.Input(id="depth", tooltip="Its depth (DepthEstimate or DepthFromImage), same size as the image."),
                io.String.Input(id=POINT_WIDGET, default=core_focus.DEFAULT_POINT_JSON, multiline=False,
                                tooltip=('Focus point as JSON {"x": 0.5, "y": 0.5}: 0..1 from the left and top '
                                         "edges; a list of points gives one per image. Clicking the node's preview "
                                         "writes it.")),
                io.Float.Input(id="bokeh_level", default=20.0, min=0.0, max=200.0, step=0.5,
                               tooltip=("Blur strength the preview assumes: blur radius in px per 1024 px of "
                                        "the long side for a disparity difference of 1. Use the same value as "
                                        "your refocus/bokeh node. Only changes the preview tint.")),
                io.Int.Input(id="window", default=0, min=0, max=255,
                             tooltip="Side in pixels of the window whose (cluster) median is read under the "
                                     "point; 0 = automatic (about 1% of the long side, at least 5)."),
                io.Mask.Input(id="mask", optional=True,
                              tooltip="Optional: focus on the median disparity inside this mask (e.g. a person "
                                      "from a segmentation node); replaces the point."),
                io.Float.Input(id="focus_disparity_override", default=OVERRIDE_OFF, min=-1.0, max=1.0, step=0.001,
                               optional=True,
                               tooltip="Optional: focus disparity 0 (far) .. 1 (near) used as is; negative = off."),
            ],
            outputs=[FocusType.Output(display_name="focus"), io.Image.Output(display_name="preview")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,  # runs (and shows its clickable preview) even before anything uses the focus
        )

    @classmethod
    def validate_inputs(cls, focus_point=core_focus.DEFAULT_POINT_JSON):
        # only focus_point in the signature: ComfyUI then reports the error on that input alone
        if not isinstance(focus_point, str):  # linked from another node: checked at run time
            return True
        try:
            core_focus.parse_points_json(focus_point, POINT_WIDGET)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    @checked_inputs
    def execute(cls, image, depth, focus_point=core_focus.DEFAULT_POINT_JSON, bokeh_level=20.0, window=0,
                mask=None, focus_disparity_override=OVERRIDE_OFF):
        img = comfy_to_core(image)
        focus, disparity = core_focus.pick_focus(img, depth.disparity, focus_point, window,
                                                 None if mask is None else comfy_mask_to_core(mask),
                                                 focus_disparity_override, widget=POINT_WIDGET)
        K = level_to_K(bokeh_level, *img.shape[-2:])
        preview = core_to_comfy(core_focus.focus_preview(img, disparity, focus, K))
        saved = ui.PreviewImage(image=preview, cls=cls).as_dict()["images"]
        ui_out = {PREVIEW_UI_KEY: saved, FOCUS_UI_KEY: _focus_json(focus), "diffcamera_level": [float(bokeh_level)]}
        return io.NodeOutput(focus, preview, ui=ui_out)


NODES = [FocusPicker]

"""Fake ``comfy_api.latest``: the pack's own stand-in V3 API under the real module name.

Its V1 view (``INPUT_TYPES``, ``RETURN_TYPES``) is what ``tests/fake_executor.py`` validates against,
as ComfyUI's ``execution.validate_inputs`` does with the real classes.
"""
from diffcamera.comfy_fallback import ComfyExtension, io, ui  # noqa: F401

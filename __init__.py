"""DiffCamera for ComfyUI: refocus an image after the fact.

As a ComfyUI custom-node folder this module is the entry point (V3 ``comfy_entrypoint`` and
``WEB_DIRECTORY``); as the installed package ``diffcamera`` it is a namespace for ``core``, ``nodes``,
``training`` and ``cli``. Importing it is cheap: torch and the nodes load only when ComfyUI asks.
"""

WEB_DIRECTORY = "./web/js"
__version__ = "0.1.0"


async def comfy_entrypoint():
    """Called by ComfyUI: returns the extension that lists every DiffCamera node."""
    from .nodes import DiffCameraExtension

    return DiffCameraExtension()

"""Load a real ComfyUI in this process (tier c subprocesses only; never imported by pytest itself).

Order matters (see ComfyUI's own tests): ComfyUI's root on ``sys.path``; ``--cpu`` set on the parsed
defaults before ``comfy.model_management`` is imported; ``utils.extra_config`` and ``server`` imported
before ``nodes`` (which puts ``comfy/`` on ``sys.path``, after which ``import utils`` would find
``comfy/utils.py``). The pack under test is imported from this checkout as ``diffcamera``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def bootstrap(model_base: str = None, load_nodes: bool = False):
    """Import ComfyUI from ``$COMFYUI_DIR`` and the pack; point model folders at ``model_base/models``."""
    comfy_dir = os.environ["COMFYUI_DIR"]
    sys.path = [p for p in sys.path if not p.rstrip("/").endswith("fake_comfy")]
    sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args

    args.cpu = True
    import utils.extra_config  # noqa: F401
    import folder_paths

    if model_base:
        for name in ("depth_anything", "diffcamera", "loras", "diffusion_models", "vae", "text_encoders"):
            path = os.path.join(model_base, "models", name)
            exts = folder_paths.folder_names_and_paths.get(name, ([], set()))[1]
            folder_paths.folder_names_and_paths[name] = ([path], exts)
    if load_nodes:
        import asyncio

        import server  # noqa: F401
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if "diffcamera" not in sys.modules:
        spec = importlib.util.spec_from_file_location("diffcamera", os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["diffcamera"] = module
        spec.loader.exec_module(module)
    import diffcamera.comfy_adapter as ca
    import diffcamera.runtime as rt

    assert ca.HAS_COMFY and rt.host is ca, "the pack did not find the real comfy_api"
    import comfy_api.latest

    assert os.path.abspath(comfy_api.latest.__file__).startswith(os.path.abspath(comfy_dir)), comfy_api.latest.__file__
    return ca


def emit(obj) -> None:
    """Print the result as the last line of stdout (the parent parses it)."""
    sys.stdout.write("\n@@RESULT@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()

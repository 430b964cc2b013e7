"""Tier c, ComfyUI in-process (in a subprocess with ComfyUI's interpreter; see ``inproc/bootstrap.py``).

* The V1 view of every node class (``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``FUNCTION``,
  ``OUTPUT_NODE``, ``CATEGORY``, ``DESCRIPTION``) under the real ``comfy_api.latest`` equals the one
  under our fallback (``comfy_fallback``), which tier b's fake executor validates against.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _fake_view(base):
    sys.path.insert(0, os.path.join(HERE, "inproc"))
    try:
        from v1_view import v1_view
    finally:
        sys.path.pop(0)
    import folder_paths
    from diffcamera.nodes import all_nodes

    folder_paths.set_base(base)
    for name in ("depth_anything", "diffcamera"):
        folder_paths.folder_names_and_paths.pop(name, None)
    for name in ("loras", "diffusion_models", "vae", "text_encoders"):
        folder_paths.folder_names_and_paths[name] = ([os.path.join(base, "models", name)],
                                                     folder_paths.folder_names_and_paths.get(name, ([], set()))[1])
    return json.loads(json.dumps({cls.define_schema().node_id: v1_view(cls) for cls in all_nodes()}))


def test_v1_view_of_real_comfy_api_equals_the_fallback(comfy_run, comfy_world):
    real = comfy_run("v1_view.py", comfy_world)
    fake = _fake_view(comfy_world)
    assert sorted(real) == sorted(fake)
    for node_id in fake:
        for key, want in fake[node_id].items():
            got = real[node_id][key]
            if key == "INPUT_TYPES":
                for section in set(want) | set(got):
                    assert list(want.get(section, {})) == list(got.get(section, {})), (node_id, section)
                    for name, spec in want.get(section, {}).items():
                        assert spec == got[section][name], f"{node_id}.{name}: fake {spec} != real {got[section][name]}"
            assert got == want, f"{node_id}.{key}: fake {want!r} != real {got!r}"

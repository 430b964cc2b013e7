"""Tier c: the pack inside a real ComfyUI server — it loads, and ``/object_info`` shows our schemas.

``/object_info`` is what the real front end and the real validator read. Comparing it field by field
with the V1 view our fake API (``comfy_fallback``) derives from the same ``define_schema()`` keeps the
fake honest: tier b validates workflows against that fake view.
"""
from __future__ import annotations

import json
import re

import pytest


def _node_ids():
    from diffcamera.nodes import all_nodes

    return [cls.define_schema().node_id for cls in all_nodes()]


def _jsonable(value):
    return json.loads(json.dumps(value))


def test_pack_loads_without_import_error(comfy_server):
    log = comfy_server.log_text()
    assert re.search(r"seconds: .*custom_nodes[/\\]diffcamera\s*$", log, re.M), \
        f"the pack is not in ComfyUI's import-time list:\n{comfy_server.log_tail()}"
    bad = [line for line in log.splitlines() if "diffcamera" in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not bad, "\n".join(bad) + "\n" + comfy_server.log_tail()
    startup = log.split("got prompt")[0]  # later tracebacks are prompts failing on purpose (test_security_real)
    tracebacks = re.findall(r"Traceback \(most recent call last\):\n(?:.*\n)*?\S.*\n", startup)
    ours = [t for t in tracebacks if "diffcamera" in t]
    assert not ours, "\n".join(ours)


def test_object_info_lists_every_node(comfy_server):
    info = comfy_server.object_info()
    ids = _node_ids()
    missing = [i for i in ids if i not in info]
    assert not missing, f"not in /object_info: {missing}"
    ours = sorted(k for k, v in info.items() if str(v.get("python_module", "")).startswith("custom_nodes.diffcamera"))
    assert ours == sorted(ids), "the server lists DiffCamera nodes that all_nodes() does not (or the other way round)"


def _fake_node_info(cls):
    """What real ComfyUI's ``GET_NODE_INFO_V1`` should give for ``cls``, derived from the fake V1 view."""
    schema = cls.define_schema()
    spec = _jsonable(cls.INPUT_TYPES())
    outputs = schema.outputs or []
    return {
        "input": spec,
        "input_order": {k: list(v.keys()) for k, v in spec.items()},
        "output": list(cls.RETURN_TYPES),
        "output_name": list(cls.RETURN_NAMES),
        "output_is_list": [bool(o.is_output_list) for o in outputs],
        "output_tooltips": [o.tooltip or None for o in outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "category": schema.category,
        "description": schema.description,
        "output_node": bool(schema.is_output_node),
        "deprecated": bool(schema.is_deprecated),
        "experimental": bool(schema.is_experimental),
    }


def _all_node_classes():
    from diffcamera.nodes import all_nodes

    return all_nodes()


@pytest.mark.parametrize("cls", _all_node_classes(), ids=lambda c: c.define_schema().node_id)
def test_object_info_equals_our_schema(comfy_server, cls):
    """Names, order, types, defaults, min/max/step, options and tooltips of every input, and the outputs,
    as real ComfyUI reports them, equal the fake view tier b validates against."""
    import folder_paths

    folder_paths.set_base(comfy_server.base)  # the fake's model folders = the server's (combo options)
    for folder in ("depth_anything", "diffcamera"):
        folder_paths.folder_names_and_paths.pop(folder, None)
    expected = _fake_node_info(cls)
    real = comfy_server.object_info(expected["name"])[expected["name"]]
    for key, want in expected.items():
        got = real.get(key)
        if key == "input":
            for section in set(want) | set(got or {}):
                w, g = want.get(section, {}), (got or {}).get(section, {})
                assert list(w) == list(g), f"{expected['name']} {section} inputs: fake {list(w)} real {list(g)}"
                for name in w:
                    assert w[name] == g[name], f"{expected['name']}.{name}: fake {w[name]} != real {g[name]}"
        else:
            assert got == want, f"{expected['name']}.{key}: fake {want!r} != real {got!r}"
    assert real["python_module"].startswith("custom_nodes.diffcamera")


def test_template_browser_lists_and_serves_our_workflows(comfy_server):
    """``workflows/*.json`` appear in ComfyUI's template browser (``/workflow_templates``) and are served."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = sorted(f[:-5] for f in os.listdir(os.path.join(root, "workflows")) if f.endswith(".json"))
    listed = comfy_server.get("/workflow_templates")
    assert sorted(listed.get("diffcamera", [])) == names, listed
    for name in names:
        served = json.loads(comfy_server.get_bytes(f"/api/workflow_templates/diffcamera/{name}.json"))
        with open(os.path.join(root, "workflows", name + ".json"), encoding="utf-8") as f:
            assert served == json.load(f)
        thumb = os.path.join(root, "workflows", name + ".jpg")  # what the browser shows (mediaSubtype jpg)
        if os.path.exists(thumb):
            with open(thumb, "rb") as f:
                assert comfy_server.get_bytes(f"/api/workflow_templates/diffcamera/{name}.jpg") == f.read()

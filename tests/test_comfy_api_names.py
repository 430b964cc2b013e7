"""API hygiene for newer ComfyUI: every ``comfy_api`` name, keyword and Schema field the pack uses is public in
ComfyUI 0.38, and every Schema / input / output / preview is built with keyword arguments only.

The public lists were written down from ComfyUI 0.38's source (commits in ``tests/data/comfy_api_public.json``);
the names the pack uses are collected here from its source by walking the AST (``io.X``, ``ui.X``,
``io.Hidden.X`` attribute uses and the ``from comfy_api.latest import ...`` of the adapter) and pinned in the
same file, so using a new name, or a name leaving ComfyUI's public list, is caught. Tier c
(``tests/comfyui/test_inprocess.py``) checks the same names and keywords against the ComfyUI it runs.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC = json.load(open(os.path.join(ROOT, "tests", "data", "comfy_api_public.json"), encoding="utf-8"))
TYPED_INPUTS = {"Boolean", "Int", "Float", "String", "Combo"}


def pack_sources() -> list:
    """The pack's files that talk to ``comfy_api`` (the adapter and every node module)."""
    files = [os.path.join(ROOT, "comfy_adapter.py")]
    nodes = os.path.join(ROOT, "nodes")
    files += [os.path.join(nodes, f) for f in sorted(os.listdir(nodes)) if f.endswith(".py")]
    return files


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def collect_used_names() -> dict:
    """``{"latest": {...}, "io": {...}, "ui": {...}, "hidden": {...}}`` used by the pack's source."""
    used = {"latest": set(), "io": set(), "ui": set(), "hidden": set()}
    for path in pack_sources():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfy_api"):
                assert node.module == "comfy_api.latest", f"{path}: import from {node.module} (use comfy_api.latest)"
                used["latest"] |= {a.name for a in node.names}
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("io", "ui"):
                used[node.value.id].add(node.attr)
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "Hidden" and isinstance(node.value.value, ast.Name)
                    and node.value.value.id == "io"):
                used["hidden"].add(node.attr)
    return used


def _call_kind(call: ast.Call):
    """What a call constructs, as a key of ``parameters`` (None when it is not comfy_api construction)."""
    f = call.func
    if not isinstance(f, ast.Attribute):
        return None
    base = f.value
    if isinstance(base, ast.Name) and base.id == "io" and f.attr in ("Schema", "Custom", "NodeOutput"):
        return f.attr
    if isinstance(base, ast.Name) and base.id == "ui" and f.attr.startswith("Preview"):
        return f.attr
    if f.attr == "Input":
        if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "io" \
                and base.attr in TYPED_INPUTS:
            return f"{base.attr}.Input"
        return "Input"
    if f.attr == "Output":
        return "Output"
    return None


def construction_calls() -> list:
    """``(path, line, kind, positional count, keywords, has **kwargs)`` of every comfy_api construction."""
    out = []
    for path in pack_sources():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call):
                kind = _call_kind(node)
                if kind:
                    keywords = [k.arg for k in node.keywords]
                    out.append((os.path.relpath(path, ROOT), node.lineno, kind, len(node.args),
                                [k for k in keywords if k is not None], None in keywords))
    return out


def test_used_names_are_pinned():
    used = collect_used_names()
    pinned = {k: set(v) for k, v in PUBLIC["used_by_the_pack"].items()}
    assert used == pinned, ("the comfy_api names the pack uses changed: check each new one is public in ComfyUI "
                            f"0.38 (tests/data/comfy_api_public.json) and update used_by_the_pack.\nused: "
                            f"{ {k: sorted(v) for k, v in used.items()} }")


def test_used_names_are_public_in_0_38():
    used = collect_used_names()
    assert used["latest"] <= set(PUBLIC["latest_all"]), used["latest"] - set(PUBLIC["latest_all"])
    assert used["io"] <= set(PUBLIC["io_all"]), used["io"] - set(PUBLIC["io_all"])
    assert used["ui"] <= set(PUBLIC["ui_all"]), used["ui"] - set(PUBLIC["ui_all"])
    assert used["hidden"] <= set(PUBLIC["hidden_members"]), used["hidden"] - set(PUBLIC["hidden_members"])


def test_construction_is_keyword_only_with_0_38_keywords():
    calls = construction_calls()
    assert len([c for c in calls if c[2] == "Schema"]) >= 9 and len([c for c in calls if "Input" in c[2]]) > 50
    params = PUBLIC["parameters"]
    problems = []
    for path, line, kind, positional, keywords, splat in calls:
        if kind == "NodeOutput":  # its values are positional by design; only the keywords are checked
            positional = 0
        allowed = set(PUBLIC["schema_fields"]) if kind == "Schema" else set(params[kind])
        if positional:
            problems.append(f"{path}:{line} {kind} with {positional} positional argument(s)")
        if splat:
            problems.append(f"{path}:{line} {kind} with **kwargs (keywords cannot be checked)")
        for k in keywords:
            if k not in allowed:
                problems.append(f"{path}:{line} {kind}: keyword {k!r} is not a 0.38 parameter")
    assert not problems, "\n".join(problems)


def test_the_fallback_offers_only_public_names():
    from diffcamera import comfy_fallback as fb

    offered_io = {n for n in vars(fb.io) if not n.startswith("_")}
    assert offered_io <= set(PUBLIC["io_all"]), offered_io - set(PUBLIC["io_all"])
    offered_ui = set(vars(fb.ui))
    assert offered_ui <= set(PUBLIC["ui_all"]), offered_ui - set(PUBLIC["ui_all"])
    hidden = {n for n in vars(fb.io.Hidden) if not n.startswith("_")}
    assert hidden <= set(PUBLIC["hidden_members"])
    fields = [f.name for f in dataclasses.fields(fb.io.Schema)]
    assert set(fields) <= set(PUBLIC["schema_fields"]), set(fields) - set(PUBLIC["schema_fields"])
    assert "ComfyExtension" in PUBLIC["latest_all"]
    # the pack uses nothing the fallback lacks (else plain Python and tier b would break)
    used = collect_used_names()
    assert used["io"] <= offered_io and used["ui"] <= offered_ui and used["hidden"] <= hidden


def test_the_fallback_schema_refuses_positional_fields():
    import pytest

    from diffcamera import comfy_fallback as fb

    with pytest.raises(TypeError):
        fb.io.Schema("DiffCamera_X", "X")  # positional: would shift onto other fields in ComfyUI 0.38
    assert fb.io.Schema(node_id="DiffCamera_X", display_name="X").display_name == "X"


def test_the_collector_sees_what_it_should(tmp_path, monkeypatch):
    """The AST walk finds names, positional arguments and unknown keywords (so the checks above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from comfy_api.latest import io, ui\n"
                   "S = io.Schema('X', inputs=[io.Float.Input('a', bogus=1), io.AutogrowDynamic.Input(id='b')])\n"
                   "h = io.Hidden.dynprompt\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "pack_sources", lambda: [str(bad)])
    used = collect_used_names()
    assert used["io"] == {"Schema", "Float", "AutogrowDynamic", "Hidden"} and used["hidden"] == {"dynprompt"}
    assert "AutogrowDynamic" not in PUBLIC["io_all"]  # renamed in 0.38 (Autogrow)
    kinds = {(c[2], c[3], tuple(c[4])) for c in construction_calls()}
    assert ("Schema", 1, ("inputs",)) in kinds and ("Float.Input", 1, ("bogus",)) in kinds

"""Check comfy_api names and keywords against the real ComfyUI. Usage: ``python api_names.py USED.json``.

``USED.json``: ``{"latest": [...], "io": [...], "ui": [...], "hidden": [...], "keywords": {kind: [...]}}`` as
``tests/test_comfy_api_names.py`` collects them from the pack. Reports what the running ComfyUI lacks."""
import inspect
import json
import sys

from bootstrap import bootstrap, emit

#: ``comfy_api.latest``'s namespaces of node types and UI outputs (``from comfy_api.latest import io, ui``).
NAMESPACES = {"io", "ui"}
TYPED = {"Boolean.Input", "Int.Input", "Float.Input", "String.Input", "Combo.Input"}

if __name__ == "__main__":
    bootstrap()
    import comfy_api.latest as latest
    from comfy_api.latest import io, ui

    used = json.load(open(sys.argv[1], encoding="utf-8"))
    public_latest = set(getattr(latest, "__all__", dir(latest)))
    public_io = set(getattr(io, "__all__", dir(io)))
    public_ui = set(getattr(ui, "__all__", dir(ui)))
    # the io / ui namespaces import whether or not __all__ lists them (v0.3.64's release commit 63722199 imports them
    # as classes without listing them; a125cd84 lists them)
    out = {"missing_latest": sorted(n for n in used["latest"]
                                    if n not in public_latest and not (n in NAMESPACES and hasattr(latest, n))),
           "missing_io": sorted(n for n in used["io"] if n not in public_io or not hasattr(io, n)),
           "missing_ui": sorted(n for n in used["ui"] if n not in public_ui or not hasattr(ui, n)),
           "missing_hidden": sorted(n for n in used["hidden"] if not hasattr(io.Hidden, n)),
           "refused_keywords": {}}

    def params(kind):
        if kind == "Schema":
            import dataclasses
            return {f.name for f in dataclasses.fields(io.Schema)}
        target = {"Input": io.Input, "Output": io.Output, "Custom": io.Custom, "NodeOutput": io.NodeOutput}.get(kind)
        if target is None and kind in TYPED:
            target = getattr(io, kind.split(".")[0]).Input
        if target is None:
            target = getattr(ui, kind)
        sig = inspect.signature(target)
        return {p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    for kind, keywords in used["keywords"].items():
        refused = sorted(set(keywords) - params(kind))
        if refused:
            out["refused_keywords"][kind] = refused
    emit(out)

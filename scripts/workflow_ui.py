#!/usr/bin/env python3
"""Convert example workflows between ComfyUI's API format and its UI (front-end, template) format.

The API copies in ``tests/workflows/`` are what tests run; the UI files in ``workflows/`` are what
ComfyUI's template browser shows and are generated from them:

    python scripts/workflow_ui.py build            # tests/workflows/*.json (+ scripts/workflow_sources/)
                                                   #   -> workflows/*.json
    python scripts/workflow_ui.py check            # every UI file converts back to its API source, and
                                                   #   every source passes a static schema check
    python scripts/workflow_ui.py to-api UI.json   # print the API prompt of a UI workflow
    python scripts/workflow_ui.py refresh-stock URL  # rewrite scripts/stock_nodes.json from a running
                                                   #   ComfyUI's /object_info (loopback URL)

UI format (front end 1.2x, ``version: 0.4``): ``nodes[]`` with ``id``, ``type``, ``pos``, ``size``,
``inputs`` (sockets: ``{name, type, link}``; a widget input fed by a link also gets ``widget: {name}``),
``outputs`` (``{name, type, links, slot_index}``), ``widgets_values`` (the values of the widget inputs in
schema input order, with the extra "control after generate" value after every INT named ``seed`` /
``noise_seed`` or declared with ``control_after_generate``), and ``links[]`` as
``[id, from_node, from_slot, to_node, to_slot, TYPE]``. Widget inputs are INT, FLOAT, STRING, BOOLEAN and
COMBO (a list of options in V1) inputs without ``forceInput``; every other input is a socket.

Schemas come from our own node classes (``diffcamera.nodes.all_nodes()``) and, for the stock ComfyUI
nodes the graphs use, from ``scripts/stock_nodes.json`` (names, types, widget order and defaults as the
real ``/object_info`` of ComfyUI v0.3.64 lists them; tier c checks it against a live server) and
``scripts/stock_nodes_newer.json`` (core nodes newer than v0.3.64, e.g. MoGe, written from their source; only
UI-only workflows in ``scripts/workflow_sources/`` use them).

Each source may carry a sidecar ``<name>.meta.json`` (``title``, ``note``: a text shown in a Note node,
which must state the licence of every model the graph expects) that becomes a Note node and ``extra``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_DIR = os.path.join(ROOT, "tests", "workflows")
EXTRA_SOURCES = os.path.join(ROOT, "scripts", "workflow_sources")  # graphs not run in tests (need user models)
UI_DIR = os.path.join(ROOT, "workflows")
STOCK_FILE = os.path.join(ROOT, "scripts", "stock_nodes.json")
#: core nodes newer than the ComfyUI tier c runs (read from their source; used only by UI-only workflows)
NEWER_STOCK_FILE = os.path.join(ROOT, "scripts", "stock_nodes_newer.json")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
NOTE_WIDTH = 340
#: room for DOM widgets the front-end extensions add (web/js/focus_picker.js: a 220 px preview)
EXTRA_HEIGHT = {"DiffCamera_FocusPicker": 240}


# ------------------------------------------------------------------------------------------ schemas
def _our_schemas() -> dict:
    """``{node_id: schema}`` of the pack's nodes, from their V1 view (``INPUT_TYPES``/``RETURN_TYPES``)."""
    if ROOT not in sys.path:
        sys.path.insert(0, os.path.dirname(ROOT))
    try:
        from diffcamera.nodes import all_nodes
    except ImportError:  # running from a checkout that is not installed: import the folder as `diffcamera`
        import importlib.util
        spec = importlib.util.spec_from_file_location("diffcamera", os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["diffcamera"] = module
        spec.loader.exec_module(module)
        from diffcamera.nodes import all_nodes
    out = {}
    for cls in all_nodes():
        schema = cls.define_schema()
        out[schema.node_id] = schema_from_v1(cls.INPUT_TYPES(), list(cls.RETURN_TYPES), list(cls.RETURN_NAMES),
                                             schema.display_name or schema.node_id)
    return out


def schema_from_v1(input_types: dict, output: list, output_name: list, display_name: str) -> dict:
    """The compact schema the converter needs, from a V1 input dict (``INPUT_TYPES()`` or /object_info)."""
    inputs = []
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            io_type, extra = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if isinstance(io_type, list):
                options, io_type = io_type, "COMBO"
            else:
                options = extra.get("options")
            widget = io_type in WIDGET_TYPES and not extra.get("forceInput")
            entry = {"name": name, "type": io_type, "widget": widget, "optional": section == "optional"}
            if widget:
                default = extra.get("default")
                if default is None and io_type == "COMBO":
                    default = (options or [None])[0]
                entry["default"] = default
                if io_type == "INT" and (extra.get("control_after_generate") or name in SEED_NAMES):
                    entry["control_after_generate"] = True
            inputs.append(entry)
    return {"display_name": display_name, "inputs": inputs,
            "outputs": [{"name": n, "type": t} for t, n in zip(output, output_name)]}


def load_schemas() -> dict:
    with open(STOCK_FILE, encoding="utf-8") as f:
        schemas = json.load(f)["nodes"]
    with open(NEWER_STOCK_FILE, encoding="utf-8") as f:
        newer = json.load(f)["nodes"]
    assert not set(newer) & set(schemas), "a node is in both stock tables"
    schemas.update(newer)
    schemas.update(_our_schemas())
    return schemas


# ------------------------------------------------------------------------------------------ API -> UI
def _depths(prompt: dict) -> dict:
    memo = {}

    def depth(nid):
        if nid not in memo:
            memo[nid] = 0
            srcs = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            memo[nid] = 1 + max((depth(s) for s in srcs), default=-1)
        return memo[nid]

    depths = {nid: depth(nid) for nid in prompt}
    # a node without linked inputs (a loader) sits in the column just left of its first consumer
    consumers = defaultdict(list)
    for nid, node in prompt.items():
        for v in node["inputs"].values():
            if isinstance(v, list):
                consumers[str(v[0])].append(nid)
    for nid, node in prompt.items():
        if not any(isinstance(v, list) for v in node["inputs"].values()) and consumers[nid]:
            depths[nid] = max(0, min(depths[c] for c in consumers[nid]) - 1)
    return depths


def api_to_ui(prompt: dict, schemas: dict, meta: dict = None) -> dict:
    """A UI-format workflow for API ``prompt`` (node ids must be integers as strings)."""
    meta = meta or {}
    depths = _depths(prompt)
    nodes, links = [], []
    column_y = defaultdict(lambda: 80.0)
    note_lines = 0
    if meta.get("note"):  # the Note goes on top of the first column
        note_lines = sum(1 + len(line) // 60 for line in meta["note"].split("\n"))
        column_y[0] = 80.0 + 40 + 13 * note_lines + 60
    node_by_id = {}
    order = sorted(prompt, key=lambda n: (depths[n], int(n)))
    for index, nid in enumerate(order):
        node = prompt[nid]
        schema = schemas[node["class_type"]]
        sockets = [i for i in schema["inputs"] if not i["widget"]]
        widgets = [i for i in schema["inputs"] if i["widget"]]
        values = []
        for w in widgets:
            val = node["inputs"].get(w["name"], w.get("default"))
            if isinstance(val, list):  # a widget fed by a link keeps its default as value
                val = w.get("default")
            values.append(val)
            if w.get("control_after_generate"):
                values.append("fixed")
        height = (46 + 24 * max(len(sockets), len(schema["outputs"])) + 26 * len(widgets)
                  + EXTRA_HEIGHT.get(node["class_type"], 0))
        x = 60 + 400 * depths[nid]
        ui_node = {
            "id": int(nid), "type": node["class_type"], "pos": [x, column_y[depths[nid]]],
            "size": [340, height], "flags": {}, "order": index, "mode": 0,
            "inputs": [{"name": s["name"], "type": s["type"], "link": None} for s in sockets],
            "outputs": [{"name": o["name"], "type": o["type"], "links": [], "slot_index": k}
                        for k, o in enumerate(schema["outputs"])],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": values,
        }
        title = (node.get("_meta") or {}).get("title")
        if title and title != schema["display_name"]:
            ui_node["title"] = title
        column_y[depths[nid]] += height + 60
        nodes.append(ui_node)
        node_by_id[int(nid)] = ui_node
    link_id = 0
    for nid in order:
        node = prompt[nid]
        schema = schemas[node["class_type"]]
        ui_node = node_by_id[int(nid)]
        for name, val in node["inputs"].items():
            if not isinstance(val, list):
                continue
            src, slot = int(val[0]), int(val[1])
            link_id += 1
            ltype = schemas[prompt[str(src)]["class_type"]]["outputs"][slot]["type"]
            entry = next((i for i in ui_node["inputs"] if i["name"] == name), None)
            if entry is None:  # a widget input fed by a link: the front end gives it a socket
                spec = next(i for i in schema["inputs"] if i["name"] == name)
                entry = {"name": name, "type": spec["type"], "link": None, "widget": {"name": name}}
                ui_node["inputs"].append(entry)
            entry["link"] = link_id
            node_by_id[src]["outputs"][slot]["links"].append(link_id)
            links.append([link_id, src, slot, int(nid), ui_node["inputs"].index(entry), ltype])
    last_id = max(int(n) for n in prompt)
    if meta.get("note"):
        last_id += 1
        nodes.append({"id": last_id, "type": "Note", "pos": [60, 80], "size": [NOTE_WIDTH, 40 + 13 * note_lines],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "title": meta.get("title", "Read me"), "color": "#432", "bgcolor": "#653",
                      "widgets_values": [meta["note"]]})
    return {
        "last_node_id": last_id, "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
        "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [20, 0]},
                                "diffcamera": {k: meta[k] for k in ("title", "licences", "needs") if k in meta}},
        "version": 0.4,
    }


# ------------------------------------------------------------------------------------------ UI -> API
def ui_to_api(workflow: dict, schemas: dict) -> dict:
    """The API prompt the front end's ``graphToPrompt`` would make (Notes and muted nodes dropped)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        if node["type"] in ("Note", "MarkdownNote") or node.get("mode", 0) in (2, 4):
            continue
        schema = schemas[node["type"]]
        inputs = {}
        values = list(node.get("widgets_values") or [])
        for w in (i for i in schema["inputs"] if i["widget"]):
            if not values:
                raise ValueError(f"node {node['id']} ({node['type']}): too few widgets_values")
            inputs[w["name"]] = values.pop(0)
            if w.get("control_after_generate"):
                values.pop(0)
        if values:
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values too many")
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        ordered = {i["name"]: inputs[i["name"]] for i in schema["inputs"] if i["name"] in inputs}
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": ordered,
                                   "_meta": {"title": node.get("title") or schema["display_name"]}}
    return prompt


def lint(prompt: dict, schemas: dict) -> list:
    """Static problems of an API prompt against the schemas: unknown node or input, a missing required
    input, a link to a missing node/slot or of the wrong type, a widget fed a constant of the wrong kind."""
    problems = []
    for nid, node in prompt.items():
        schema = schemas.get(node["class_type"])
        if schema is None:
            problems.append(f"{nid}: unknown node {node['class_type']}")
            continue
        spec = {i["name"]: i for i in schema["inputs"]}
        for name, val in node["inputs"].items():
            if name not in spec:
                problems.append(f"{nid} {node['class_type']}: unknown input {name}")
                continue
            if isinstance(val, list):
                src = prompt.get(str(val[0]))
                outs = schemas.get(src["class_type"], {}).get("outputs", []) if src else []
                if src is None or not 0 <= int(val[1]) < len(outs):
                    problems.append(f"{nid}.{name}: link to missing {val}")
                elif outs[int(val[1])]["type"] != spec[name]["type"] and "*" not in (outs[int(val[1])]["type"], spec[name]["type"]):
                    problems.append(f"{nid}.{name}: {outs[int(val[1])]['type']} linked to {spec[name]['type']}")
            elif not spec[name]["widget"]:
                problems.append(f"{nid}.{name}: {spec[name]['type']} needs a link, got {val!r}")
            else:
                kind = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool, "COMBO": (str, int, float)}
                if not isinstance(val, kind[spec[name]["type"]]):
                    problems.append(f"{nid}.{name}: {val!r} is not {spec[name]['type']}")
        for i in schema["inputs"]:
            if not i["optional"] and i["name"] not in node["inputs"]:
                problems.append(f"{nid} {node['class_type']}: required input {i['name']} missing")
    return problems


def strip_meta(prompt: dict) -> dict:
    """``{id: {class_type, inputs}}`` with inputs sorted by name, for comparisons."""
    return {k: {"class_type": v["class_type"], "inputs": dict(sorted(v["inputs"].items()))} for k, v in prompt.items()}


# ------------------------------------------------------------------------------------------ files
def sources() -> list:
    """``(name, api_path, meta_path)`` of every workflow source (tests/workflows, scripts/workflow_sources)."""
    out = []
    for folder in (API_DIR, EXTRA_SOURCES):
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".json") and not fname.endswith(".meta.json"):
                name = fname[:-5]
                meta = os.path.join(folder, name + ".meta.json")
                out.append((name, os.path.join(folder, fname), meta if os.path.exists(meta) else None))
    return out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build(schemas: dict) -> list:
    written = []
    os.makedirs(UI_DIR, exist_ok=True)
    for name, api_path, meta_path in sources():
        ui = api_to_ui(_read(api_path), schemas, _read(meta_path) if meta_path else None)
        out = os.path.join(UI_DIR, name + ".json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(ui, f, indent=2)
            f.write("\n")
        written.append(out)
    return written


def check(schemas: dict) -> list:
    """Problems found: a source without a UI file, or a UI file whose API conversion differs."""
    problems = []
    for name, api_path, _ in sources():
        ui_path = os.path.join(UI_DIR, name + ".json")
        if not os.path.exists(ui_path):
            problems.append(f"{name}: no {ui_path}")
            continue
        problems += [f"{name}: {p}" for p in lint(_read(api_path), schemas)]
        if strip_meta(ui_to_api(_read(ui_path), schemas)) != strip_meta(_read(api_path)):
            problems.append(f"{name}: {ui_path} does not convert to {api_path}")
    return problems


def refresh_stock(url: str, names: list) -> None:
    import urllib.request

    assert url.startswith(("http://127.0.0.1", "http://localhost")), "loopback only"
    out = {}
    for name in names:
        with urllib.request.urlopen(f"{url.rstrip('/')}/object_info/{name}", timeout=60) as resp:  # noqa: S310
            info = json.loads(resp.read())[name]
        out[name] = schema_from_v1(info["input"], info["output"], info["output_name"], info["display_name"])
    with open(STOCK_FILE, "w", encoding="utf-8") as f:
        json.dump({"comment": "Stock ComfyUI nodes used by our example workflows: input order, widget "
                              "defaults and outputs as /object_info of ComfyUI v0.3.64 lists them "
                              "(scripts/workflow_ui.py refresh-stock).", "nodes": out}, f, indent=1)
        f.write("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    sub.add_parser("check")
    p = sub.add_parser("to-api")
    p.add_argument("ui_json")
    p = sub.add_parser("refresh-stock")
    p.add_argument("url")
    p.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    if args.cmd == "refresh-stock":
        names = args.names or sorted(_read(STOCK_FILE)["nodes"])
        refresh_stock(args.url, names)
        return 0
    schemas = load_schemas()
    if args.cmd == "build":
        for path in build(schemas):
            print(path)
        return 0
    if args.cmd == "to-api":
        print(json.dumps(ui_to_api(_read(args.ui_json), schemas), indent=2))
        return 0
    problems = check(schemas)
    print("\n".join(problems) or "all UI workflows convert to their API sources")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

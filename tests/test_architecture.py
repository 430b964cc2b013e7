"""The layering the README's *How it works* describes, read from the source (``scripts/import_graph.py``):
only ``comfy_adapter`` imports ComfyUI, ``core`` imports only ``core``, the product never imports ``evaluation``,
node modules do not import each other, no import cycle; and every node's ``execute`` stays thin."""
import ast
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Most statements of one node ``execute`` (checks, one core call, NodeOutput; comfy_extras nodes have 1-4).
MAX_EXECUTE_STATEMENTS = 15


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", os.path.join(ROOT, "scripts", "import_graph.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layering_rules_hold():
    g = _import_graph()
    edges, external = g.graph()
    assert "diffcamera.runtime" in edges and "diffcamera.evaluation.scoring" in edges
    assert g.violations(edges, external) == []


def test_the_rules_can_fail():
    g = _import_graph()
    edges = {"diffcamera.core.x": {"diffcamera.nodes.y"}, "diffcamera.nodes.y": {"diffcamera.nodes.z"},
             "diffcamera.nodes.z": set(), "diffcamera.nodes.common": set()}
    external = {"diffcamera.core.x": {"comfy"}, "diffcamera.nodes.y": set(), "diffcamera.nodes.z": set(),
                "diffcamera.nodes.common": set()}
    bad = g.violations(edges, external)
    assert len(bad) == 3 and any("imports ComfyUI" in b for b in bad)
    assert g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    g = _import_graph()
    assert g.cycles(g.graph()[0]) == []


def test_node_execute_methods_are_thin():
    nodes = os.path.join(ROOT, "nodes")
    long = []
    for name in sorted(os.listdir(nodes)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(nodes, name), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "execute":
                    n = sum(isinstance(s, ast.stmt) for s in ast.walk(fn)) - 1
                    if n > MAX_EXECUTE_STATEMENTS:
                        long.append(f"{name}:{cls.name}.execute has {n} statements")
    assert long == []

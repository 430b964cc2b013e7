"""The pack's import graph, read from the source (AST, no import): layering rules and import cycles.

Every ``import`` / ``from … import`` counts, at module level or inside a function (a function-level import hides a
cycle from Python, not from this check). Modules are the pack's own files under their dotted names
(``diffcamera.core.bokeh``); ``from .x import y`` edges go to ``x.y`` when that is a module, else to ``x``.

Rules (the README's *How it works*):

* only ``comfy_adapter`` imports ComfyUI (``comfy``, ``comfy_api``, ``comfy_extras``, ``folder_paths``, ``server``);
* ``core`` imports nothing of the pack outside ``core`` (no runtime, nodes, CLI, training, evaluation);
* ``nodes`` and ``core`` never import ``evaluation``; a node module imports no other node module except the shared
  ``nodes.common`` and ``nodes.validation``;
* no import cycle.

    python scripts/import_graph.py            # prints the violations and cycles; exit status 1 if any
    python scripts/import_graph.py --edges    # also every edge
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "diffcamera"
#: Folders of the repository that are not part of the package.
NOT_PACKAGE = {"tests", "scripts", "benchmarks", "docs", "web", "workflows", "assets", ".venv", ".git", ".ci"}
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server"}
COMFY_ADAPTER = f"{PACKAGE}.comfy_adapter"
SHARED_NODE_MODULES = {f"{PACKAGE}.nodes", f"{PACKAGE}.nodes.common", f"{PACKAGE}.nodes.validation"}


def pack_modules(root: str = ROOT) -> Dict[str, str]:
    """``{dotted module name: file path}`` of every ``.py`` file of the package."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and (parts[0] in NOT_PACKAGE or parts[0].startswith(".")):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                name = [PACKAGE] + parts + ([] if f == "__init__.py" else [f[:-3]])
                out[".".join(name)] = os.path.join(dirpath, f)
    return out


def _resolve(module: str, is_package: bool, level: int, target: str) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: str, modules: Dict[str, str]) -> Tuple[Set[str], Set[str]]:
    """``(pack modules it imports, top-level outside modules it imports)``, at any depth of the file."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    is_package = path.endswith("__init__.py")
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                (inside if name.split(".")[0] == PACKAGE else outside).add(
                    name if name.split(".")[0] == PACKAGE else name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve(module, is_package, node.level, node.module or "")
            elif (node.module or "").split(".")[0] == PACKAGE:
                base = node.module
            else:
                outside.add((node.module or "").split(".")[0])
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                inside.add(sub if sub in modules else base)
    inside = {m for m in inside if m in modules and m != module}
    return inside, outside


def graph(root: str = ROOT) -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    modules = pack_modules(root)
    edges, external = {}, {}
    for name, path in modules.items():
        edges[name], external[name] = imports_of(name, path, modules)
    return edges, external


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def _under(module: str, package: str) -> bool:
    return module == f"{PACKAGE}.{package}" or module.startswith(f"{PACKAGE}.{package}.")


def violations(edges: Dict[str, Set[str]], external: Dict[str, Set[str]]) -> List[str]:
    """Breaks of the layering rules (module docstring), one line each."""
    out = []
    for mod in sorted(edges):
        comfy = sorted(external[mod] & COMFY_MODULES)
        if comfy and mod != COMFY_ADAPTER:
            out.append(f"{mod} imports ComfyUI ({', '.join(comfy)}); only {COMFY_ADAPTER} may")
        for dep in sorted(edges[mod]):
            if _under(mod, "core") and not _under(dep, "core"):
                out.append(f"{mod} (core) imports {dep}: core imports only core")
            if (_under(mod, "nodes") or _under(mod, "core")) and _under(dep, "evaluation"):
                out.append(f"{mod} imports {dep}: the product never imports evaluation")
            if (_under(mod, "nodes") and _under(dep, "nodes") and mod not in SHARED_NODE_MODULES
                    and dep not in SHARED_NODE_MODULES):
                out.append(f"{mod} imports {dep}: a node module imports no other node module")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", action="store_true", help="print every edge too")
    args = parser.parse_args(argv)
    edges, external = graph()
    if args.edges:
        for mod in sorted(edges):
            for dep in sorted(edges[mod]):
                print(f"{mod} -> {dep}")
    bad = violations(edges, external)
    loops = cycles(edges)
    for line in bad:
        print("rule:", line)
    for comp in loops:
        print("cycle:", " <-> ".join(comp))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports: {len(bad)} rule breaks, {len(loops)} cycles")
    return 1 if bad or loops else 0


if __name__ == "__main__":
    raise SystemExit(main())

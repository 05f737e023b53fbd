"""Static import graph of lfcc_deploy/: prints every cycle outside cli/ and exits 1 when there is one.

Deferred (function-level) imports count too: a cycle hidden inside a function still ties the
modules together and breaks as soon as someone hoists the import. Only `ast` is used, so the
check runs without importing (or installing) anything the package needs.

    python tools/import_graph.py [PACKAGE_DIR]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """Package modules `path` imports anywhere in its body (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from . import x` names a module
    # a module imports its package's __init__ implicitly; only modules of this tree are edges
    return {m for m in out if m in modules and m != name}


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]], skip: str) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), modules under `skip` left out."""
    nodes = {n for n in edges if not n.startswith(skip)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v] & nodes):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent / "lfcc_deploy").resolve()
    edges = graph(root)
    found = cycles(edges, f"{root.name}.cli")
    for comp in found:
        inside = {m: sorted(edges[m] & set(comp)) for m in comp}
        print("cycle: " + "; ".join(f"{m} -> {', '.join(t)}" for m, t in inside.items()))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} cycle(s) outside cli/")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

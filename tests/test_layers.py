"""Dependencies run one way (DESIGN.md, "Layers inside hwnas"): no upward import and no cycle among
`search_spaces`, `supernet` and the sub-packages and modules of `hwnas` -- nor between any two
modules inside them.

Read from the source with `ast`, function-local imports included (they hide cycles at import
time but are dependencies all the same). A module added to `hwnas` must be placed in `LAYERS`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A unit may import units of its own layer (without a cycle) or of lower layers.
LAYERS = [
    {"search_spaces"},  # what can be built (pure Python)
    {"supernet"},  # the weights
    {"hwnas._registry", "hwnas.errors", "hwnas.device", "hwnas._progress", "hwnas._files", "hwnas.config", "hwnas.cli",
     "hwnas.mes", "hwnas.data", "hwnas.checkpoint", "hwnas.convert"},  # low-level pieces of the apps
    {"hwnas.latency", "hwnas.evaluate", "hwnas.training", "hwnas.predictor"},
    {"hwnas.export"},  # bundles, manifests, proofs
    {"hwnas.profile", "hwnas.train", "hwnas.search", "hwnas.extract"},  # the apps
    {"hwnas"},  # the package's front door: hwnas.load, hwnas.HwnasError
]
# Upward imports that only a later step can remove: {(importer, imported): why}. Each must still
# occur (a stale one fails), so the list shrinks as they are fixed. None today: the converters'
# move to hwnas.convert removed latency -> export, the one there was.
TEMPORARY: dict[tuple[str, str], str] = {}


def units() -> dict[str, Path]:
    """Unit name -> its file or folder: the two lower packages, and everything directly in hwnas/."""
    out = {"search_spaces": ROOT / "search_spaces", "supernet": ROOT / "supernet", "hwnas": ROOT / "hwnas" / "__init__.py"}
    for p in (ROOT / "hwnas").iterdir():
        if p.suffix == ".py" and p.name != "__init__.py":
            out[f"hwnas.{p.stem}"] = p
        elif p.is_dir() and (p / "__init__.py").exists():
            out[f"hwnas.{p.name}"] = p
    return out


def unit_of(module: str, names: tuple[str, ...], known: set[str]) -> list[str]:
    """The units an import of `module` (and, for `from module import names`, those names) reaches."""
    top = module.split(".")[0]
    if top in ("search_spaces", "supernet"):
        return [top]
    if top != "hwnas":
        return []
    parts = module.split(".")
    if len(parts) > 1:
        return [f"hwnas.{parts[1]}"]
    # `import hwnas` or `from hwnas import x`: a submodule x is its own unit, anything else is the front door
    return sorted({f"hwnas.{n}" if f"hwnas.{n}" in known else "hwnas" for n in names} or {"hwnas"})


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """Units imported anywhere in the file (top level, functions, classes)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.update(unit_of(a.name, (), known))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = module_name(path)
                package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.update(unit_of(target, tuple(a.name for a in node.names), known))
    return out


def modules() -> dict[str, Path]:
    return {module_name(f): f for pkg in ("search_spaces", "supernet", "hwnas") for f in (ROOT / pkg).rglob("*.py")}


def module_imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours a file imports by name (`from a import b`: module a.b when there is one,
    else a); the parent packages Python imports on the way are not counted."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                mod = module_name(path)
                package = (mod if path.name == "__init__.py" else mod.rpartition(".")[0]).split(".")
                target = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    out.add(f"{target}.{a.name}")
                elif target in known:
                    out.add(target)
    out.discard(module_name(path))
    return out


def module_graph() -> dict[str, set[str]]:
    found = modules()
    return {m: module_imports(f, set(found)) for m, f in found.items()}


def graph() -> dict[str, set[str]]:
    found = units()
    known = set(found)
    edges: dict[str, set[str]] = {u: set() for u in found}
    for unit, path in found.items():
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            edges[unit] |= imports(f, known)
        edges[unit].discard(unit)
    return edges


def layer_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise KeyError(unit)


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in edges.items() for b in bs if layer_of(b) > layer_of(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    unplaced = sorted(u for u in units() if not any(u in layer for layer in LAYERS))
    assert not unplaced, f"place these in tests/test_layers.py LAYERS: {unplaced}"


def test_no_upward_import_and_no_cycle():
    edges = graph()
    assert edges["hwnas.latency"] and edges["hwnas.export"]  # the reader sees imports at all
    bad = [e for e in upward(edges) if e not in TEMPORARY]
    assert not bad, "upward imports (importer, imported): " + ", ".join(f"{a} -> {b}" for a, b in bad)
    stale = [e for e in TEMPORARY if e not in upward(edges)]
    assert not stale, f"allowances no longer needed, delete them from TEMPORARY: {stale}"
    loops = cycles({a: {b for b in bs if (a, b) not in TEMPORARY} for a, bs in edges.items()})
    assert not loops, f"import cycles: {loops}"


def test_no_cycle_between_modules():
    """Within a unit too (`search/app.py` <-> `search/supernet_cache.py` was one, hidden in a function)."""
    edges = module_graph()
    assert "hwnas.search.supernet_cache" in edges["hwnas.search.app"]
    assert not cycles(edges), f"import cycles between modules: {cycles(edges)}"


def test_the_checker_sees_upward_imports_and_cycles(tmp_path):
    """An upward import (supernet -> hwnas), one hidden inside a function, and a cycle are found."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from hwnas.search import app\n")
    assert imports(src, set(units())) == {"hwnas.search"}
    edges = graph()
    assert not upward(edges) and not cycles(edges)
    edges["supernet"].add("hwnas.search")
    assert upward(edges) == [("supernet", "hwnas.search")]
    edges = graph()
    edges["hwnas.evaluate"].add("hwnas.training")
    edges["hwnas.training"].add("hwnas.evaluate")
    assert ["hwnas.evaluate", "hwnas.training"] in cycles(edges)
    edges = module_graph()
    edges["hwnas.search.supernet_cache"].add("hwnas.search.app")
    assert ["hwnas.search.app", "hwnas.search.supernet_cache"] in cycles(edges)


@pytest.mark.parametrize("code, expected", [
    ("import hwnas", {"hwnas"}), ("from hwnas import HwnasError", {"hwnas"}),
    ("from hwnas import convert", {"hwnas.convert"}), ("import supernet.family", {"supernet"}),
    ("from hwnas.latency.table import X", {"hwnas.latency"}), ("import numpy", set())])
def test_imports_map_to_units(tmp_path, code, expected):
    src = tmp_path / "m.py"
    src.write_text(code + "\n")
    assert imports(src, set(units())) == expected

"""Imports run one way (DESIGN.md): catalog → ogcapi, harvesters → store → geo; no cycles.

The graph is read from the source with `ast`: every import statement wherever it stands (module
level, inside functions, under `if TYPE_CHECKING`), relative imports resolved, and
`importlib.import_module("…")` / `__import__("…")` with a literal name.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The project's packages: top-level folders with an __init__.py, but for the test and bench code.
PACKAGES = sorted(p.parent.name for p in REPO.glob("*/__init__.py")
                  if p.parent.name not in {"tests", "bench"})
# What each package may import of ours (and nothing else).
ALLOWED = {
    "catalog": {"ogcapi", "harvesters", "store", "geo"},
    "harvesters": {"store", "geo"},
    "ogcapi": {"store", "geo"},
    "store": {"geo"},
    "geo": set(),
}
# geo is pure: reading and translation only, no web framework.
GEO_FORBIDDEN = ("flask", "flask_babel", "flask_cors", "werkzeug")


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """(absolute dotted name, line) of everything the module imports, as written."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = here[:len(here) - (node.level - 1)]
                assert len(base) == len(here) - (node.level - 1) and base, \
                    f"{path}:{node.lineno}: relative import beyond the top-level package"
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.append((prefix, node.lineno))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            names += [(f"{prefix}.{alias.name}", node.lineno) for alias in node.names
                      if alias.name != "*"]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (ast.unparse(node.func) in {"importlib.import_module", "import_module",
                                                "__import__"})):
            names.append((node.args[0].value, node.lineno))
    return names


def _graph():
    """module → {imported module of ours: first line}, and module → external top-level names."""
    modules = _modules()
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    external: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name, line in _imported_names(module, path):
            if name.split(".")[0] not in PACKAGES:
                external[module].add(name.split(".")[0])
                continue
            # The longest prefix that is one of our modules (`from pkg import func` → pkg).
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            assert parts, f"{path}:{line}: imports {name}, which is none of our modules"
            target = ".".join(parts)
            if target != module:
                edges[module].setdefault(target, line)
    return modules, edges, external


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def _package(module: str) -> str:
    return module.split(".")[0]


def _where(modules, edges, source: str, target: str) -> str:
    return f"{modules[source].relative_to(REPO)}:{edges[source][target]} ({source} → {target})"


def test_the_graph_is_read():
    """The reader sees what is there: every package, relative and in-function imports."""
    modules, edges, _ = _graph()
    assert set(PACKAGES) == set(ALLOWED), "a new package needs its place in ALLOWED"
    assert {"catalog.app", "catalog.pages", "catalog.api", "store.db", "ogcapi.api",
            "harvesters.runner", "geo.readers"} <= set(modules)
    # catalog.app imports the OGC API blueprint inside create_app().
    assert "ogcapi.blueprint" in edges["catalog.app"]


def test_relative_imports_are_resolved(tmp_path):
    pkg = tmp_path / "catalog" / "pages"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from . import y\nfrom ..api import ckan\n"
                              "def f():\n    from .. import app\n"
                              "import importlib\nimportlib.import_module('store.db')\n")
    names = {n for n, _ in _imported_names("catalog.pages.x", pkg / "x.py")}
    assert {"catalog.pages", "catalog.pages.y", "catalog.api", "catalog.api.ckan", "catalog",
            "catalog.app", "store.db"} <= names
    (pkg / "__init__.py").write_text("from .x import f\nfrom . import x\n")
    names = {n for n, _ in _imported_names("catalog.pages", pkg / "__init__.py")}
    assert {"catalog.pages.x", "catalog.pages.x.f"} <= names


def test_no_cycle_between_modules():
    modules, edges, _ = _graph()
    cycles = _cycles({m: set(t) for m, t in edges.items()})
    assert not cycles, "\n".join(
        " ↔ ".join(c) + ": " + "; ".join(_where(modules, edges, a, b)
                                         for a in c for b in edges[a] if b in c)
        for c in cycles)


def test_no_cycle_between_packages():
    _, edges, _ = _graph()
    between = {p: set() for p in PACKAGES}
    for source, targets in edges.items():
        between[_package(source)] |= {_package(t) for t in targets} - {_package(source)}
    assert not _cycles(between), _cycles(between)


def test_imports_between_packages_run_one_way():
    modules, edges, _ = _graph()
    wrong = [_where(modules, edges, source, target)
             for source, targets in sorted(edges.items()) for target in sorted(targets)
             if _package(target) != _package(source)
             and _package(target) not in ALLOWED[_package(source)]]
    assert not wrong, "imports against the direction catalog → ogcapi, harvesters → store → " \
                      "geo:\n" + "\n".join(wrong)


def test_geo_imports_no_flask_and_no_other_package_of_ours():
    modules, edges, external = _graph()
    ours = [_where(modules, edges, m, t) for m in sorted(edges) if _package(m) == "geo"
            for t in sorted(edges[m]) if _package(t) != "geo"]
    web = [f"{modules[m].relative_to(REPO)} imports {name}" for m in sorted(external)
           if _package(m) == "geo" for name in sorted(external[m])
           if name in GEO_FORBIDDEN or name.startswith("flask")]
    assert not ours and not web, "\n".join(ours + web)

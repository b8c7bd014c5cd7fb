"""The package's arrows run one way, as docs/architecture.md draws them.

cli → train → selector → search → data (serve over selector; web, the HTTP helpers, at the bottom),
and inside train: sweep ← fit ← evaluation ← report ← quickstart. A function-level or
TYPE_CHECKING import counts like any other: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGE = {"tests", "benchmarks", "scripts", "docs", "build", "dist"}

#: What each top-level room may import (besides itself).
ALLOWED = {
    "data": set(),
    "web": set(),
    "search": {"data", "web"},
    "selector": {"search", "data"},
    "serve": {"selector", "search", "data", "web"},
    "train": {"selector", "search", "data"},
    "cli": {"train", "serve", "selector", "search", "data", "web"},
}
#: Inside train/: each room may import the rooms before it.
TRAIN_ORDER = ["sweep", "fit", "evaluation", "report", "quickstart"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_PACKAGE or rel.parts[0].startswith((".", "ttsopt.egg")):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["ttsopt", *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ttsopt module ``name`` imports, wherever the import statement sits."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "ttsopt":
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_room_imports_only_the_rooms_below_it():
    wrong = []
    for module, deps in _graph().items():
        room = _room(module)
        if room not in ALLOWED:  # the package's public API (ttsopt/__init__) re-exports from anywhere
            continue
        wrong += [f"{module} imports {d}" for d in deps if _room(d) != room and _room(d) not in ALLOWED[room]]
    assert not wrong, "\n".join(sorted(wrong))


def test_train_rooms_import_one_way():
    def train_room(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "train" else None

    wrong = []
    for module, deps in _graph().items():
        mine = train_room(module)
        if mine is None:
            continue
        for d in deps:
            theirs = train_room(d)
            if theirs is not None and theirs != mine and TRAIN_ORDER.index(theirs) > TRAIN_ORDER.index(mine):
                wrong.append(f"{module} imports {d}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_is_part_of_an_import_circle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                circles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its own modules is not a circle of behaviour
    circles = [c for c in circles if not all(m.startswith(min(c, key=len) + ".") or m == min(c, key=len) for m in c)]
    assert not circles, circles


def test_the_graph_sees_relative_and_function_level_imports():
    graph = _graph()
    assert "ttsopt.train.fit.pairs" in graph["ttsopt.train.fit.cascade"]  # relative, at the top
    assert "ttsopt.train.sweep.snapshot" in graph["ttsopt.train.fit.cascade"]


def test_every_subpackage_is_listed_in_pyproject_so_a_wheel_ships_it():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert packages - listed == set()

"""The package's floors, read from the source with ``ast``: imports point down only.

- ``teachers/``, ``evaluation/`` and ``training/`` never import each other (what two of them
  share lives a floor below: ``clients/``, ``records``, ``chat``, ``store/``, ...);
- every folder and root module has a floor (ground, low, middle, top: ``FLOORS``), and imports
  point to the same floor or below (ground modules import no client, store or chat);
- no private name (``_x``) is imported from another folder;
- no hidden edge: no ``importlib.import_module("tracedistill...")``;
- no import cycle between modules (imports inside functions count too: they are edges a reader
  has to know about even when they break a cycle at run time; imports under
  ``if TYPE_CHECKING:`` never run and do not count for cycles, only for the floor rules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tracedistill"

#: The middle floors that must not import each other.
SIBLINGS = frozenset({"teachers", "evaluation", "training"})
#: Every folder and root module of the package, by floor (docs/architecture.md): an import
#: points to its own floor or one below, never up. ``""`` is the package's own ``__init__``.
FLOORS: dict[str, frozenset[str]] = {
    # Records and plain helpers that know nothing of models, stores or the network.
    "ground": frozenset(
        {"records", "errors", "_json", "_jsonl", "_html", "_lazy", "_progress", "_secrets"}
        | {"_version"}
    ),
    # Talking to models and keeping traces.
    "low": frozenset({"clients", "store", "chat", "prompts", "tokenizer"}),
    "middle": frozenset({"teachers", "evaluation", "training", "problems", "verifiers"}),
    "top": frozenset({"experiment", "report", "demo", "__main__", ""}),
}
FLOOR_ORDER = ("ground", "low", "middle", "top")


@attrs.frozen
class Edge:
    """One import: ``importer`` imports ``target`` (a module), naming ``names`` from it."""

    importer: str
    target: str
    names: tuple[str, ...]
    line: int
    hidden: bool = False  # through importlib
    type_only: bool = False  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        how = "importlib" if self.hidden else "import"
        return f"{self.importer}:{self.line} {how} {self.target} {', '.join(self.names)}".strip()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


MODULES = _modules()


def _resolve(base: str, name: str) -> str:
    """``from base import name`` names a submodule when one exists, else a name in ``base``."""
    return f"{base}.{name}" if f"{base}.{name}" in MODULES else base


def _type_only_lines(tree: ast.AST) -> set[int]:
    """The line numbers of imports under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
        if name == "TYPE_CHECKING":
            for inner in node.body:  # type: ignore[attr-defined]
                lines.update(n.lineno for n in ast.walk(inner) if hasattr(n, "lineno"))
    return lines


def _edges_of(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = _type_only_lines(tree)
    for edge in _all_edges_of(module, path, tree):
        yield attrs.evolve(edge, type_only=edge.line in type_only)


def _all_edges_of(module: str, path: Path, tree: ast.AST) -> Iterator[Edge]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                yield Edge(module, _resolve(base, alias.name), (alias.name,), node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield Edge(module, alias.name, (), node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.split(".")[0] == PACKAGE
            ):
                yield Edge(module, first.value, (), node.lineno, hidden=True)


EDGES = [edge for module, path in MODULES.items() for edge in _edges_of(module, path)]


def _folder(module: str) -> str:
    """The first component under the package (``teachers`` for ``tracedistill.teachers.x``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _package_of(module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to itself)."""
    if (SRC / Path(*module.split("."))).is_dir():
        return module
    return module.rpartition(".")[0]


def _private_owner(edge: Edge) -> str | None:
    """The package that owns the first private thing the edge names, if any.

    A private module belongs to the package holding it; a private name in a module belongs to
    that module's package (modules of one folder may share their private helpers).
    """
    parts = edge.target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    if any(n.startswith("_") and not n.startswith("__") for n in edge.names):
        return _package_of(edge.target)
    return None


def _is_inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _floor(module: str) -> int:
    """The floor (0 = ground) of a module of the package, by its folder or root module."""
    folder = _folder(module)
    for level, name in enumerate(FLOOR_ORDER):
        if folder in FLOORS[name]:
            return level
    raise AssertionError(f"{module} is on no floor: add {folder!r} to FLOORS")


def _violations() -> dict[str, list[Edge]]:
    found: dict[str, list[Edge]] = {"sibling": [], "upward": [], "private": [], "hidden": []}
    for edge in EDGES:
        src, dst = _folder(edge.importer), _folder(edge.target)
        if src in SIBLINGS and dst in SIBLINGS and src != dst:
            found["sibling"].append(edge)
        if _floor(edge.target) > _floor(edge.importer):
            found["upward"].append(edge)
        owner = _private_owner(edge)
        if owner is not None and not _is_inside(edge.importer, owner):
            found["private"].append(edge)
        if edge.hidden:
            found["hidden"].append(edge)
    return found


def _cycles() -> list[list[str]]:
    """Every strongly connected group of modules with more than one member (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in EDGES:
        if edge.target in graph and edge.target != edge.importer and not edge.type_only:
            graph[edge.importer].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_source_is_read() -> None:
    # A rule over no edges passes vacuously: make sure the walk sees the package.
    assert "tracedistill.clients.base" in MODULES
    assert any(e.target == "tracedistill.clients.retry" for e in EDGES)
    assert any(e.importer == "tracedistill.teachers.base" for e in EDGES)


@pytest.mark.parametrize("rule", ["sibling", "upward", "private", "hidden"])
def test_imports_point_down(rule: str) -> None:
    bad = [str(e) for e in _violations()[rule]]
    assert not bad, f"{rule} imports:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_module_is_on_exactly_one_floor() -> None:
    # A new root module or folder gets a floor before the upward rule can pass over it.
    names = [n for floor in FLOORS.values() for n in floor]
    assert len(names) == len(set(names)), "a name on two floors"
    on_disk = {_folder(m) for m in MODULES}
    assert on_disk == set(names), on_disk ^ set(names)
    assert all(_floor(m) >= 0 for m in MODULES)


def test_the_rules_catch_what_they_name() -> None:
    # The checks themselves, on made-up edges.
    sideways = Edge("tracedistill.evaluation.x", "tracedistill.teachers.y", ("z",), 1)
    private = Edge("tracedistill.evaluation.x", "tracedistill.teachers._http", ("a",), 1)
    private_name = Edge("tracedistill.evaluation.x", "tracedistill.teachers.http", ("_a",), 1)
    inside = Edge("tracedistill.teachers.x", "tracedistill.teachers._http", ("a",), 1)
    ground = Edge("tracedistill.records.x", "tracedistill._json", (), 1)
    assert _folder(sideways.importer) in SIBLINGS and _folder(sideways.target) in SIBLINGS
    assert _private_owner(private) == "tracedistill.teachers"
    assert _private_owner(private_name) == "tracedistill.teachers"
    assert _private_owner(inside) == "tracedistill.teachers"
    assert _is_inside(inside.importer, "tracedistill.teachers")
    assert _private_owner(ground) == "tracedistill"
    assert _is_inside(ground.importer, "tracedistill")
    # Floors: ground < low < middle < top, root modules included.
    assert (
        _floor("tracedistill.records.x")
        < _floor("tracedistill.chat")
        < _floor("tracedistill.teachers.x")
    )
    assert _floor("tracedistill.clients._tinker") == _floor("tracedistill.chat")
    assert _floor("tracedistill.report.x") > _floor("tracedistill.verifiers.x")
    assert _floor("tracedistill") == _floor("tracedistill.experiment")


# Added with the lazy package exports (issue 15, "Done means").

#: Package ``__init__`` files that export lazily (``tracedistill._lazy``): their imports under
#: ``if TYPE_CHECKING:`` run on first attribute access, so for cycles they count as real edges.
LAZY_PACKAGES = frozenset(
    module
    for module, path in MODULES.items()
    if path.name == "__init__.py" and "_lazy.attach(" in path.read_text(encoding="utf-8")
)


def test_no_import_cycle_through_lazy_exports() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in EDGES:
        runs = not edge.type_only or edge.importer in LAZY_PACKAGES
        if edge.target in graph and edge.target != edge.importer and runs:
            graph[edge.importer].add(edge.target)
    assert "tracedistill.verifiers.code" in graph["tracedistill.verifiers"]

    def cycle_from(start: str) -> list[str] | None:
        path: list[str] = []
        on_path: set[str] = set()
        done: set[str] = set()
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, nexts = stack[-1]
            nxt = next(nexts, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
                on_path.add(nxt)
        return None

    cycles = [c for c in (cycle_from(m) for m in sorted(LAZY_PACKAGES)) if c]
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


#: Longest function (``def`` line, or its first decorator, to its last line) and module in src/.
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700


def test_no_function_over_80_lines_and_no_module_over_700() -> None:
    long: list[str] = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = (node.end_lineno or node.lineno) - start + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{module}:{node.lineno} {node.name}: {size} lines")
    assert not long, "too long:\n" + "\n".join(long)


#: Every import whose module is computed at run time, and why it hides no package edge.
REVIEWED_DYNAMIC_IMPORTS = {
    # A lazily exported name's module; every table is checked against the ``TYPE_CHECKING``
    # imports beside it (tests/test_imports.py), which the rules above read.
    "tracedistill._lazy",
    # A runner process loads the handler its parent names (verifiers.math -> _math_worker,
    # verifiers.code -> sandbox): a process boundary inside one folder.
    "tracedistill.verifiers._worker",
    # Optional third-party HTTP transports (aiohttp), warmed off the event loop.
    "tracedistill.clients.remote",
}


def test_every_dynamic_import_is_reviewed() -> None:
    # ``importlib.import_module(x)`` / ``__import__(x)`` with a computed name escapes the
    # hidden-edge rule above (it reads constant names only): each such site is listed here.
    found: set[str] = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in {"import_module", "__import__"} or any(  # or passed to a thread
                    getattr(a, "attr", getattr(a, "id", "")) in {"import_module", "__import__"}
                    for a in node.args
                ):
                    first = node.args[0] if node.args else None
                    if called in {"import_module", "__import__"} and isinstance(
                        first, ast.Constant
                    ):
                        continue  # a constant name: the hidden-edge rule reads it
                    found.add(module)
    assert found == REVIEWED_DYNAMIC_IMPORTS

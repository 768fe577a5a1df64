"""The import graph of the product packages, read from their source with `ast` (nothing is
imported): no import cycle anywhere, and each layer imports only what lies below it.

    jobwire (cli, up) -> gateway.processes -> gateway.app -> gateway.endpoints
                      -> gateway.engine -> shared
    jobwire (cli, up) -> worker -> shared;  jobwire.client -> shared

What counts as module I importing module M:

- every import statement in I: at the top, inside functions, under `if TYPE_CHECKING:` (a
  type-only import still ties the two modules together, and a cycle through one is an edit
  away from a runtime cycle), and `importlib.import_module("<literal>")`;
- `import a.b.c` and `from a.b.c import x` import `a.b.c`; `from a.b import c` imports the
  submodule `a.b.c` when there is one, else it takes the name `c` from `a.b` (its __init__);
  relative imports are resolved against I's package.

Package __init__ modules: `import a.b.c` also runs `a/__init__` and `a/b/__init__` first.
From a module outside package `a` those runs count as imports by I: I depends on them, and a
cycle through them fails at import time like any other. A package that encloses I does not
count: Python runs it before I, so I meets it either complete or on the very import chain that
led to I. Counting it would make every __init__ that re-exports its own submodules
(`worker/__init__.py`, `jobwire/client/__init__.py`) a cycle, which it is not. Taking a name
from an enclosing package (`from worker import Progress` inside `worker/`) does count: that is
where a half-run __init__ fails.

The layer rules are about what a module's own statements name, so they look at the module each
statement names, not at the package __init__ modules it runs on the way.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobwire", "shared", "worker", "gateway")


@dataclass(frozen=True)
class Layer:
    """Modules under `package` import nothing under any of `forbidden`."""

    package: str
    forbidden: tuple[str, ...]


LAYERS = (
    Layer("shared", ("worker", "gateway", "jobwire")),
    Layer("worker", ("gateway", "jobwire")),
    Layer("gateway", ("worker", "jobwire")),
    Layer("gateway.engine", ("gateway.endpoints", "gateway.processes", "gateway.app")),
    Layer("gateway.endpoints", ("gateway.processes", "gateway.app")),
    Layer("jobwire.client", ("gateway", "worker")),
)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Edge:
    """`importer` imports `imported` at `line`; `named` is False for a package __init__ that
    only runs on the way to the module the statement names."""

    importer: str
    imported: str
    line: int
    named: bool


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every module of `packages` under `root`, by dotted name. Where `x.py` sits beside a
    package `x/`, the package is what Python imports."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            if name in modules and not is_package:
                continue
            modules[name] = Module(name, path, is_package)
    return modules


def _encloses(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts)):
        yield ".".join(parts[:end])


class _Resolver:
    def __init__(self, modules: Mapping[str, Module]) -> None:
        self._modules = modules

    def edges(self, module: Module) -> Iterator[Edge]:
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom | ast.Call):
                for target in self._targets(module, node):
                    yield from self._edges_to(module.name, target, node.lineno)

    def _targets(
        self, module: Module, node: ast.Import | ast.ImportFrom | ast.Call
    ) -> Iterator[str]:
        """The modules a statement names."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = self._absolute(module, node.module, node.level)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in self._modules else base
        elif (name := _import_module_literal(node)) is not None:
            yield name

    def _absolute(self, module: Module, name: str | None, level: int) -> str:
        if level == 0:
            assert name is not None
            return name
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        for _ in range(level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{name}" if name else package

    def _edges_to(self, importer: str, target: str, line: int) -> Iterator[Edge]:
        named = self._known(target)
        if named is None or named == importer:
            return
        yield Edge(importer, named, line, named=True)
        for package in _ancestors(named):
            if package in self._modules and not _encloses(package, importer):
                yield Edge(importer, package, line, named=False)

    def _known(self, name: str) -> str | None:
        """`name`, or its longest prefix that is a product module; None outside them."""
        while name and name not in self._modules:
            name = name.rpartition(".")[0]
        return name or None


def _import_module_literal(call: ast.Call) -> str | None:
    """The module `importlib.import_module("<literal>")` imports; None for any other call."""
    func, args = call.func, call.args
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
        and len(args) == 1
        and isinstance(args[0], ast.Constant)
        and isinstance(args[0].value, str)
    ):
        return None
    return args[0].value


def import_edges(modules: Mapping[str, Module]) -> list[Edge]:
    """Each import once, though a statement may name a module more than once."""
    resolver = _Resolver(modules)
    edges = (edge for module in modules.values() for edge in resolver.edges(module))
    return list(dict.fromkeys(edges))


def find_cycles(edges: Iterable[Edge]) -> list[list[Edge]]:
    """One shortest cycle through each group of modules that import each other, in a stable
    order; empty when the graph has no cycle."""
    graph: dict[str, dict[str, Edge]] = defaultdict(dict)
    for edge in edges:
        graph[edge.importer].setdefault(edge.imported, edge)
    cycles = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            cycles.append(_shortest_cycle(graph, min(component), component))
    return sorted(cycles, key=lambda cycle: cycle[0].importer)


def _strongly_connected(graph: Mapping[str, Mapping[str, Edge]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph may be deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    nodes = sorted(set(graph) | {m for targets in graph.values() for m in targets})
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, {})))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _shortest_cycle(
    graph: Mapping[str, Mapping[str, Edge]], start: str, component: set[str]
) -> list[Edge]:
    """Breadth-first from `start` back to itself, inside `component`."""
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor, edge in sorted(graph.get(node, {}).items()):
            if successor not in component:
                continue
            if successor == start:
                path = [edge]
                while path[0].importer != start:
                    path.insert(0, came_by[path[0].importer])
                return path
            if successor not in came_by:
                came_by[successor] = edge
                queue.append(successor)
    raise AssertionError(f"no cycle through {start}")


def layer_breaks(
    edges: Iterable[Edge],
    layers: Iterable[Layer] = LAYERS,
) -> list[tuple[Layer, Edge]]:
    breaks = []
    for layer in layers:
        for edge in edges:
            if not edge.named:
                continue
            if _encloses(layer.package, edge.importer) and any(
                _encloses(forbidden, edge.imported) for forbidden in layer.forbidden
            ):
                breaks.append((layer, edge))
    return breaks


def describe_cycle(cycle: list[Edge], modules: Mapping[str, Module], root: Path) -> str:
    names = " -> ".join([cycle[0].importer, *(edge.imported for edge in cycle)])
    hops = "\n".join(
        f"    {_where(edge, modules, root)} imports {edge.imported}"
        + ("" if edge.named else " (its package __init__, on the way)")
        for edge in cycle
    )
    return f"import cycle: {names}\n{hops}"


def describe_break(layer: Layer, edge: Edge, modules: Mapping[str, Module], root: Path) -> str:
    return (
        f"{_where(edge, modules, root)}: {edge.importer} imports {edge.imported}, "
        f"but {layer.package} imports nothing of {', '.join(layer.forbidden)}"
    )


def _where(edge: Edge, modules: Mapping[str, Module], root: Path) -> str:
    return f"{modules[edge.importer].path.relative_to(root)}:{edge.line}"


# The product.


@pytest.fixture(scope="module")
def product() -> tuple[dict[str, Module], list[Edge]]:
    modules = find_modules(ROOT, PACKAGES)
    return modules, import_edges(modules)


def test_the_product_packages_import_no_module_in_a_cycle(
    product: tuple[dict[str, Module], list[Edge]],
) -> None:
    modules, edges = product

    cycles = [describe_cycle(cycle, modules, ROOT) for cycle in find_cycles(edges)]

    if cycles:
        pytest.fail("\n".join(cycles), pytrace=False)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.package)
def test_each_layer_imports_nothing_above_it(
    product: tuple[dict[str, Module], list[Edge]], layer: Layer
) -> None:
    modules, edges = product

    breaks = [describe_break(*found, modules, ROOT) for found in layer_breaks(edges, [layer])]

    if breaks:
        pytest.fail("\n".join(breaks), pytrace=False)


def test_every_product_package_is_read(product: tuple[dict[str, Module], list[Edge]]) -> None:
    modules, edges = product

    for package in (*PACKAGES, "jobwire.client"):
        inside = [name for name in modules if _encloses(package, name)]
        assert len(inside) >= 3, f"{package}: {inside}"
        assert any(edge.importer in inside for edge in edges), package
    for package in ("gateway.endpoints", "gateway.engine", "gateway.processes"):
        assert any(_encloses(package, name) for name in modules), package


# The checks themselves, on small trees made for them.


def _tree(root: Path, files: Mapping[str, str]) -> tuple[dict[str, Module], list[Edge]]:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    packages = {relative.split("/")[0] for relative in files}
    modules = find_modules(root, sorted(packages))
    return modules, import_edges(modules)


def _cycle_names(edges: list[Edge]) -> list[list[str]]:
    return [[cycle[0].importer, *(edge.imported for edge in cycle)] for cycle in find_cycles(edges)]


def test_a_cycle_through_a_function_and_a_type_checking_import_is_found(tmp_path: Path) -> None:
    modules, edges = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f() -> None:\n    from pkg.b import g\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n",
            "pkg/c.py": "from pkg import a\n",
            "pkg/d.py": "import pkg.a\n",
        },
    )

    [cycle] = find_cycles(edges)

    assert [cycle[0].importer, *(edge.imported for edge in cycle)] == [
        "pkg.a", "pkg.b", "pkg.c", "pkg.a",
    ]  # fmt: skip
    assert describe_cycle(cycle, modules, tmp_path).splitlines() == [
        "import cycle: pkg.a -> pkg.b -> pkg.c -> pkg.a",
        "    pkg/a.py:2 imports pkg.b",
        "    pkg/b.py:3 imports pkg.c",
        "    pkg/c.py:1 imports pkg.a",
    ]


def test_relative_imports_and_import_module_literals_are_followed(tmp_path: Path) -> None:
    _, edges = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/a.py": "from .. import b\n",
            "pkg/b.py": "import importlib\nimportlib.import_module('pkg.sub.a')\n",
        },
    )

    assert _cycle_names(edges) == [["pkg.b", "pkg.sub.a", "pkg.b"]]


def test_an_init_reexporting_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    _, edges = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
            "pkg/a.py": "A = 1\n",
            "pkg/b.py": "from pkg import a\nfrom pkg.a import A\nB = A\n",
        },
    )

    assert _cycle_names(edges) == []


def test_a_submodule_taking_a_name_from_its_half_run_init_is_a_cycle(tmp_path: Path) -> None:
    _, edges = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nNAME = 1\n",
            "pkg/a.py": "from pkg import NAME\nA = NAME\n",
        },
    )

    assert _cycle_names(edges) == [["pkg", "pkg.a", "pkg"]]


def test_an_init_run_on_the_way_from_outside_is_part_of_a_cycle(tmp_path: Path) -> None:
    modules, edges = _tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/main.py": "import lib.deep.x\n",
            "lib/__init__.py": "from app.main import run\n",
            "lib/deep/__init__.py": "",
            "lib/deep/x.py": "",
        },
    )

    [cycle] = find_cycles(edges)

    assert describe_cycle(cycle, modules, tmp_path).splitlines() == [
        "import cycle: app.main -> lib -> app.main",
        "    app/main.py:1 imports lib (its package __init__, on the way)",
        "    lib/__init__.py:1 imports app.main",
    ]


def test_a_module_importing_above_its_layer_is_reported_where_it_does(tmp_path: Path) -> None:
    modules, edges = _tree(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/__main__.py": "from jobwire.cli import main\nimport jobwire.up\n",
            "gateway/app.py": "",
            "gateway/engine/hub.py": "from gateway.engine import other\nfrom gateway import app\n",
            "gateway/engine/other.py": "def f() -> None:\n    import gateway.endpoints.jobs\n",
            "gateway/endpoints/jobs.py": "from ..engine import hub\n",
            "jobwire/__init__.py": "",
            "jobwire/cli.py": "",
            "jobwire/up.py": "",
            "shared/__init__.py": "",
            "shared/keys.py": "from gateway.engine.hub import Hub\n",
        },
    )

    breaks = [describe_break(*found, modules, tmp_path) for found in layer_breaks(edges)]

    assert breaks == [
        "shared/keys.py:1: shared.keys imports gateway.engine.hub, "
        "but shared imports nothing of worker, gateway, jobwire",
        "gateway/__main__.py:1: gateway.__main__ imports jobwire.cli, "
        "but gateway imports nothing of worker, jobwire",
        "gateway/__main__.py:2: gateway.__main__ imports jobwire.up, "
        "but gateway imports nothing of worker, jobwire",
        "gateway/engine/hub.py:2: gateway.engine.hub imports gateway.app, "
        "but gateway.engine imports nothing of gateway.endpoints, gateway.processes, "
        "gateway.app",
        "gateway/engine/other.py:2: gateway.engine.other imports gateway.endpoints.jobs, "
        "but gateway.engine imports nothing of gateway.endpoints, gateway.processes, "
        "gateway.app",
    ]

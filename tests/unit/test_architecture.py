"""House rules of the ``actstore`` package, checked with :mod:`ast` over every file in ``actstore/``.

Rules (each violation is printed as ``path:line: [rule] message`` in the failure message):

``cycle``
    No import cycles between modules of ``actstore``. Module-level imports, imports inside
    functions, and imports under ``if TYPE_CHECKING:`` all count (a typing-only import is still
    a dependency of the design; the message marks it ``typing-only``). ``importlib.import_module``
    and ``__import__`` with a literal module name count as well; computed names cannot be seen.

``direction``
    Imports point one way. ``actstore.analysis`` imports nothing of actstore;
    ``actstore.store`` imports only store, layers, errors and config; ``actstore.ingest``
    imports no service, api, cli or plots; ``actstore.service`` imports no api, cli or plots,
    and imports ``actstore.ingest`` only lazily (inside a function: to start ingests and
    encode text); ``actstore.plots`` imports no service, api, cli, store or ingest;
    ``actstore.layers``, ``actstore.errors`` and ``actstore.config`` import only each other.
    Importing the root face ``actstore`` (``from actstore import Store``) counts as importing
    ``actstore`` itself (not the store), which analysis, store, layers, errors, config and plots
    may not do (the face imports the store).

``private-import``
    No private name crosses a module boundary by import: not ``from x import _y``, not
    ``from . import _mod``, not ``import a._b`` / ``from ._b import c`` (a module whose path has a
    ``_private`` part). Dunders (``__future__``, ``__version__``, ``__main__``) are not private.

``private-attr``
    No access to a private attribute of another module or object: ``something._name`` (and
    ``getattr/hasattr/setattr(something, "_name")``) is allowed only when ``something`` is
    ``self``, ``cls``, ``super()`` or ``type(self)``. ``_name`` means one leading underscore and
    not a dunder.

``environ``
    No module other than ``actstore/config.py`` touches ``os.environ`` / ``os.getenv``
    (``from os import environ`` included). Settings come from :class:`actstore.config.Settings`.

How imports are resolved
    Relative imports are resolved against the importing module (in a package's ``__init__.py``,
    ``.`` is the package itself). ``import a.b.c`` is an edge to ``a.b.c``.
    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the tree, else
    to ``pkg`` (the name is then an attribute of ``pkg``'s ``__init__.py``, its *face*).

How package faces (``__init__.py``) are handled
    A package's ``__init__.py`` is a node of its own (named after the package). Python runs the
    ``__init__.py`` of every parent package before a submodule; those *implicit* parent imports
    are NOT edges. So a face that re-exports its own submodules (``from .store import Store`` in
    ``actstore/store/__init__.py``) has edges face -> submodule only, and is never a cycle with
    them by itself. A cycle through a face is reported only when some module explicitly imports
    a *name* from that face (``from actstore.store import Store`` inside
    ``actstore/store/knn.py`` while the face imports ``knn``): that is a real cycle (the face and
    the submodule each need the other to finish first), and the fix is to import the sibling
    module directly. Faces are also subject to the direction rule like any module of their part.

Allow-list: :data:`PRIVATE_ALLOWED` lists third-party internals that have no public alternative,
each with a comment saying why. It is empty unless such a case exists.

The checker is a plain function over ``{relative path: source}``, so the self-tests at the end
run it on synthetic snippets and the tests cannot pass vacuously.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "actstore"
ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / PACKAGE

# The direction rule. A "part" is the first component below ``actstore`` ("store" for
# actstore.store.knn); the root face ``actstore/__init__.py`` is the part "" (it re-exports
# the store, so the constrained parts may not import it). Parts not named here (cli, demo,
# the root face) are not constrained. Imports within one part are always allowed.
# part -> the only parts it may import:
ALLOWED_PARTS: dict[str, frozenset[str]] = {
    "analysis": frozenset({"analysis"}),
    "store": frozenset({"store", "layers", "errors", "config"}),
    "layers": frozenset({"layers", "errors", "config"}),
    "errors": frozenset({"layers", "errors", "config"}),
    "config": frozenset({"layers", "errors", "config"}),
    # api -> service: the API reaches the store and the numerics only through the service
    "api": frozenset({"api", "service", "plots", "layers", "errors", "config"}),
}
# part -> parts it must not import:
FORBIDDEN_PARTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"service", "api", "cli", "plots"}),
    "service": frozenset({"api", "cli", "plots"}),
    "plots": frozenset({"service", "api", "cli", "store", "ingest", ""}),  # "": the face imports store
}
# part -> parts it may import only inside a function (lazily).
LAZY_ONLY: dict[str, frozenset[str]] = {"service": frozenset({"ingest"})}

ENVIRON_OWNER = f"{PACKAGE}/config.py"
ENVIRON_NAMES = frozenset({"environ", "environb", "getenv", "getenvb"})

# (module as resolved / object expression as written, private name) pairs allowed in
# private-import / private-attr, each with a comment giving the reason. Only third-party
# internals without a public alternative belong here; none is needed today.
PRIVATE_ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module of the tree
    path: str
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(rel: str) -> tuple[str, bool]:
    """``actstore/store/knn.py`` -> ("actstore.store.knn", False); ``.../__init__.py`` -> (pkg, True)."""
    parts = list(Path(rel).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def part_of(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else ""


class _Visitor(ast.NodeVisitor):
    """Collects imports (with function depth and TYPE_CHECKING context), private attribute
    accesses and environment accesses of one module."""

    def __init__(self) -> None:
        self.imports: list[tuple[ast.AST, bool, bool]] = []  # (node, lazy, typing_only)
        self.attrs: list[tuple[int, str, str]] = []  # (line, expression, private name)
        self.environ: list[tuple[int, str]] = []
        self.os_aliases = {"os"}
        self._depth = 0
        self._typing = 0

    # context ----------------------------------------------------------------
    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        typing = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self.visit(node.test)
        self._typing += typing
        for child in node.body:
            self.visit(child)
        self._typing -= typing
        for child in node.orelse:
            self.visit(child)

    # imports ----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self._depth > 0, self._typing > 0))
        for alias in node.names:
            if alias.name == "os":
                self.os_aliases.add(alias.asname or "os")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append((node, self._depth > 0, self._typing > 0))
        if node.level == 0 and node.module == "os":
            for alias in node.names:
                if alias.name in ENVIRON_NAMES:
                    self.environ.append((node.lineno, f"from os import {alias.name}"))

    # attributes and calls ---------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.os_aliases and node.attr in ENVIRON_NAMES:
            self.environ.append((node.lineno, f"{node.value.id}.{node.attr}"))
        if is_private(node.attr) and not _is_own(node.value):
            self.attrs.append((node.lineno, ast.unparse(node.value), node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if fname in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
            name = node.args[1]
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and is_private(name.value)
                and not _is_own(node.args[0])
            ):
                self.attrs.append((node.lineno, ast.unparse(node.args[0]), name.value))
        if (
            fname in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            fake = ast.Import(names=[ast.alias(name=node.args[0].value)])
            ast.copy_location(fake, node)
            self.imports.append((fake, self._depth > 0, self._typing > 0))
        self.generic_visit(node)


def _is_own(value: ast.AST) -> bool:
    """``self`` / ``cls`` / ``super()`` / ``type(self)``: the object's own attributes."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        if value.func.id == "super":
            return True
        if value.func.id == "type" and len(value.args) == 1:
            return _is_own(value.args[0])
    return False


def _resolve_base(module: str, is_pkg: bool, level: int, name: str | None) -> str | None:
    if level == 0:
        return name
    parts = module.split(".") if is_pkg else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return None
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def check_sources(sources: Mapping[str, str], package: str = PACKAGE) -> list[Violation]:
    """All house-rule violations of the modules in ``sources`` ({"actstore/x.py": source})."""
    modules: dict[str, tuple[str, bool]] = {}
    for rel in sources:
        name, is_pkg = module_name(rel)
        modules[name] = (rel, is_pkg)
    violations: list[Violation] = []
    edges: list[Edge] = []
    for rel, source in sorted(sources.items()):
        me, is_pkg = module_name(rel)
        try:
            tree = ast.parse(source, filename=rel)
        except SyntaxError as exc:
            violations.append(Violation(rel, exc.lineno or 0, "syntax", f"cannot parse: {exc.msg}"))
            continue
        v = _Visitor()
        v.visit(tree)
        for node, lazy, typing_only in v.imports:
            for target, source_module, shown, private in _targets(node, me, is_pkg, modules):
                if private and (source_module, private) not in PRIVATE_ALLOWED:
                    violations.append(
                        Violation(rel, node.lineno, "private-import", f"imports private {private!r} ({shown})")
                    )
                if target is None or target == me:
                    continue
                if target == package or target.startswith(package + "."):
                    edges.append(Edge(me, target, rel, node.lineno, lazy, typing_only))
        for line, expr, name in v.attrs:
            if (expr, name) not in PRIVATE_ALLOWED:
                violations.append(Violation(rel, line, "private-attr", f"accesses private attribute {expr}.{name}"))
        if rel != f"{package}/config.py":
            for line, what in v.environ:
                violations.append(
                    Violation(
                        rel,
                        line,
                        "environ",
                        f"uses {what}; only {ENVIRON_OWNER} reads the environment (take a Settings instead)",
                    )
                )
    violations += _direction(edges)
    violations += _cycles(edges)
    return sorted(set(violations))


def _targets(
    node: ast.AST, me: str, is_pkg: bool, modules: Mapping[str, object]
) -> Iterable[tuple[str | None, str, str, str | None]]:
    """(imported module or None, the module named in the statement, the statement as written,
    the private part or None)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            private = next((p for p in alias.name.split(".") if is_private(p)), None)
            yield alias.name, alias.name, f"import {alias.name}", private
        return
    assert isinstance(node, ast.ImportFrom)
    base = _resolve_base(me, is_pkg, node.level, node.module)
    written = "." * node.level + (node.module or "")
    if base is None:
        return
    base_private = next((p for p in base.split(".") if is_private(p)), None)
    everything = f"from {written} import {', '.join(a.name for a in node.names)}"
    for alias in node.names:
        # a private module is reported once per statement, a private name once per name
        shown = everything if base_private else f"from {written} import {alias.name}"
        private = base_private or (alias.name if is_private(alias.name) else None)
        sub = f"{base}.{alias.name}"
        yield (sub if sub in modules else base), base, shown, private


def _direction(edges: Iterable[Edge]) -> list[Violation]:
    out = []
    for e in edges:
        src, dst = part_of(e.source), part_of(e.target)
        if src == dst and e.target != PACKAGE:
            continue
        shown = dst or f"the root face {PACKAGE}"
        note = " (typing-only)" if e.typing_only else ""
        if src in ALLOWED_PARTS and dst not in ALLOWED_PARTS[src]:
            others = sorted(ALLOWED_PARTS[src] - {src})
            allowed = f"only {', '.join(others)}" if others else "nothing"
            out.append(
                Violation(
                    e.path,
                    e.line,
                    "direction",
                    f"{PACKAGE}.{src} imports {e.target}{note}: {src} may import {allowed} of {PACKAGE}",
                )
            )
        elif src in FORBIDDEN_PARTS and dst in FORBIDDEN_PARTS[src]:
            out.append(
                Violation(
                    e.path,
                    e.line,
                    "direction",
                    f"{PACKAGE}.{src} imports {e.target}{note}: {src} must not import {shown}",
                )
            )
        elif src in LAZY_ONLY and dst in LAZY_ONLY[src] and not e.lazy:
            out.append(
                Violation(
                    e.path,
                    e.line,
                    "direction",
                    f"{PACKAGE}.{src} imports {e.target} at module level{note}: "
                    f"{src} may import {dst} only inside a function (lazily)",
                )
            )
    return out


def _cycles(edges: Iterable[Edge]) -> list[Violation]:
    """One violation per strongly connected component of more than one module, showing one
    concrete cycle with the file:line of each import on it."""
    graph: dict[str, dict[str, Edge]] = defaultdict(dict)
    for e in edges:
        graph[e.source].setdefault(e.target, e)
    out = []
    for comp in _sccs(graph):
        if len(comp) < 2:
            continue
        start = min(comp)
        path = _cycle_through(graph, start, comp)
        hops = []
        for a, b in zip(path, path[1:]):
            e = graph[a][b]
            note = ", lazy" if e.lazy else ""
            note += ", typing-only" if e.typing_only else ""
            hops.append(f"{a} -> {b} ({e.path}:{e.line}{note})")
        first = graph[path[0]][path[1]]
        out.append(
            Violation(
                first.path,
                first.line,
                "cycle",
                f"import cycle among {len(comp)} modules {sorted(comp)}: " + "; ".join(hops),
            )
        )
    return out


def _sccs(graph: Mapping[str, Mapping[str, Edge]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    nodes = sorted(set(graph) | {t for d in graph.values() for t in d})

    def strong(v: str) -> None:  # recursive Tarjan; the tree is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            comps.append(comp)

    for v in nodes:
        if v not in index:
            strong(v)
    return comps


def _cycle_through(graph: Mapping[str, Mapping[str, Edge]], start: str, comp: set[str]) -> list[str]:
    """Shortest path start -> ... -> start inside comp (breadth first)."""
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, start]
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


# --------------------------------------------------------------------------- the real tree
def tree_sources() -> dict[str, str]:
    return {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(PACKAGE_DIR.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def violations() -> list[Violation]:
    return check_sources(tree_sources())


def _report(found: list[Violation]) -> str:
    return f"{len(found)} house-rule violation(s):\n" + "\n".join(str(v) for v in found)


def test_the_tree_is_found():
    sources = tree_sources()
    assert f"{PACKAGE}/__init__.py" in sources and f"{PACKAGE}/config.py" in sources
    assert any(p.startswith(f"{PACKAGE}/analysis/") for p in sources)


@pytest.mark.parametrize("rule", ["syntax", "cycle", "direction", "private-import", "private-attr", "environ"])
def test_house_rule(violations, rule):
    found = [v for v in violations if v.rule == rule]
    assert not found, _report(found)


def test_analysis_follows_every_house_rule(violations):
    found = [
        v
        for v in violations
        if v.path.startswith(f"{PACKAGE}/analysis/") or (v.rule == "cycle" and f"'{PACKAGE}.analysis" in v.message)
    ]
    assert not found, _report(found)


# --------------------------------------------------------------------------- self-tests
def _rules(sources: dict[str, str]) -> list[tuple[str, str, int]]:
    return [(v.rule, v.path, v.line) for v in check_sources(sources)]


def test_checker_finds_a_cycle_through_a_function_level_import():
    found = check_sources(
        {
            "actstore/__init__.py": "",
            "actstore/service/__init__.py": "",
            "actstore/service/a.py": "from actstore.service import b\n",
            "actstore/service/b.py": "def f():\n    from . import a\n    return a\n",
        }
    )
    cycles = [v for v in found if v.rule == "cycle"]
    assert len(cycles) == 1, found
    assert "actstore.service.a -> actstore.service.b (actstore/service/a.py:1)" in cycles[0].message
    assert "actstore.service.b -> actstore.service.a (actstore/service/b.py:2, lazy)" in cycles[0].message


def test_checker_face_re_exports_are_not_cycles_but_importing_from_own_face_is():
    base = {
        "actstore/__init__.py": "from .store import Store\n",
        "actstore/store/__init__.py": "from .store import Store\nfrom .knn import Knn\n",
        "actstore/store/knn.py": "from actstore.store.tables import Tables\nclass Knn: pass\n",
        "actstore/store/tables.py": "class Tables: pass\n",
        "actstore/store/store.py": "from . import knn, tables\nfrom .knn import Knn\nclass Store: pass\n",
    }
    assert check_sources(base) == []
    bad = {**base, "actstore/store/tables.py": "from actstore.store import Store\nclass Tables: pass\n"}
    cycles = [v for v in check_sources(bad) if v.rule == "cycle"]
    assert len(cycles) == 1 and "actstore.store -> actstore.store.knn" in cycles[0].message
    assert "actstore.store.tables -> actstore.store (actstore/store/tables.py:1)" in cycles[0].message


def test_checker_resolves_relative_and_from_package_imports():
    found = _rules(
        {
            "actstore/__init__.py": "",
            "actstore/errors.py": "",
            "actstore/analysis/__init__.py": "from . import cka\n",
            "actstore/analysis/cka.py": "from ..errors import X\n",  # -> actstore.errors
            "actstore/analysis/knn.py": "from actstore import errors\n",  # a module: actstore.errors
            "actstore/store/__init__.py": "",
            "actstore/store/x.py": "from actstore import Store\n\ndef f():\n    import actstore.service.core\n",
            "actstore/service/__init__.py": "",
            "actstore/service/core.py": "import actstore.ingest.runner\n\ndef g():\n"
            "    from actstore.ingest import runner\n",
            "actstore/ingest/__init__.py": "",
            "actstore/ingest/runner.py": "",
        }
    )
    assert ("direction", "actstore/analysis/cka.py", 1) in found
    assert ("direction", "actstore/analysis/knn.py", 1) in found
    assert ("direction", "actstore/store/x.py", 1) in found  # the root face
    assert ("direction", "actstore/store/x.py", 4) in found  # function-level imports count
    assert ("direction", "actstore/service/core.py", 1) in found  # ingest at module level
    assert ("direction", "actstore/service/core.py", 4) not in found  # ingest lazily is fine
    assert ("direction", "actstore/analysis/__init__.py", 1) not in found


def test_checker_finds_private_imports_and_attributes():
    found = _rules(
        {
            "actstore/__init__.py": "",
            "actstore/analysis/__init__.py": "",
            "actstore/analysis/_validate.py": "def check(): pass\n",
            "actstore/analysis/a.py": "from . import _validate as V\n",
            "actstore/analysis/b.py": "from ._validate import check\n",
            "actstore/analysis/c.py": "from .a import _helper, ok\n",
            "actstore/analysis/d.py": "import actstore.analysis._validate\n",
            "actstore/store/__init__.py": "",
            "actstore/store/e.py": (
                "from __future__ import annotations\n"
                "class A:\n"
                "    def f(self, other, store):\n"
                "        self._x = 1\n"
                "        cls = type(self)\n"
                "        super()._g()\n"
                "        y = other._x\n"
                "        z = store.tables._table('t')\n"
                "        w = getattr(store, '_cache', None)\n"
                "        return self.__class__, type(self)._y, y, z, w\n"
            ),
        }
    )
    for path, line in (("a.py", 1), ("b.py", 1), ("c.py", 1), ("d.py", 1)):
        assert ("private-import", f"actstore/analysis/{path}", line) in found, found
    assert [(r, ln) for r, p, ln in found if p == "actstore/store/e.py"] == [
        ("private-attr", 7),
        ("private-attr", 8),
        ("private-attr", 9),
    ]


def test_checker_finds_environment_reads_outside_config():
    src = "import os\nimport os as o\nfrom os import getenv\na = os.environ.get('X')\nb = o.getenv('Y')\n"
    found = _rules({"actstore/__init__.py": "", "actstore/config.py": src, "actstore/cli/x.py": src})
    assert [ln for r, p, ln in found if p == "actstore/cli/x.py" and r == "environ"] == [3, 4, 5]
    assert not [v for v in found if v[1] == "actstore/config.py"]


def test_checker_reports_unparsable_files():
    assert _rules({"actstore/__init__.py": "", "actstore/x.py": "def (:\n"}) == [("syntax", "actstore/x.py", 1)]

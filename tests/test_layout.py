"""The library's layout: rooms with one job each.

- No module of ``brainomni/`` over 400 lines unless its module docstring states why (a line
  starting ``Size:``).
- No import cycles among ``brainomni`` modules: the graph of module-level imports (absolute
  and relative; ``from pkg import name`` counts as importing ``pkg.name`` when that is a
  module, else ``pkg``; importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, except
  the importer's own parents). Imports inside functions run at call time, when every module
  is initialised, and are not counted; ``if TYPE_CHECKING:`` blocks never run.

Both are read from the source with :mod:`ast` (nothing is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "brainomni"
MAX_LINES = 400


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (p, is_pkg)
    return mods


MODULES = _modules()


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is a brainomni module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _module_level_imports(tree: ast.Module):
    """Import nodes that run when the module is imported (not in functions or classes'
    methods, not under ``if TYPE_CHECKING:``)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in MODULES.items():
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(t for a in node.names if (t := _known(a.name)))
                continue
            if node.level:  # relative: from the importer's package, up level - 1
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for a in node.names:
                t = _known(f"{origin}.{a.name}") or _known(origin)
                if t:
                    targets.add(t)
        # importing a.b.c runs a and a.b first (not the importer's own parents: they are
        # running already, importing this module)
        own = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
        for t in list(targets):
            parts = t.split(".")
            targets.update(p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in MODULES)
        graph[mod] = targets - own - {mod}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component of size > 1."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small (a few hundred modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:  # a shortest way back to the start, within the component
        start = min(comp)
        prev: dict[str, str] = {}
        frontier, seen, found = [start], {start}, None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if found:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(
            [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, found, start]
        )
    return cycles


def test_the_cycle_finder_names_a_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(g) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_relative_and_package_imports() -> None:
    g = import_graph()
    # `from ..errors import ...` in brainomni/clean/recording.py
    assert "brainomni.errors" in g["brainomni.clean.recording"]
    # `from ..pipeline import Stage, ...` in brainomni/pack/run.py: names, not modules, so
    # the package (run before its submodules)
    assert "brainomni.pipeline" in g["brainomni.pack.run"]
    # `from ..io import commit` in brainomni/stores/recording.py: a submodule
    assert "brainomni.io.commit" in g["brainomni.stores.recording"]
    # `from .inspect import PreprocessResult` inside brainomni/clean/__init__.py
    assert "brainomni.clean.inspect" in g["brainomni.clean"]
    # a submodule's own package is not an edge (it is being imported)
    assert "brainomni.clean" not in g["brainomni.clean.recording"]


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, (
        "import cycles among brainomni modules (module-level imports):\n"
        + "\n".join(" -> ".join(c) for c in cycles)
    )


def _size_reason(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path))) or ""
    return any(line.strip().startswith("Size:") for line in doc.splitlines())


# Modules another change of this wave owns (issue #13): they split them or state a reason.
# Remove an entry once its module is under the limit or says why (the test then insists).
ELSEWHERE: dict[str, str] = {}


def test_modules_are_small_or_say_why() -> None:
    long = {}
    for mod, (path, _) in MODULES.items():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and not _size_reason(path):
            long[mod] = n
    stale = sorted(m for m in ELSEWHERE if m not in long)
    assert not stale, f"{stale} are now short or say why: remove them from ELSEWHERE"
    offenders = {m: n for m, n in long.items() if m not in ELSEWHERE}
    assert not offenders, (
        f"modules over {MAX_LINES} lines: "
        + ", ".join(
            f"{MODULES[m][0].relative_to(ROOT)} ({n})" for m, n in sorted(offenders.items())
        )
        + ": split each into modules with one job, or state why in a 'Size:' line of its "
        "module docstring"
    )

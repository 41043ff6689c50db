"""The package's import graph has no cycles, at module level and counting imports inside functions too.

Every module of ``prefalign/`` is parsed (not imported) and each ``import`` / ``from ... import`` of another
prefalign module becomes an edge, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING``. Function-level imports count because a deferred import is how a cycle is usually hidden,
not removed: the two modules still need each other. ``from prefalign.a import b`` is an edge to
``prefalign.a.b`` when ``b`` is a submodule, else to ``prefalign.a``; importing ``prefalign.a.b`` also runs the
package ``prefalign.a``'s ``__init__``, so that is an edge too (except from inside the package itself, which
Python has already started importing).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = "prefalign"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``root / PACKAGE`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _packages_of(name: str) -> list[str]:
    """``a.b.c`` → ``[a, a.b]``: the packages Python initialises before ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The prefalign modules that importing ``name`` (at ``path``) may import, anywhere in its body."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in known else source)
    edges = set()
    for target in targets:
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        while target not in known and "." in target:  # `import prefalign.a.b as x` of an attribute-like name
            target = target.rsplit(".", 1)[0]
        edges.add(target)
        edges.update(p for p in _packages_of(target) if p != PACKAGE)
    # A module's own packages are being imported already when it runs: no edge to them, nor to itself.
    own = set(_packages_of(name)) | {name}
    return {t for t in edges if t not in own and t in known}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search, sorted for a stable answer)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_prefalign_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "prefalign.core.module" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in prefalign: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_and_submodule_imports(tmp_path):
    # A fake package with a cycle hidden in a function and spelled `from pkg import sub`: the test must catch it.
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from prefalign.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text("import prefalign.sub.a\n")
    graph = import_graph(tmp_path)
    assert graph["prefalign.sub.a"] == {"prefalign.sub.b"}
    assert graph["prefalign.sub.b"] == {"prefalign.sub.a"}
    assert graph["prefalign.c"] == {"prefalign.sub.a", "prefalign.sub"}
    assert find_cycle(graph) == ["prefalign.sub.a", "prefalign.sub.b", "prefalign.sub.a"]
    (pkg / "sub" / "b.py").write_text("X = 1\n")
    assert find_cycle(import_graph(tmp_path)) is None

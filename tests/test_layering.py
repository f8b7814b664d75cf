"""The package's layers import downwards only, and no module takes part in an import cycle.

Read from the source (every ``import`` and ``from … import`` of every module, at module level or
inside a function): a module of level n may import only modules of levels ≤ n, and within one level
the module graph has no cycle. The levels, from the bottom (DESIGN.md):

0. foundations: argument checks, memory, threads, process groups, files (writing, safe reading,
   locks), progress lines, data batches, forward hooks, and the kernels with their compiled modules;
1. models, data, networks, theory;
2. collapse metrics, training;
3. curvature operators;
4. spectral methods, alignment, distributed operators;
5. analysis (the DNC lens), figures, the peers' compatibility layer;
6. experiments (presets), benchmarks (cases, the quick table, comparisons);
7. the command line and the package's public namespace.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastdnc"

LEVELS = {
    0: [
        "_checks",
        "_text",
        "_memory",
        "_threads",
        "_malloc",
        "_comm",
        "io",
        "safe_read",
        "run_lock",
        "stages",
        "batches",
        "capture",
        "kernels",
        "_C",
        "_cuda",
    ],
    1: ["models", "data", "networks", "theory"],
    2: ["collapse", "training"],
    3: ["curvature"],
    4: ["spectral", "alignment", "distributed"],
    5: ["analysis", "plots", "compat"],
    6: ["experiments", "bench"],
    7: ["cli", "__main__", "fastdnc"],
}
LEVEL = {name: level for level, names in LEVELS.items() for name in names}
COMPILED = ("_C", "_cuda")  # the extension modules (no source file)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The fastdnc modules that module ``name`` imports (``from X import y`` counts as X.y when that
    is a module, else X)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block.test)
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no runtime dependency
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            if target.split(".")[0] == "fastdnc":
                subs = [
                    f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES or a.name in COMPILED
                ]
                out.update(subs or [target])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "fastdnc")
    return out - {name}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def level(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else "fastdnc"
    assert key in LEVEL, f"{name}: give fastdnc.{key} a level in tests/test_layering.py"
    return LEVEL[key]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_downwards(name):
    upward = sorted(t for t in imports(name) if level(t) > level(name))
    assert not upward, f"{name} (level {level(name)}) imports higher layers: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for name in MODULES:
        for target in imports(name):
            # a package's __init__ re-exporting its own modules is not a cycle of theirs
            if not (MODULES[name].name == "__init__.py" and target.startswith(name + ".")):
                graph[name].add(target)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_check_finds_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert level("fastdnc.curvature.gram") < level("fastdnc.spectral.lanczos")


def private_names(tree: ast.AST) -> set[str]:
    """The single-underscore names a module defines as methods, functions or ``self._x`` attributes."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
            out.add(node.attr)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def _is_self(v: ast.expr) -> bool:
    return (isinstance(v, ast.Name) and v.id in ("self", "cls")) or (
        isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"
    )


def foreign_private_uses(trees: dict[str, ast.AST]) -> list[str]:
    """``x._name`` on an object other than ``self``/``cls``/``super()`` where ``_name`` is defined by
    another fastdnc module only (third-party privates such as ``torch._foreach_add_`` are not ours)."""
    own = {name: private_names(tree) for name, tree in trees.items()}
    ours = set().union(*own.values())
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr in ours and node.attr not in own[name]):
                continue
            if not _is_self(node.value):
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_module_uses_another_modules_private_names():
    trees = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
    found = foreign_private_uses(trees)
    assert not found, f"private names used outside the module that defines them: {found}"


def test_the_check_finds_a_private_call_across_modules():
    a = ast.parse("class A:\n    def _route(self):\n        return self._route()\n")
    b = ast.parse("def f(op):\n    op._cache = None\n    return op._route()\n")
    assert foreign_private_uses({"a": a, "b": b}) == ["b:3 op._route"]
    assert foreign_private_uses({"a": a}) == []

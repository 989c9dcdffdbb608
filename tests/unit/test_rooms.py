"""The rooms' borders (docs/ARCHITECTURE.md), read from the source: which outside libraries each
package imports, and no import cycle among the modules at run time (imports under
``TYPE_CHECKING`` are for types only and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gateway"

# room -> libraries it must not import (anywhere in the module, functions included)
FORBIDDEN = {
    "containerfs": ("aiodocker", "aiohttp", "sqlalchemy"),
    "ssh": ("aiodocker", "aiohttp", "sqlalchemy"),
    "sftp": ("aiodocker", "aiohttp", "sqlalchemy"),
    "engines": ("sqlalchemy", "asyncssh", "prometheus_client"),
    "observe": ("sqlalchemy",),
    "cli": ("sqlalchemy",),
    "web": ("aiodocker", "sqlalchemy", "typer"),
    "admin": ("aiodocker", "aiohttp", "sqlalchemy", "typer", "rich", "asyncssh"),
    "policy.py": ("aiodocker", "aiohttp", "sqlalchemy", "asyncssh"),
    "routing.py": ("aiodocker", "aiohttp", "sqlalchemy", "asyncssh"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module imported, those imported at module level outside TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    every: set[str] = set()
    runtime: set[str] = set()

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            return [base] + [f"{base}.{a.name}" for a in node.names]
        return []

    def walk(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for sub in node.body:
                    for inner in ast.walk(sub):
                        every.update(names(inner))
                walk(node.orelse, top)
                continue
            found = names(node)
            every.update(found)
            if top:
                runtime.update(found)
            nested = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    walk([child], nested)
                elif isinstance(child, ast.excepthandler):
                    walk(child.body, nested)

    walk(tree.body, True)
    return every, runtime


MODULES = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_what_they_may(room: str) -> None:
    paths = [ROOT / room] if room.endswith(".py") else sorted((ROOT / room).rglob("*.py"))
    bad = []
    for path in paths:
        every, _ = imports(path)
        for name in every:
            if name.split(".")[0] in FORBIDDEN[room]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad


def test_no_import_cycle_at_run_time() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        _, runtime = imports(path)
        deps = set()
        for imp in runtime:
            while imp and imp not in MODULES:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    # A package imports its submodules' names through __init__; a cycle through a package's
    # own __init__ from its submodule is how Python packages work and is left out.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_the_check_sees_an_import() -> None:
    """The reader finds imports at module level, in functions and under TYPE_CHECKING."""
    every, runtime = imports(ROOT / "ssh" / "channel.py")
    assert "asyncssh" in runtime
    assert "gateway.ssh.server" in every and "gateway.ssh.server" not in runtime

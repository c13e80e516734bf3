"""The package's import graph: no circle, few imports inside functions, leaves kept leaves.

Imports inside functions count (they run too); `if TYPE_CHECKING:` blocks don't. An
import inside a function is allowed only where it is listed below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wallet_proxy"

# (importing module, imported module): why it can't be at the top.
FUNCTION_LEVEL = {
    ("wallet_proxy", "wallet_proxy.factory"): (
        "gunicorn's master imports the package for its serving settings, and must not "
        "load the app (prometheus_client's mode is chosen at its first import)"
    ),
    ("wallet_proxy.gunicorn_config", "wallet_proxy.triggers.running"): (
        "a worker hook: the master loads this file and must not load the app"
    ),
    ("wallet_proxy.gunicorn_config", "wallet_proxy.tags.running"): (
        "a worker hook: the master loads this file and must not load the app"
    ),
    ("wallet_proxy.gunicorn_config", "wallet_proxy.factory"): (
        "a worker hook: the master loads this file and must not load the app"
    ),
}
MAX_FUNCTION_LEVEL = 10
# Modules that must reach neither the logging of requests nor the metrics, however
# indirectly: every module raises errors, and metrics and logs build on the budget.
LEAVES = ("wallet_proxy.errors", "wallet_proxy.budget", "wallet_proxy.config")
OBSERVABILITY = {"wallet_proxy.logs", "wallet_proxy.request_log", "wallet_proxy.metrics"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module of the package, inside a function?) for each import in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        return [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                own = {t for t in targets(child) if t.split(".")[0] == "wallet_proxy"}
                found.extend((target, in_function) for target in sorted(own))
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    in_functions = []
    for name, path in known.items():
        for target, in_function in imports(name, path, known):
            edges[name].add(target)
            if in_function:
                in_functions.append((name, target))
    return edges, in_functions


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in edges:
        if node not in index:
            strong(node)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in edges.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def test_the_import_graph_has_no_circle():
    edges, _ = graph()
    assert circles(edges) == []


def test_imports_inside_functions_are_few_and_each_has_its_reason():
    _, in_functions = graph()
    assert len(in_functions) <= MAX_FUNCTION_LEVEL
    assert set(in_functions) <= set(FUNCTION_LEVEL), set(in_functions) - set(FUNCTION_LEVEL)


def test_errors_budget_and_settings_reach_no_logging_or_metrics():
    edges, _ = graph()
    for leaf in LEAVES:
        assert not reachable(edges, leaf) & OBSERVABILITY, leaf


def test_no_module_imports_the_package_root():
    """The root holds only the lazy create_app: the version comes from version.py."""
    edges, _ = graph()
    assert [name for name, targets in edges.items() if "wallet_proxy" in targets] == []


def test_the_checker_finds_a_circle_and_a_function_level_import(tmp_path):
    """The checks above can fail: a circle through a function-level import is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    module = tmp_path / "mod.py"
    module.write_text("def f():\n    from wallet_proxy import errors\n")
    assert imports("wallet_proxy.mod", module, {"wallet_proxy.errors": module}) == [
        ("wallet_proxy.errors", True)
    ]

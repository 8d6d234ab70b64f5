"""The package's layout rules, read from the source: no import cycles (lazy imports
included), `factory` never imports `jobs`, argparse only in the command line, and no
function over 80 lines but the one linear training loop."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "factory"
LONG_FUNCTIONS_ALLOWED = {("factory.train.loop", "train_loop")}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return modules


def _imported_names(tree: ast.Module) -> set[str]:
    """Every module name an import statement reaches, at any depth, except under
    `if TYPE_CHECKING:` (annotations only: nothing is imported when the code runs)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported_names(tree) & modules.keys() - {name} for name, tree in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return groups


def test_no_import_cycles_even_through_lazy_imports():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_factory_never_imports_jobs():
    offenders = [
        module
        for module, tree in _modules().items()
        if any(name == "jobs" or name.startswith("jobs.") for name in _imported_names(tree))
    ]
    assert offenders == []


def test_argparse_lives_only_in_the_command_line():
    users = [name for name, tree in _modules().items() if "argparse" in _imported_names(tree)]
    assert users == ["factory.cli_parser"]


def test_no_function_is_longer_than_80_lines():
    long = []
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (module, node.name) not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []


def test_only_the_run_config_and_the_plan_import_stage_modules():
    # stages/ holds stages only: nothing else borrows a helper from a stage module
    importers = {
        module
        for module, names in _import_graph().items()
        if not module.startswith("factory.stages")
        and any(n.startswith("factory.stages.") for n in names)
    }
    assert importers == {"factory.run_config", "factory.pipeline"}

"""The rooms of DESIGN.md, enforced: imports flow inward, and no package imports in a circle.

Walks the source of the installed packages (every ``import`` statement, also those inside
functions and ``if TYPE_CHECKING:``). Rules:

* ``states`` and ``reactors`` import only ``saline`` (and themselves);
* ``minion`` imports ``saline`` and ``states``; it never imports ``master`` or ``reactors``;
* ``master`` imports ``saline``, ``states`` and ``reactors``;
* the kernel ``saline`` imports none of the rooms, except its entry points (``saline.cli``,
  ``saline.lab``), and those only inside functions (lazily);
* no import cycle among modules (imports at module level, ``TYPE_CHECKING`` included).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("saline", "master", "minion", "states", "reactors")
ALLOWED = {
    "saline": {"saline"},
    "states": {"saline", "states"},
    "reactors": {"saline", "reactors"},
    "minion": {"saline", "states", "minion"},
    "master": {"saline", "states", "reactors", "master"},
}
ENTRY_POINTS = ("saline.cli", "saline.lab")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        top = id(node) not in nested
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, top
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            submodules = [f"{target}.{a.name}" for a in node.names]
            if all(name in MODULES for name in submodules):
                # ``from pkg import module`` uses pkg.module, not what pkg/__init__ defines
                for name in submodules:
                    yield name, node.lineno, top
            else:
                yield target, node.lineno, top


def _room(name: str) -> str | None:
    head = name.split(".")[0]
    return head if head in ROOMS else None


def _room_problems(imports: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    problems = []
    for module, targets in imports.items():
        room = _room(module)
        assert room is not None, module
        for target, line, top in targets:
            other = _room(target)
            if other is None or other in ALLOWED[room]:
                continue
            if room == "saline" and module.startswith(ENTRY_POINTS) and not top:
                continue  # an entry point loading a room lazily
            problems.append(f"{module}:{line}: {room} imports {target}")
    return problems


def test_every_import_respects_the_rooms() -> None:
    problems = _room_problems({m: list(_imports(m)) for m in MODULES})
    assert not problems, "\n".join(problems)


def test_the_room_check_names_each_forbidden_import() -> None:
    imports = {
        "minion.daemon": [("master.jobs", 3, True), ("states.engine", 4, True)],
        "reactors.engine": [("minion.modules", 7, False)],
        "saline.cli.run": [("master.daemon", 9, False)],  # lazy, in an entry point: allowed
        "saline.codec": [("master.jobs", 2, False)],  # lazy, but not an entry point
        "saline.lab.lab": [("minion.daemon", 5, True)],  # an entry point, but eagerly
    }
    assert _room_problems(imports) == [
        "minion.daemon:3: minion imports master.jobs",
        "reactors.engine:7: reactors imports minion.modules",
        "saline.codec:2: saline imports master.jobs",
        "saline.lab.lab:5: saline imports minion.daemon",
    ]


def _graph() -> dict[str, set[str]]:
    return {
        module: {t for t, _, top in _imports(module) if top and t in MODULES and t != module}
        for module in MODULES
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_in_a_circle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_the_master_daemon() -> None:
    importers = [m for m, targets in _graph().items() if "master.daemon" in targets]
    assert importers == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert _cycles(graph) == expected

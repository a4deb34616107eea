"""The package's arrows run one way (commands -> library; nets know no Lightning; data knows no model;
metrics are pure) and its files stay small: checked on the source, statically."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """medseg modules imported by ``path`` (``from medseg.x import y`` counts as medseg.x and medseg.x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name == "medseg" or name.startswith("medseg.")}


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def test_no_file_over_the_size_limit():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_import_cycle_at_import_time():
    graph = {m: _resolve(_imports(p, top_level_only=True)) - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep] if dep in stack else [module, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("medseg.nets", ("pytorch_lightning", "lightning", "medseg.modules", "medseg.data", "medseg.commands")),
        ("medseg.losses", ("pytorch_lightning", "lightning", "medseg.modules", "medseg.data", "medseg.commands")),
        ("medseg.metrics", ("pytorch_lightning", "lightning", "medseg.modules", "medseg.nets", "medseg.commands")),
        ("medseg.data", ("medseg.modules", "medseg.nets", "medseg.inference", "medseg.commands")),
        ("medseg.modules", ("medseg.commands", "medseg.inference")),
        ("medseg.inference", ("medseg.commands",)),
        ("medseg.reporting", ("medseg.commands",)),
        ("medseg.evaluation", ("medseg.commands",)),
    ],
)
def test_arrows_run_one_way(layer, forbidden):
    offenders = []
    for module, path in MODULES.items():
        if module == layer or module.startswith(f"{layer}."):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            offenders += [f"{module} imports {name}" for name in sorted(names) if name.startswith(forbidden)]
    assert not offenders, offenders

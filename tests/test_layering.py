"""Imports point down the layers of cnn_flax, never up, and never in a circle.

Every module of the package is read from its source (ast), so imports inside functions count as
much as those at the top. The order is declared once, in ``LAYERS``; a module belongs to the
layer of its longest matching prefix. Within a layer any import may run, as long as no circle
forms. Run ``python tests/test_layering.py`` to print the counts.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cnn_flax"

# The command-line layer: argparse entry points and the ``python -m`` shims that forward to them.
# No other module may import one of these (``test_library_never_imports_a_command``): a library
# function that a command owns belongs a layer down, where the command and the library both reach
# it. A module named ``__main__`` is a command wherever it lies.
COMMANDS: tuple[str, ...] = (
    "cnn_flax.cli",
    "cnn_flax.data.benchmark",
    # the old paths of the commands, forwarding to cli/
    "cnn_flax.train",
    "cnn_flax.evaluate",
    "cnn_flax.predict",
    "cnn_flax.benchmark",
)

# Lowest first: a module may import its own layer and those listed before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("cnn_flax.errors", "cnn_flax.trees")),
    ("the zoo", ("cnn_flax.models",)),
    ("data", ("cnn_flax.data",)),
    ("weights", ("cnn_flax.weights",)),
    (
        "measuring",
        tuple(
            f"cnn_flax.perf.{m}"
            for m in ("flops", "peaks", "rates", "timing", "compile_cache", "profile", "jax_steps")
        )
        + ("cnn_flax.perf.conv_ops",),
    ),
    ("recipes", ("cnn_flax.configs",)),
    ("training", ("cnn_flax.training",)),
    ("exporting", ("cnn_flax.export",)),
    ("benchmarks", ("cnn_flax.perf",)),
    ("the package's face", ("cnn_flax", "cnn_flax.convert")),  # re-export the public API
    ("commands", COMMANDS),
)


def modules(package: pathlib.Path = PACKAGE) -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, pathlib.Path]) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over every import statement, wherever it stands.

    ``from a import b`` counts as an import of ``a.b`` when that is a module, else of ``a``.
    """
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    out.setdefault(target, node.lineno)
        graph[name] = out
    return graph


def is_command(module: str) -> bool:
    return module.endswith(".__main__") or any(
        module == prefix or module.startswith(prefix + ".") for prefix in COMMANDS
    )


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of ``module``'s longest matching prefix; ``cnn_flax`` itself
    matches only the package's ``__init__``, so that a new folder must be given a layer."""
    if is_command(module):
        return len(LAYERS) - 1
    best, layer = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix != "cnn_flax"
            if (module == prefix or below) and len(prefix) > best:
                best, layer = len(prefix), index
    if layer is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}.")
    return layer


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


def upward(graph: dict[str, dict[str, int]]) -> list[str]:
    return [
        f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]} is above "
        f"{LAYERS[layer_of(module)][0]})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if layer_of(target) > layer_of(module)
    ]


def command_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports of a command module (``cnn_flax.cli``, a ``__main__``, a shim) from a module that
    is not one."""
    return [
        f"{module}:{line} imports the command module {target}"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if is_command(target) and not is_command(module)
    ]


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_cycles():
    assert cycles(imports(modules())) == []


def test_imports_point_down_the_layers():
    assert upward(imports(modules())) == []


def test_library_never_imports_a_command():
    assert command_imports(imports(modules())) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {
        "cnn_flax.models.a": {"cnn_flax.training.b": 1},
        "cnn_flax.training.b": {"cnn_flax.models.a": 2},
    }
    assert cycles(graph) == [["cnn_flax.models.a", "cnn_flax.training.b"]]
    assert upward(graph) == [
        "cnn_flax.models.a:1 imports cnn_flax.training.b (training is above the zoo)"
    ]


def test_the_checks_catch_a_library_module_importing_a_command():
    graph = {
        "cnn_flax.export.core": {"cnn_flax.cli.predict": 3, "cnn_flax.training.checkpoint": 4},
        "cnn_flax.weights.files": {"cnn_flax.models.__main__": 5},
        "cnn_flax.cli.train": {"cnn_flax.cli.dry_run": 6},
        "cnn_flax.train": {"cnn_flax.cli.train": 7},
    }
    assert command_imports(graph) == [
        "cnn_flax.export.core:3 imports the command module cnn_flax.cli.predict",
        "cnn_flax.weights.files:5 imports the command module cnn_flax.models.__main__",
    ]
    # ... and a module in no declared layer is refused rather than taken for the package's face.
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("cnn_flax.newfolder.x")


def _statements(mods: dict[str, pathlib.Path]) -> tuple[int, int]:
    """Import statements of the package's own modules: (at module top, anywhere else)."""
    top = nested = 0
    for path in mods.values():
        tree = ast.parse(path.read_text())
        at_top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                own = node.level > 0 or (node.module or "").startswith("cnn_flax")
            elif isinstance(node, ast.Import):
                own = any(alias.name.startswith("cnn_flax") for alias in node.names)
            else:
                own = False
            if own:
                top, nested = (top + 1, nested) if id(node) in at_top else (top, nested + 1)
    return top, nested


if __name__ == "__main__":
    mods = modules(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE)
    graph = imports(mods)
    pairs = sum(len(t) for t in graph.values())
    top, nested = _statements(mods)
    print(f"{len(graph)} modules, {pairs} internal imports (module pairs)")
    print(f"internal import statements: {top} at module top, {nested} inside functions")
    found = cycles(graph)
    print(f"import cycles: {len(found)}")
    for group in found:
        print(f"  {len(group)} modules: {' '.join(group)}")
    up = upward(graph)
    print(f"upward imports: {len(up)}")
    for line in up:
        print(f"  {line}")
    into_commands = command_imports(graph)
    print(f"library imports of command modules: {len(into_commands)}")
    for line in into_commands:
        print(f"  {line}")

"""Imports run one way: models <- steps <- (model_builder, eval_loop) <- trainer <- entry points.

Read from the source (ast), so the test sees imports inside functions too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import cnn_flax

PACKAGE = pathlib.Path(cnn_flax.__file__).parent
ENTRY_POINTS = {
    "cnn_flax.cli.train",
    "cnn_flax.cli.evaluate",
    "cnn_flax.cli.predict",
    "cnn_flax.cli.benchmark",
}


def _imports(module: str) -> set[str]:
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.startswith("cnn_flax")}


@pytest.mark.parametrize(
    "module",
    [
        "cnn_flax.training.steps",
        "cnn_flax.training.optim",
        "cnn_flax.training.metrics",
        "cnn_flax.training.intervals",
        "cnn_flax.training.run_plan",
        "cnn_flax.training.config_checks",
        "cnn_flax.training.model_builder",
        "cnn_flax.training.eval_loop",
        "cnn_flax.cli.dry_run",
        "cnn_flax.cli.evaluate",
    ],
)
def test_below_the_trainer_nothing_imports_it(module):
    above = {"cnn_flax.training.trainer"} | ENTRY_POINTS - {module}
    assert not _imports(module) & above, sorted(_imports(module) & above)


def test_trainer_imports_no_entry_point():
    assert not _imports("cnn_flax.training.trainer") & ENTRY_POINTS

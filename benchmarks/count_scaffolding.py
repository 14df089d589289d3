"""Lines of scaffolding per family module, at a commit or in the working tree.

    python benchmarks/count_scaffolding.py [COMMIT]

Two columns per family module:

* ``weights``: the source lines of every ``Weights(...)`` / ``torchvision_weights`` /
  ``timm_weights`` call (outermost) and of private helpers that only build ``Weights`` (the
  ``_tv`` functions), i.e. what stating its published weight sets costs;
* ``contract``: the lines declaring the contract's fields (``dtype``, ``conv``, ``norm``,
  ``activation``, ``bn_momentum``, ``bn_epsilon``, ``norm_epsilon``) in any class of the module,
  the family module and its blocks alike (what :class:`cnn_flax.models.layers.Contract` and its
  two subclasses declare once).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CALLS = {"Weights", "_tv", "torchvision_weights", "timm_weights"}
HELPERS = {"_tv"}
CONTRACT = {"dtype", "conv", "norm", "activation", "bn_momentum", "bn_epsilon", "norm_epsilon"}


def _source(path: str, commit: str | None) -> str:
    if commit is None:
        return pathlib.Path(path).read_text()
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def scaffolding_lines(source: str) -> int:
    tree = ast.parse(source)
    lines: set[int] = set()

    def visit(node: ast.AST, inside: bool) -> None:
        hit = False
        if isinstance(node, ast.FunctionDef) and node.name in HELPERS:
            hit = True
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            hit = name in CALLS
        if hit and not inside:
            lines.update(range(node.lineno, node.end_lineno + 1))
        for child in ast.iter_child_nodes(node):
            visit(child, inside or hit)

    visit(tree, False)
    return len(lines)


def contract_lines(source: str) -> int:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                target = getattr(statement, "target", None)
                if isinstance(statement, ast.AnnAssign) and getattr(target, "id", "") in CONTRACT:
                    lines.update(range(statement.lineno, statement.end_lineno + 1))
    return len(lines)


def main() -> None:
    commit = sys.argv[1] if len(sys.argv) > 1 else None
    files = sorted(pathlib.Path("cnn_flax/models").glob("*.py")) + [
        pathlib.Path("cnn_flax/models/swin/__init__.py"),
        pathlib.Path("cnn_flax/models/swin/model.py"),
    ]
    totals = {}
    print(f"{'family module':18s} {'weights':>7s} {'contract':>8s}")
    for path in files:
        if path.name in ("registry.py", "__main__.py", "layers.py"):
            continue
        try:
            source = _source(str(path), commit)
        except subprocess.CalledProcessError:
            continue
        counts = {"weights": scaffolding_lines(source), "contract": contract_lines(source)}
        if any(counts.values()):
            name = path.parent.name if path.parent.name == "swin" else path.stem
            if path.parent.name == "swin":
                name += "/" + path.stem
            print(f"{name:18s} {counts['weights']:7d} {counts['contract']:8d}")
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
    print(f"{'total':18s} {totals.get('weights', 0):7d} {totals.get('contract', 0):8d}")


if __name__ == "__main__":
    main()

"""Lines each family spends on stating its published weight sets, at a commit or in the tree.

    python tools/count_weights_scaffolding.py [COMMIT]

Counts, per family module, the source lines of every ``Weights(...)`` / ``torchvision_weights``
/ ``timm_weights`` call (outermost) and of private helpers that only build ``Weights`` (the
``_tv`` functions); the ``Weights`` count in the last column is what the registry holds in the
working tree (run with ``PYTHONPATH=.``), for scale.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CALLS = {"Weights", "_tv", "torchvision_weights", "timm_weights"}
HELPERS = {"_tv"}


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


def main() -> None:
    commit = sys.argv[1] if len(sys.argv) > 1 else None
    files = sorted(pathlib.Path("cnn_flax/models").glob("*.py")) + [
        pathlib.Path("cnn_flax/models/swin/__init__.py")
    ]
    total = 0
    for path in files:
        if path.name in ("registry.py", "__main__.py", "layers.py"):
            continue
        try:
            n = scaffolding_lines(_source(str(path), commit))
        except subprocess.CalledProcessError:
            continue
        if n:
            print(f"{path.stem if path.stem != '__init__' else path.parent.name:18s} {n:5d}")
            total += n
    print(f"{'total':18s} {total:5d}")


if __name__ == "__main__":
    main()

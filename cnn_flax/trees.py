"""The one comparison of two variable trees, for the errors that refuse weights of another shape.

Converting weights, starting a fine-tune and restoring a checkpoint each check that the arrays
they got are the arrays the model wants; they name the difference the same way.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"['params']['head']['kernel']": shape, ...}`` of every array (or shape struct)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}


def shape_differences(want: Any, got: Any, *, limit: int = 5) -> list[str]:
    """What ``got`` lacks, has in excess, or shapes otherwise than ``want`` (the first ``limit``
    of each), as phrases for one error line; empty when the trees match."""
    want, got = flat_shapes(want), flat_shapes(got)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    parts = []
    if missing:
        parts.append(f"missing {missing[:limit]}")
    if extra:
        parts.append(f"unexpected {extra[:limit]}")
    if wrong:
        shapes = ", ".join(f"{k}: {got[k]} vs {want[k]}" for k in wrong[:limit])
        parts.append(f"shape mismatch {shapes}")
    return parts

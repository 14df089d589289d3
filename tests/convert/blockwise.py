"""Block-by-block parity: each cnn_flax block run on torchvision's input to the same block.

End-to-end float32 logits cannot tell a bug from rounding in a chaotic network: a random
EfficientNet-B7 amplifies float32 rounding until torchvision's own float32 and float64 logits
differ by 30 (on logits of scale 45). Per block the computation is shallow and well conditioned,
so feeding every cnn_flax block the exact tensor that entered the corresponding torchvision block
("teacher forcing") checks each one at float32 precision, however the errors would compound.
Blocks are swapped in with a Flax method interceptor, so the models need no test hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import torch


def efficientnet_blocks(tv: torch.nn.Module) -> dict[str, str]:
    """cnn_flax top-level module names -> torchvision module paths, for EfficientNet-B0-B7 and
    EfficientNetV2."""
    last = len(tv.features) - 1
    blocks = {"stem": "features.0", "head_conv": f"features.{last}", "head": "classifier.1"}
    for s in range(1, last):
        for j in range(len(tv.features[s])):
            blocks[f"stage{s}_block{j}"] = f"features.{s}.{j}"
    return blocks


BLOCK_MAPS: dict[str, Callable[[torch.nn.Module], dict[str, str]]] = {
    "efficientnet": efficientnet_blocks,
    "efficientnet_v2": efficientnet_blocks,  # the same torchvision class and layout
}


def _nhwc(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def blockwise_errors(
    family: str, model: nn.Module, variables: dict, tv: torch.nn.Module, images: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Per block: (max abs error, max abs of torchvision's output), float32, eval mode.

    Every block of ``BLOCK_MAPS[family]`` must be reached, or the check would silently cover
    less than it claims.
    """
    if family not in BLOCK_MAPS:
        raise AssertionError(f"no block map for family {family!r}: add one to BLOCK_MAPS")
    blocks = BLOCK_MAPS[family](tv)
    recorded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def record(name: str):
        def hook(module, inputs, output):
            recorded[name] = (_nhwc(inputs[0].numpy()), _nhwc(output.numpy()))

        return hook

    handles = [
        tv.get_submodule(path).register_forward_hook(record(n)) for n, path in blocks.items()
    ]
    try:
        with torch.no_grad():
            tv(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    finally:
        for handle in handles:
            handle.remove()

    errors: dict[str, tuple[float, float]] = {}

    def teacher_force(next_fun, args, kwargs, context):
        path = context.module.scope.path if context.module.scope is not None else ()
        if context.method_name != "__call__" or len(path) != 1 or path[0] not in recorded:
            return next_fun(*args, **kwargs)
        block_input, expected = recorded[path[0]]
        out = np.asarray(next_fun(jnp.asarray(block_input), *args[1:], **kwargs))
        errors[path[0]] = (float(np.max(np.abs(out - expected))), float(np.max(np.abs(expected))))
        return out

    with nn.intercept_methods(teacher_force):
        model.apply(variables, images, train=False)
    missing = sorted(set(blocks) - set(errors))
    if missing:
        raise AssertionError(f"blocks never called in the cnn_flax model: {missing}")
    return errors

"""Small utilities shared by the tests."""

from __future__ import annotations

import csv
import pathlib

import jax
import jax.numpy as jnp

from cnn_flax.models import create_model, model_info

FACTS_DIR = pathlib.Path(__file__).resolve().parent / "facts"

# Smallest resolution each family's architecture accepts comfortably; tests use these to stay fast.
# Anything not listed runs at 32 pixels.
TEST_RESOLUTION = {
    "alexnet": 64,
    "googlenet": 32,
    "vgg": 32,
    "mobilenet": 32,
    "mobilenet_v3": 32,
    "efficientnet": 32,
    "vit_h_14": 28,  # two 14-pixel patches a side
    # Swin pads each map to whole windows (7; V2: 8), so 36 px costs what 56 px would: stage 1
    # is 9x9, padded to 14x14 (V2 16x16), the smallest that shifts and masks windows in both
    # versions (V2 does not shift at 32 px, whose 8x8 stage 1 is one window). Later stages are
    # one window each; tests/models/test_swin.py covers the shift in every stage.
    "swin": 36,
}

# Classifier size the paper's parameter counts assume, where it is not ImageNet's 1000 (keys: a
# family or model name). The CIFAR-10 ResNets' "0.27M" etc. include a 10-way head.
PAPER_NUM_CLASSES = {"resnet_cifar": 10}


def input_resolution(name: str) -> int:
    info = model_info(name)
    return TEST_RESOLUTION.get(name, TEST_RESOLUTION.get(info.family, 32))


def param_count(name: str, **overrides) -> int:
    """Parameter count of a registered model, from shapes alone (no memory allocated).

    Without a ``num_classes`` override the head has the paper's class count (PAPER_NUM_CLASSES).
    """
    family = model_info(name).family
    default_classes = PAPER_NUM_CLASSES.get(name, PAPER_NUM_CLASSES.get(family, 1000))
    overrides.setdefault("num_classes", default_classes)
    model = create_model(name, **overrides)
    res = model_info(name).resolution
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


def reference_rows() -> dict[str, dict[str, str]]:
    """``tests/facts/torchvision_models.csv`` (torchvision 0.29.1's figures) keyed by model name."""
    path = FACTS_DIR / "torchvision_models.csv"
    with path.open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def random_variables(model, x, *, seed: int = 0) -> dict:
    """Variables of ``model`` with random values, without compiling its initialisers.

    Compiling Flax's random initialisers costs more than the forward pass for deep nets on CPU
    (about a minute of CPU for an EfficientNet), so shape-level tests draw values with numpy from
    the shapes ``jax.eval_shape`` gives: kernels ~ N(0, 1/fan_in), BatchNorm at its identity.
    """
    import numpy as np

    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "var" in name or "scale" in name:
            return np.ones(leaf.shape, leaf.dtype)
        if "mean" in name or "bias" in name:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)

"""Small utilities shared by the tests."""

from __future__ import annotations

import csv
import pathlib

import jax
import jax.numpy as jnp

from cnn_flax.models import create_model, model_info

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"

# Smallest resolution each family's architecture accepts comfortably; tests use these to stay fast.
# Anything not listed runs at 32 pixels.
TEST_RESOLUTION = {
    "alexnet": 64,
    "googlenet": 32,
    "vgg": 32,
    "mobilenet": 32,
    "mobilenet_v3": 32,
    "efficientnet": 32,
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
    """``shared/reference/torchvision_models.csv`` keyed by model name (empty if absent)."""
    path = REFERENCE_DIR / "torchvision_models.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}

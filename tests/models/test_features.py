"""Feature maps (``features_only`` / ``return_features``) for every registered model.

From shapes alone (``jax.eval_shape``) over the registry: one NHWC map per level of
``feature_info``, with its channels, shallowest first; the parameters are the classifier's under
the same names, without the head; train mode runs. Numerically, on one small model: the maps and
logits of one pass are those of the classifier. Parity with torchvision's stage outputs is in
tests/convert/test_feature_parity.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution, random_variables, zoo_params

BATCH = 2


def _images(name: str) -> jax.ShapeDtypeStruct:
    res = input_resolution(name)
    return jax.ShapeDtypeStruct((BATCH, res, res, 3), jnp.float32)


# The classifier's parameters that a backbone does not build: its head, and the auxiliary
# classifiers of GoogLeNet and Inception v3.
HEADS = {"head", "aux", "aux1", "aux2"}


@pytest.mark.parametrize("name", zoo_params(list_models()))
def test_feature_maps_follow_feature_info(name):
    info = model_info(name)
    levels = info.feature_info
    backbone = create_model(name, features_only=True)

    def run(x):
        variables = create_model(name).init(jax.random.key(0), x, train=False)
        # The classifier's variables, less its heads, are all the backbone asks for (Flax
        # refuses a missing or misshapen parameter): same names, same shapes.
        variables = {
            kind: {k: v for k, v in tree.items() if k not in HEADS}
            for kind, tree in variables.items()
        }
        return backbone.apply(variables, x, train=False)

    maps = jax.eval_shape(run, _images(name))
    assert [m.ndim for m in maps] == [4] * len(levels)
    assert [m.shape[0] for m in maps] == [BATCH] * len(levels)
    assert [m.shape[-1] for m in maps] == [level.channels for level in levels]
    # Shallowest first: the reductions grow (ViT's blocks all share one), the maps shrink.
    reductions = [level.reduction for level in levels]
    assert reductions == sorted(reductions)
    assert set(reductions) <= {1, 2, 4, 8, 14, 16, 32}
    sizes = [m.shape[1] for m in maps]
    assert sizes == sorted(sizes, reverse=True)
    # Every level of a model with a torchvision counterpart names its node.
    assert all(bool(level.torchvision) == bool(info.torchvision) for level in levels)


def test_the_backbone_builds_no_head():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    for name in ("resnet18", "googlenet"):
        init = create_model(name, features_only=True).init
        params = jax.eval_shape(lambda x, init=init: init(jax.random.key(0), x, train=False), x)
        assert not set(params["params"]) & HEADS, name


def test_feature_info_is_traced_from_the_model():
    levels = model_info("resnet50").feature_info
    assert [(lv.module, lv.channels, lv.reduction) for lv in levels] == [
        ("stem", 64, 2),
        ("stage1_block2", 256, 4),
        ("stage2_block3", 512, 8),
        ("stage3_block5", 1024, 16),
        ("stage4_block2", 2048, 32),
    ]
    assert [lv.torchvision for lv in levels] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    # Overrides change the traced channels: the levels come from the model built.
    thin = create_model("resnet50", features_only=True, width_mult=0.25)
    assert [lv.channels for lv in thin.levels] == [16, 64, 128, 256, 512]
    vit = model_info("vit_b_16").feature_info
    assert len(vit) == 12 and {lv.reduction for lv in vit} == {16}


def test_one_pass_gives_the_classifier_logits_and_the_maps():
    name = "resnet18"
    x = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, 32, 32, 3)), jnp.float32)
    classifier = create_model(name, num_classes=5)
    variables = random_variables(classifier, x)
    logits, maps = create_model(name, num_classes=5, return_features=True).apply(
        variables, x, train=False
    )
    np.testing.assert_array_equal(logits, classifier.apply(variables, x, train=False))
    # The classifier's variables (head included) load into the backbone unchanged.
    deepest = create_model(name, features_only=True, out_indices=(-1,))
    (last,) = deepest.apply(variables, x, train=False)
    np.testing.assert_array_equal(last, maps[-1])
    # Train mode: the same maps and BatchNorm updates as the classifier's.
    (train_last,), updates = deepest.apply(variables, x, train=True, mutable=["batch_stats"])
    _, classifier_updates = classifier.apply(variables, x, train=True, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, updates, classifier_updates)
    assert train_last.shape == last.shape
    # The deepest map is what the classifier pools.
    pooled = create_model(name, num_classes=0).apply(variables, x, train=False)
    np.testing.assert_allclose(jnp.mean(last, axis=(1, 2)), pooled, rtol=1e-6)
    assert len(maps) == len(model_info(name).feature_info)


def test_vit_tokens_become_a_grid():
    """The class token is dropped and the patch tokens laid out on the grid of the input, which
    need not be square."""
    backbone = create_model("vit_b_16", features_only=True, out_indices=(0, -1))
    x = jax.ShapeDtypeStruct((1, 32, 48, 3), jnp.float32)
    maps = jax.eval_shape(
        lambda x: backbone.apply(backbone.init(jax.random.key(0), x, train=False), x, train=False),
        x,
    )
    assert [m.shape for m in maps] == [(1, 2, 3, 768)] * 2


def test_bad_feature_requests_are_one_line():
    with pytest.raises(ValueError, match=r"out_indices has 5, but the model has 5 feature levels"):
        create_model("resnet18", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="exclude each other"):
        create_model("resnet18", features_only=True, return_features=True)
    with pytest.raises(ValueError, match="pass features_only=True"):
        create_model("resnet18", out_indices=(1,))

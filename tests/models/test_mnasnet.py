"""MNASNet specifics the registry-wide tests do not cover: the depth rounding, the stack layout,
torchvision's BatchNorm momentum, and which recipe trained which weights."""

import jax
import jax.numpy as jnp
import pytest

from cnn_flax import configs
from cnn_flax.models import create_model, layers, model_info
from cnn_flax.models.mnasnet import B1_STACKS, DEPTHS

ALPHAS = {"mnasnet0_5": 0.5, "mnasnet0_75": 0.75, "mnasnet1_0": 1.0, "mnasnet1_3": 1.3}


def _params(name: str) -> dict:
    model = create_model(name)
    x = jnp.zeros((1, 32, 32, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]


@pytest.mark.torch
def test_depth_rounding_is_torchvisions():
    mnasnet = pytest.importorskip("torchvision.models.mnasnet")
    for value in [v / 4 for v in range(1, 2000)]:
        assert layers.make_divisible(value, 8) == mnasnet._round_to_multiple_of(value, 8, 0.9)
    for alpha in (*ALPHAS.values(), 0.35, 1.4, 2.0):
        ours = [layers.make_divisible(d * alpha, 8) for d in DEPTHS]
        assert ours == mnasnet._get_depths(alpha), alpha


@pytest.mark.parametrize("name", sorted(ALPHAS))
def test_stack_widths_and_residuals(name):
    params = _params(name)
    depths = [layers.make_divisible(d * ALPHAS[name], 8) for d in DEPTHS]
    assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, depths[0])
    assert "expand" not in params["separable"]  # depthwise-separable, no expansion
    assert params["separable"]["project"]["conv"]["kernel"].shape == (1, 1, depths[0], depths[1])
    width = depths[1]
    for s, (spec, out) in enumerate(zip(B1_STACKS, depths[2:], strict=True), start=1):
        blocks = sorted(k for k in params if k.startswith(f"stack{s}_"))
        assert len(blocks) == spec.repeats
        first = params[f"stack{s}_block0"]
        assert first["expand"]["conv"]["kernel"].shape == (1, 1, width, width * spec.expand_ratio)
        k = spec.kernel_size
        assert first["depthwise"]["conv"]["kernel"].shape == (k, k, 1, width * spec.expand_ratio)
        width = out
    assert params["head_conv"]["conv"]["kernel"].shape == (1, 1, depths[-1], 1280)


@pytest.mark.torch
def test_batch_norm_momentum_is_torchvisions():
    mnasnet = pytest.importorskip("torchvision.models.mnasnet")
    assert create_model("mnasnet1_0").bn_momentum == pytest.approx(1 - mnasnet._BN_MOMENTUM)


def test_recipes_follow_the_weights():
    # 0.75 and 1.3: torchvision's new recipe trained their weights (eval resize 232); 0.5 and
    # 1.0 follow the paper (their weights came from an SGD recipe, see the family's recipe).
    for name in ("mnasnet0_75", "mnasnet1_3"):
        config = configs.get_config(name)
        assert (config.optimizer.name, config.data.image_size) == ("sgd", 176)
        assert (config.data.eval_crop_size, config.data.eval_resize_size) == (224, 232)
        assert model_info(name).transform.resize == 232
    for name in ("mnasnet0_5", "mnasnet1_0"):
        config = configs.get_config(name)
        assert (config.optimizer.name, config.batch_size) == ("rmsprop", 4096)
        assert config.model_overrides.bn_momentum == 0.99
        assert config.target_top1 == model_info(name).weights[0].top1

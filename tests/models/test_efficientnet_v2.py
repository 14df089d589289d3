"""EfficientNetV2 specifics the registry-wide tests do not cover: the Fused-MBConv structure, and
what eval-mode parity cannot see (stochastic depth per block, dropout, BatchNorm settings),
against torchvision's own modules; the recipe against torchvision's command."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_flax import configs
from cnn_flax.models import create_model, layers, list_models

V2 = list_models("efficientnet_v2")


def _record(name: str, module_type: type) -> dict[tuple, nn.Module]:
    """Every ``module_type`` the model calls while initialising, by its scope path."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, module_type) and context.method_name == "__call__":
            seen[context.module.scope.path] = context.module
        return next_fun(*args, **kwargs)

    model = create_model(name, num_classes=10)
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
        )
    return seen


def _torchvision_on_meta(name: str):
    """torchvision's model built on the meta device: every module, no memory or init cost."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        return torchvision.models.get_model(name)


def test_every_torchvision_efficientnet_v2_is_registered():
    torchvision = pytest.importorskip("torchvision")
    assert sorted(V2) == sorted(torchvision.models.list_models(include="efficientnet_v2*"))


def test_fused_and_mbconv_stages_of_v2_s():
    model = create_model("efficientnet_v2_s", num_classes=10)
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )["params"]
    # Stage 1: expand ratio 1, a single 3x3 convolution 24 -> 24 with no projection.
    assert set(params["stage1_block0"]) == {"conv"}
    assert params["stage1_block0"]["conv"]["conv"]["kernel"].shape == (3, 3, 24, 24)
    # Stages 2-3: a full (not depthwise) 3x3 expansion, then a 1x1 projection; no SE.
    assert set(params["stage2_block0"]) == {"expand", "project"}
    assert params["stage2_block0"]["expand"]["conv"]["kernel"].shape == (3, 3, 24, 96)
    assert params["stage2_block0"]["project"]["conv"]["kernel"].shape == (1, 1, 96, 48)
    assert params["stage3_block1"]["expand"]["conv"]["kernel"].shape == (3, 3, 64, 256)
    # Stages 4-6: MBConv with a depthwise 3x3 and SE at a quarter of the block's input.
    block = params["stage4_block0"]
    assert set(block) == {"expand", "depthwise", "se", "project"}
    assert block["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 256)  # 64 * 4
    assert block["se"]["fc1"]["kernel"].shape == (1, 1, 256, 16)  # 64 // 4
    assert params["head_conv"]["conv"]["kernel"].shape == (1, 1, 256, 1280)


@pytest.mark.torch
@pytest.mark.parametrize("name", V2)
def test_stochastic_depth_per_block_matches_torchvision(name):
    """torchvision's rate 0.2 * b / B on the residual blocks; eval-mode parity never sees it."""
    tv = _torchvision_on_meta(name)
    expected = {}
    for s in range(1, len(tv.features) - 1):
        for j, block in enumerate(tv.features[s]):
            if block.use_res_connect:
                expected[(f"stage{s}_block{j}", "drop_path")] = block.stochastic_depth.p
    ours = {path: module.rate for path, module in _record(name, layers.DropPath).items()}
    assert ours == pytest.approx(expected)


@pytest.mark.torch
@pytest.mark.parametrize("name", V2)
def test_dropout_and_batch_norm_match_torchvision(name):
    torch = pytest.importorskip("torch")
    tv = _torchvision_on_meta(name)
    assert create_model(name).dropout == tv.classifier[0].p
    tv_norms = [m for m in tv.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ours = list(_record(name, nn.BatchNorm).values())
    assert len(ours) == len(tv_norms)
    # Flax momentum weighs the old statistics: 1 - torch's momentum.
    assert {(n.epsilon, round(1 - n.momentum, 6)) for n in ours} == {
        (m.eps, m.momentum) for m in tv_norms
    }


# torchvision's README command: (--train-crop-size, --val-crop-size = --val-resize-size).
README_SIZES = {"efficientnet_v2_s": (300, 384), "efficientnet_v2_m": (384, 480)}


@pytest.mark.parametrize(("name", "sizes"), README_SIZES.items())
def test_recipe_follows_torchvision_command(name, sizes):
    config = configs.get_config(name)
    train, evaluate = sizes
    assert config.data.image_size == train
    assert (config.data.eval_crop_size, config.data.eval_resize_size) == (evaluate, evaluate)
    # --batch-size 128 on 8 GPUs, --lr 0.5 (the config's rate is per 256 images).
    assert config.batch_size == 1024
    assert config.optimizer.lr * config.batch_size / 256 == pytest.approx(0.5)
    assert (config.num_epochs, config.optimizer.weight_decay) == (600.0, 2e-5)
    assert config.label_smoothing == 0.1
    aug = config.data.augment
    assert (aug.mixup_alpha, aug.cutmix_alpha, aug.random_erasing) == (0.2, 1.0, 0.1)
    assert aug.trivial_augment_wide and config.data.repeated_augmentation == 4
    assert config.ema_decay is not None

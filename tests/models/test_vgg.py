"""VGG: the stage spec, the single-kernel ablation variants and the classifier's flatten order.

The ``*_cifar`` variants have neither a torchvision counterpart nor a paper figure; their
parameter counts are checked here against arithmetic on the spec (test_cifar_param_counts).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from cnn_flax.models.vgg import VGG13, VGG16, VGGStage, single_kernel_stages
from tests.helpers import param_count

CIFAR_VARIANTS = [n for n in list_models("vgg") if not model_info(n).torchvision]


def init_shapes(name: str, *, res: int = 32, **overrides) -> dict:
    model = create_model(name, **overrides)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), train=False)
    )


def test_single_kernel_stages_keep_the_receptive_field():
    assert [s.kernel_size for s in single_kernel_stages(VGG13)] == [5] * 5
    assert [s.kernel_size for s in single_kernel_stages(VGG16)] == [5, 5, 7, 7, 7]
    for stack, single in zip(VGG16, single_kernel_stages(VGG16)):
        assert single.num_convs == 1 and single.features == stack.features
        assert single.receptive_field == stack.receptive_field


@pytest.mark.parametrize("num_convs, kernel_size", [(0, 3), (2, 4)])
def test_invalid_stage_is_refused(num_convs, kernel_size):
    with pytest.raises(ValueError, match="not a valid VGG stage"):
        VGGStage(64, num_convs, kernel_size)


def test_kernel_spec_reaches_the_parameters():
    params = init_shapes("vgg16_bn_cifar_5x5_7x7")["params"]
    kernels = {k: v["conv"]["kernel"].shape for k, v in params.items() if k.startswith("stage")}
    assert kernels == {
        "stage1_block0": (5, 5, 3, 64),
        "stage2_block0": (5, 5, 64, 128),
        "stage3_block0": (7, 7, 128, 256),
        "stage4_block0": (7, 7, 256, 512),
        "stage5_block0": (7, 7, 512, 512),
    }


def test_stage_spec_as_plain_tuples_from_a_config():
    """A config stores a spec as tuples (experiments/vgg_kernels' 8-px design: three stages);
    they build the same layers as VGGStage values, and a bad one is refused the same way."""
    as_tuples = init_shapes("vgg13_bn_cifar", res=8, stages=((64, 1, 5), (128, 2)))["params"]
    as_specs = init_shapes("vgg13_bn_cifar", res=8, stages=(VGGStage(64, 1, 5), VGGStage(128, 2)))
    assert jax.tree.map(lambda a: a.shape, as_tuples) == jax.tree.map(
        lambda a: a.shape, as_specs["params"]
    )
    assert as_tuples["stage1_block0"]["conv"]["kernel"].shape == (5, 5, 3, 64)
    with pytest.raises(ValueError, match="not a valid VGG stage"):
        init_shapes("vgg13_bn_cifar", res=8, stages=((64, 1, 4),))


@pytest.mark.parametrize("name, has_bn", [("vgg11", False), ("vgg11_bn", True)])
def test_batch_norm_option(name, has_bn):
    variables = init_shapes(name)
    assert ("batch_stats" in variables) == has_bn
    assert ("bn" in variables["params"]["stage1_block0"]) == has_bn
    assert variables["params"]["fc1"]["kernel"].shape == (512 * 7 * 7, 4096)


@pytest.mark.parametrize("name", CIFAR_VARIANTS)
def test_cifar_param_counts(name):
    stages = create_model(name).stages
    expected, in_ch = 0, 3
    for stage in stages:
        for _ in range(stage.num_convs):
            # kernel + conv bias + BN scale and bias
            expected += stage.kernel_size**2 * in_ch * stage.features + 3 * stage.features
            in_ch = stage.features
    expected += in_ch * 10 + 10  # global pool, then the linear head
    assert param_count(name, num_classes=10) == expected


def test_cifar_ablation_pairs():
    """The single-kernel variants differ from their 3x3 stacks in the convolutions only."""
    assert create_model("vgg13_bn_cifar_5x5").stages == single_kernel_stages(VGG13)
    assert create_model("vgg16_bn_cifar_5x5_7x7").stages == single_kernel_stages(VGG16)
    # Paper Sec. 2.3: one 5x5 has 25/18 the weights of two 3x3 (C in = C out, no first layer).
    stack = init_shapes("vgg13_bn_cifar")["params"]
    single = init_shapes("vgg13_bn_cifar_5x5")["params"]
    two = sum(stack[f"stage5_block{j}"]["conv"]["kernel"].size for j in (0, 1))
    assert single["stage5_block0"]["conv"]["kernel"].size * 18 == two * 25


@pytest.mark.torch
def test_classifier_flatten_order_at_64_pixels():
    """At 64 pixels the 2x2 feature map is spread unevenly over the 7x7 pool, so a wrong
    (C, H, W) -> (H, W, C) permutation in the converter shows up (at 32 pixels every 7x7 cell
    holds the same value and only the channel order is tested)."""
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    from cnn_flax.convert import from_torchvision
    from tests.convert.torch_reference import build_torchvision

    tv = build_torchvision("vgg11_bn", torchvision)
    variables = from_torchvision("vgg11_bn", tv.state_dict())
    images = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tv(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = create_model("vgg11_bn").apply(variables, images, train=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

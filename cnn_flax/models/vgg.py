"""VGG (Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition").

Five stages of 3x3 convolutions, each closed by a 2x2 max pool, then three fully connected layers.
The named variants are torchvision's: configurations A, B, D and E of the paper's Table 1 (vgg11,
vgg13, vgg16, vgg19) without the local response normalisation of A-LRN, each also with
BatchNorm after every convolution (``*_bn``, which the paper predates). As in torchvision, an
adaptive 7x7 average pool in front of the classifier lets any input of at least 32 pixels through,
and dropout follows each hidden fully connected layer.

The spec is a tuple of :class:`VGGStage` (width, convolutions, kernel size), so the paper's own
ablation (Sec. 2.3 and 4.1: a stack of 3x3 convolutions against one larger convolution with the
same receptive field) is a change of spec; :func:`single_kernel_stages` derives it. The
``*_cifar`` variants are small-input adaptations for that comparison on 32-pixel images; they
have no counterpart in the paper or torchvision (their parameter counts are checked against the
spec arithmetic in tests/models/test_vgg.py).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import EvalTransform, Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader, dense_kernel_from_nchw_flatten


@dataclasses.dataclass(frozen=True)
class VGGStage:
    """One VGG stage: ``num_convs`` same-width convolutions, then a 2x2 max pool.

    Attributes:
      features: output channels of every convolution of the stage.
      num_convs: convolutions in the stage.
      kernel_size: square kernel of every convolution (3 in all of the paper's main nets);
        padding is ``kernel_size // 2`` so the stage keeps its spatial size until the pool.
    """

    features: int
    num_convs: int
    kernel_size: int = 3

    def __post_init__(self):
        if self.num_convs < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"{self} is not a valid VGG stage: it needs num_convs >= 1 and an odd "
                f"kernel_size (for symmetric padding), e.g. VGGStage(64, 2, 3)."
            )

    @property
    def receptive_field(self) -> int:
        """Receptive field of the stage's stack: ``num_convs * (kernel_size - 1) + 1`` pixels."""
        return self.num_convs * (self.kernel_size - 1) + 1


def stage_specs(stages) -> tuple[VGGStage, ...]:
    """``stages`` as :class:`VGGStage` values; ``(features, num_convs[, kernel_size])`` tuples (as
    a config stores a spec) are converted and checked."""
    return tuple(s if isinstance(s, VGGStage) else VGGStage(*s) for s in stages)


def single_kernel_stages(stages: tuple[VGGStage, ...]) -> tuple[VGGStage, ...]:
    """Replaces each stage's stack by one convolution with the same receptive field.

    Two 3x3 convolutions become one 5x5, three become one 7x7: the "shallow net" comparison of
    Simonyan and Zisserman (Sec. 2.3 argues for the stack: more non-linearities and fewer
    weights, 2 * 3^2 C^2 = 18 C^2 against 5^2 C^2 = 25 C^2).
    """
    return tuple(VGGStage(s.features, 1, s.receptive_field) for s in stages)


def _stages(*widths_and_depths: tuple[int, int]) -> tuple[VGGStage, ...]:
    return tuple(VGGStage(features, num_convs) for features, num_convs in widths_and_depths)


# The paper's Table 1 configurations (torchvision's cfgs "A", "B", "D", "E").
VGG11 = _stages((64, 1), (128, 1), (256, 2), (512, 2), (512, 2))
VGG13 = _stages((64, 2), (128, 2), (256, 2), (512, 2), (512, 2))
VGG16 = _stages((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG19 = _stages((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

# Linear layers as torchvision initialises them: N(0, 0.01) weights, zero bias.
_dense_init = nn.initializers.normal(0.01)


class VGGBlock(nn.Module):
    """Convolution (with bias, as torchvision's), optional BatchNorm, activation.

    Attributes:
      features: output channels.
      kernel_size: square kernel size; padding is ``kernel_size // 2``.
      conv: bound convolution.
      norm: bound normalisation, or ``None`` for the original VGG without BatchNorm.
      activation: activation.
    """

    features: int
    kernel_size: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef | None
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.kernel_size // 2
        x = self.conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            padding=((pad, pad), (pad, pad)),
            name="conv",
        )(x)
        if self.norm is not None:
            x = self.norm(name="bn")(x)
        return self.activation(x)


class VGG(layers.BatchNormContract):
    """VGG: stages of convolutions and max pools, an adaptive average pool, a classifier.

    Parameters are named ``stage{i}_block{j}`` (stages from 1, as the paper's five conv groups;
    blocks from 0), each holding ``conv`` (and ``bn``), then ``fc1``, ``fc2`` and ``head``.

    Features (``num_classes=0``): the input of the classifier (the last hidden layer's outputs,
    or the pooled, flattened maps when ``hidden_features=()``).

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      stages: the convolutional spec, e.g. :data:`VGG16`; plain ``(features, num_convs,
        kernel_size)`` tuples are accepted too, so a config (``model_overrides.stages``, JSON)
        can name a spec (experiments/vgg_kernels runs the first three stages on 8-px digits).
      batch_norm: BatchNorm after every convolution (torchvision's ``*_bn`` variants).
      num_classes: classifier outputs; 0 returns the features.
      hidden_features: widths of the hidden fully connected layers; ``()`` classifies the pooled
        features directly.
      pool_size: output size of the adaptive average pool in front of the classifier (7 as
        torchvision; 1 is a global average pool).
      dropout: dropout after each hidden fully connected layer.
      norm: normalisation module to use when ``batch_norm`` is set.
    """

    stages: tuple[VGGStage, ...] = VGG16
    batch_norm: bool = False
    num_classes: int = 1000
    hidden_features: tuple[int, ...] = (4096, 4096)
    pool_size: int = 7
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv, norm, _ = layers.bind_contract(self, train=train, use_bias=True)
        norm = norm if self.batch_norm else None
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_dense_init
        )
        x = x.astype(self.dtype)
        for i, stage in enumerate(stage_specs(self.stages), start=1):
            for j in range(stage.num_convs):
                x = VGGBlock(
                    stage.features,
                    stage.kernel_size,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    name=f"stage{i}_block{j}",
                )(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = layers.adaptive_avg_pool(x, (self.pool_size, self.pool_size))
        # NHWC flatten (H, W, C order); the converter permutes torchvision's C, H, W order to it.
        x = x.reshape(x.shape[0], -1)
        for i, features in enumerate(self.hidden_features, start=1):
            x = self.activation(dense(features, name=f"fc{i}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, dtype=self.dtype, kernel_init=_dense_init)


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision VGG state dict -> cnn_flax variables.

    torchvision keeps the convolutional part in one ``features`` Sequential: per convolution a
    ``Conv2d`` (then a ``BatchNorm2d`` in the ``*_bn`` variants) and a ReLU, per stage a closing
    ``MaxPool2d``; the indices follow from the variant's stage spec.
    """
    from cnn_flax.models.registry import create_model

    model = create_model(name)
    params: dict = {}
    stats: dict = {}
    index = 0
    for i, stage in enumerate(model.stages, start=1):
        for j in range(stage.num_convs):
            block = f"stage{i}_block{j}"
            params[block] = {"conv": sd.conv(f"features.{index}", bias=True)}
            index += 1
            if model.batch_norm:
                params[block]["bn"], stats[block] = sd.batch_norm(f"features.{index}")
                stats[block] = {"bn": stats[block]}
                index += 1
            index += 1  # ReLU
        index += 1  # MaxPool2d
    # Linear(C * 7 * 7, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear.
    size = model.pool_size
    params["fc1"] = {
        "kernel": dense_kernel_from_nchw_flatten(
            sd("classifier.0.weight"), model.stages[-1].features, size, size
        ),
        "bias": sd("classifier.0.bias"),
    }
    params["fc2"] = sd.dense("classifier.3")
    params["head"] = sd.dense("classifier.6")
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


_REFERENCE = "Simonyan and Zisserman 2015"
_TV_SOURCE = "torchvision references/classification (AlexNet and VGG)"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stage{i}_block{j}``: the ReLU closing that convolution in its
    ``features`` (a convolution, a BatchNorm in ``*_bn``, a ReLU; a pool per stage)."""
    from cnn_flax.models.registry import model_info

    model = model_info(name).builder(num_classes=0)
    stage, block = (int(n) for n in re.fullmatch(r"stage(\d+)_block(\d+)", module).groups())
    per_conv = 3 if model.batch_norm else 2
    start = sum(s.num_convs * per_conv + 1 for s in model.stages[: stage - 1])
    return f"features.{start + (block + 1) * per_conv - 1}"


FAMILY = Family(
    name="vgg",
    reference=_REFERENCE,
    mappings={"torchvision": from_torchvision},
    # torchvision's recipe: the train.py defaults, with ``--lr 1e-2`` for VGG without
    # BatchNorm; weight decay 5e-4 as Simonyan and Zisserman 2015, sec. 3.1.
    recipe=Recipe(
        base="torchvision_step",
        overrides={"optimizer.lr": 0.01, "optimizer.weight_decay": 5e-4},
        source=f"{_TV_SOURCE}; weight decay 5e-4 of Simonyan and Zisserman 2015, sec. 3.1",
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(("stage*",), torchvision=_torchvision_node),
)

# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "vgg11": (
        torchvision_weights("IMAGENET1K_V1", "vgg11-8a719046.pth", 224, 256, "bilinear", 69.02,
                            88.628, 7.609, 132_863_336, 506.84),
    ),
    "vgg11_bn": (
        torchvision_weights("IMAGENET1K_V1", "vgg11_bn-6002323d.pth", 224, 256, "bilinear", 70.37,
                            89.81, 7.609, 132_868_840, 506.881),
    ),
    "vgg13": (
        torchvision_weights("IMAGENET1K_V1", "vgg13-19584684.pth", 224, 256, "bilinear", 69.928,
                            89.246, 11.308, 133_047_848, 507.545),
    ),
    "vgg13_bn": (
        torchvision_weights("IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", 224, 256, "bilinear", 71.586,
                            90.374, 11.308, 133_053_736, 507.59),
    ),
    "vgg16": (
        torchvision_weights("IMAGENET1K_V1", "vgg16-397923af.pth", 224, 256, "bilinear", 71.592,
                            90.382, 15.47, 138_357_544, 527.796),
        torchvision_weights("IMAGENET1K_FEATURES", "vgg16_features-amdegroot-88682ab5.pth", 224,
                            256, "bilinear", None, None, 15.47, 138_357_544, 527.802,
                            mean=(0.48235, 0.45882, 0.40784),
                            std=(0.00392156862745098, 0.00392156862745098, 0.00392156862745098)),
    ),
    "vgg16_bn": (
        torchvision_weights("IMAGENET1K_V1", "vgg16_bn-6c64b313.pth", 224, 256, "bilinear", 73.36,
                            91.516, 15.47, 138_365_992, 527.866),
    ),
    "vgg19": (
        torchvision_weights("IMAGENET1K_V1", "vgg19-dcbb9e9d.pth", 224, 256, "bilinear", 72.376,
                            90.876, 19.632, 143_667_240, 548.051),
    ),
    "vgg19_bn": (
        torchvision_weights("IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", 224, 256, "bilinear", 74.218,
                            91.842, 19.632, 143_678_248, 548.143),
    ),
}
# fmt: on


for _name, _stages_spec in (("vgg11", VGG11), ("vgg13", VGG13), ("vgg16", VGG16), ("vgg19", VGG19)):
    for _bn in (False, True):
        _full = f"{_name}_bn" if _bn else _name
        FAMILY.register(
            _full,
            functools.partial(VGG, stages=_stages_spec, batch_norm=_bn),
            reference=_REFERENCE
            + ("; BatchNorm (Ioffe and Szegedy 2015) as torchvision" if _bn else ""),
            torchvision=_full,
            weights=_PUBLISHED[_full],
            # The *_bn variants take the script's default lr 0.1.
            recipe=FAMILY.recipe.but(
                {"optimizer.lr": 0.1} if _bn else {}, target_top1=_PUBLISHED[_full][0].top1
            ),
        )

# 32-pixel adaptations for the kernel-size ablation (experiments/vgg_kernels): BatchNorm, a
# global average pool and one linear layer, as usual for VGG on CIFAR (a 7x7 pool of a 1x1 map
# and 4096-wide layers would only add ~120M parameters). The "_5x5" and "_5x5_7x7" variants swap
# every stage's stack of 3x3 convolutions for one convolution of the same receptive field
# (vgg13: one 5x5 per stage; vgg16: one 5x5 in stages 1-2, one 7x7 in stages 3-5). They train
# with the CIFAR-10 recipe of He et al. 2016 and VGG's weight decay 5e-4; no published accuracy.
_CIFAR = functools.partial(VGG, batch_norm=True, hidden_features=(), pool_size=1)
_CIFAR_REFERENCE = _REFERENCE + "; 32-pixel adaptation (BatchNorm, global pool, linear head)"
_CIFAR_RECIPE = Recipe(
    base="cifar10_resnet",
    overrides={"optimizer.weight_decay": 5e-4},
    source="He et al. 2016 sec. 4.2 (CIFAR-10) with VGG's weight decay 5e-4",
)
for _name, _stages_spec in (
    ("vgg13_bn_cifar", VGG13),
    ("vgg13_bn_cifar_5x5", single_kernel_stages(VGG13)),
    ("vgg16_bn_cifar", VGG16),
    ("vgg16_bn_cifar_5x5_7x7", single_kernel_stages(VGG16)),
):
    FAMILY.register(
        _name,
        functools.partial(_CIFAR, stages=_stages_spec),
        reference=_CIFAR_REFERENCE,
        resolution=32,
        transform=EvalTransform(32, 32),
        recipe=_CIFAR_RECIPE,
    )

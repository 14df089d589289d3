"""SqueezeNet (Iandola, Han, Moskewicz, Ashraf, Dally and Keutzer 2016, "SqueezeNet:
AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size").

The network is built of fire modules (Sec. 3.2): a 1x1 "squeeze" convolution to few channels,
then parallel 1x1 and 3x3 "expand" convolutions whose outputs are concatenated, each followed by
ReLU. Pooling comes late (strategy 3, Sec. 3.1) and there are no fully connected layers: a 1x1
convolution to the classes, ReLU and global average pooling classify (Sec. 3.3, after Lin et al.
2014, "Network in Network").

This is torchvision's ``squeezenet1_0`` (the paper's Table 1) and ``squeezenet1_1`` (the
SqueezeNet v1.1 of the authors' repository: a 3x3/2 stem with 64 channels and earlier pooling,
2.4x less computation at the same accuracy), number for number: biases on every convolution,
ceil-mode 3x3/2 max pools (Caffe's rounding, as ``googlenet.max_pool_ceil``) and dropout 0.5 in
front of the classifier.

The classifier maps onto the model contract as follows. torchvision's classifier is dropout, a
1x1 convolution, ReLU and global average pooling. The 1x1 convolution is this model's ``head``:
a Dense layer applied at every position of the last fire module's output, which has the same
parameters (kernel ``[512, classes]`` and bias) and computes the same thing, so weights and
fine-tuning work as for every other model. ReLU and pooling follow it. ``num_classes=0`` returns
the globally pooled output of the last fire module, the 512 features per image that the
classifier reads. Pooling comes after the ReLU in the classifier, so the logits are not the
``head`` applied to those pooled features: that would drop the ReLU at each position.

Parameter names: ``stem``, ``fire{k}`` (``squeeze``, ``expand1x1``, ``expand3x3``; numbered 2
to 9 as in the paper) and ``head``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.googlenet import max_pool_ceil
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader

# Fire modules as (squeeze, expand 1x1, expand 3x3) channels, and "pool" for a 3x3/2 max pool,
# after the stem and its pool.
V1_0 = (
    (16, 64, 64), (16, 64, 64), (32, 128, 128), "pool",
    (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256), "pool",
    (64, 256, 256),
)  # fmt: skip
V1_1 = (
    (16, 64, 64), (16, 64, 64), "pool",
    (32, 128, 128), (32, 128, 128), "pool",
    (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256),
)  # fmt: skip

# torchvision: Kaiming-uniform convolutions on fan_in (He et al. 2015), zero biases; the final
# (classifier) convolution is N(0, 0.01).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
_head_init = nn.initializers.normal(0.01)


class Fire(nn.Module):
    """Squeeze (1x1) -> ReLU -> [expand 1x1 -> ReLU, expand 3x3 -> ReLU], concatenated.

    Attributes:
      squeeze: channels of the squeeze layer (s_1x1).
      expand1x1: channels of the 1x1 expand branch (e_1x1).
      expand3x3: channels of the 3x3 expand branch (e_3x3).
      conv: bound convolution (with bias); activation: activation.
    """

    squeeze: int
    expand1x1: int
    expand3x3: int
    conv: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.activation(self.conv(self.squeeze, (1, 1), name="squeeze")(x))
        a = self.activation(self.conv(self.expand1x1, (1, 1), name="expand1x1")(x))
        b = self.conv(self.expand3x3, (3, 3), padding=((1, 1), (1, 1)), name="expand3x3")(x)
        return jnp.concatenate([a, self.activation(b)], axis=-1)


class SqueezeNet(layers.Contract):
    """SqueezeNet: a strided stem, fire modules with late max pools, a convolutional classifier.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.Contract`):
      num_classes: classifier outputs; 0 returns the pooled features of the last fire module.
      fires: the fire modules and pools after the stem (:data:`V1_0` or :data:`V1_1`).
      stem_features: channels of the stem convolution (96 in v1.0, 64 in v1.1).
      stem_kernel: kernel of the stride-2, unpadded stem convolution (7 in v1.0, 3 in v1.1).
      dropout: dropout in front of the classifier (0.5, the paper's Sec. 3.3).
    """

    num_classes: int = 1000
    fires: tuple[tuple[int, int, int] | str, ...] = V1_0
    stem_features: int = 96
    stem_kernel: int = 7
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv = layers.bind_conv(self.conv, dtype=self.dtype, use_bias=True, kernel_init=_conv_init)
        k = (self.stem_kernel, self.stem_kernel)
        x = x.astype(self.dtype)
        x = self.activation(conv(self.stem_features, k, strides=(2, 2), padding="VALID",
                                 name="stem")(x))  # fmt: skip
        x = max_pool_ceil(x, 3, stride=2)
        index = 2  # the paper numbers the fire modules fire2 ... fire9
        for fire in self.fires:
            if fire == "pool":
                x = max_pool_ceil(x, 3, stride=2)
                continue
            x = Fire(*fire, conv=conv, activation=self.activation, name=f"fire{index}")(x)
            index += 1
        if self.num_classes == 0:
            return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        # The 1x1 classifier convolution, as a Dense layer over the channels at every position.
        x = layers.classifier(x, self.num_classes, dtype=self.dtype, kernel_init=_head_init)
        return jnp.mean(self.activation(x), axis=(1, 2))


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision SqueezeNet state dict -> cnn_flax variables.

    ``features`` holds the stem at index 0 and the fire modules at the indices the ReLU and
    pools leave them, which differ between the versions, so fire modules are found in order;
    the classifier's 1x1 convolution (``classifier.1``) becomes the ``head`` Dense kernel.
    """
    del name
    params = {"stem": sd.conv("features.0", bias=True)}
    index = 2
    for i in range(1, 16):
        prefix = f"features.{i}"
        if not sd.has(f"{prefix}.squeeze.weight"):
            continue
        params[f"fire{index}"] = {
            part: sd.conv(f"{prefix}.{part}", bias=True)
            for part in ("squeeze", "expand1x1", "expand3x3")
        }
        index += 1
    kernel = sd.conv("classifier.1", bias=True)
    params["head"] = {"kernel": kernel["kernel"][0, 0], "bias": kernel["bias"]}
    return {"params": params}


_PAPER = "Iandola et al. 2016, SqueezeNet"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``fire{k}``: its index in ``features`` (a convolution, ReLU and
    pool, then the fire modules and pools of the variant's ``fires``)."""
    from cnn_flax.models.registry import model_info

    fires = model_info(name).builder(num_classes=0).fires
    places = [i for i, fire in enumerate(fires) if fire != "pool"]
    return f"features.{3 + places[int(module[len('fire') :]) - 2]}"


FAMILY = Family(
    name="squeezenet",
    reference=_PAPER + "; torchvision squeezenet",
    mappings={"torchvision": from_torchvision},
    # torchvision's weights were trained by the contributor of its SqueezeNet (pytorch/vision#49)
    # with the PyTorch ImageNet example: SGD momentum 0.9, lr 0.01 at batch 128 divided by 10
    # every 30 epochs, weight decay 2e-4, 100 epochs.
    recipe=Recipe(
        base="torchvision_step",
        overrides={
            "batch_size": 128,
            "optimizer.lr": 0.01 * 256 / 128,  # the base rate per 256 images: 0.01 at batch 128
            "optimizer.weight_decay": 2e-4,
            "num_epochs": 100.0,
            "schedule.boundaries_epochs": (30.0, 60.0, 90.0),
            "eval_every_steps": 20_000,  # ~2 epochs at batch 128
            "checkpoint_every_steps": 20_000,
        },
        source="pytorch/vision#49 (the torchvision weights): SGD momentum 0.9, lr 0.01 at batch "
        "128, /10 every 30 epochs, wd 2e-4, 100 epochs",
        target_source="torchvision IMAGENET1K_V1, trained with this recipe",
    ),
    features=FeatureNodes(("fire*",), torchvision=_torchvision_node),
)

# name: (reference, fire layout, stem channels, stem kernel).
_VARIANTS = {
    "squeezenet1_0": (_PAPER, V1_0, 96, 7),
    "squeezenet1_1": (
        _PAPER + " v1.1 (the authors' repository, github.com/forresti/SqueezeNet)",
        V1_1, 64, 3,
    ),
}  # fmt: skip
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "squeezenet1_0": (
        torchvision_weights("IMAGENET1K_V1", "squeezenet1_0-b66bff10.pth", 224, 256, "bilinear",
                            58.092, 80.42, 0.819, 1_248_424, 4.778),
    ),
    "squeezenet1_1": (
        torchvision_weights("IMAGENET1K_V1", "squeezenet1_1-b8a52dc0.pth", 224, 256, "bilinear",
                            58.178, 80.624, 0.349, 1_235_496, 4.729),
    ),
}
# fmt: on


for _name, (_ref, _fires, _stem, _kernel) in _VARIANTS.items():
    FAMILY.register(
        _name,
        functools.partial(SqueezeNet, fires=_fires, stem_features=_stem, stem_kernel=_kernel),
        reference=f"{_ref}; torchvision {_name}",
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=FAMILY.recipe.but(target_top1=_PUBLISHED[_name][0].top1),
    )

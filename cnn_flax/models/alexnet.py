"""AlexNet (Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks").

This is torchvision's single-tower AlexNet (after Krizhevsky 2014, "One weird trick for
parallelizing convolutional neural networks"), not the paper's two-GPU split: 64-192-384-256-256
filters, no local response normalisation, and an adaptive 6x6 average pool in front of the
classifier so any input of at least 63 pixels works. 61,100,840 parameters.

Everything about the family lives here: the module, its one variant, torchvision's published
figures for its weights, the torchvision weight mapping and the training recipe.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import (
    Family,
    Recipe,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader, dense_kernel_from_nchw_flatten

# (features, kernel, stride, padding, max-pool after)
_FEATURES = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


class AlexNet(layers.Contract):
    """AlexNet: five convolutions, three max pools and a three-layer classifier.

    Features (``num_classes=0``): the ``hidden_features`` outputs of ``fc2``, the input of the
    classifier, as torchvision users take ``classifier[:-1]``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.Contract`):
      num_classes: classifier outputs; 0 returns the features.
      dropout: dropout in front of the two hidden fully connected layers.
      hidden_features: width of the hidden fully connected layers.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    hidden_features: int = 4096

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv = layers.bind_conv(self.conv, dtype=self.dtype, use_bias=True)
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
        x = x.astype(self.dtype)
        for i, (features, kernel, stride, pad, pool) in enumerate(_FEATURES, start=1):
            x = conv(
                features,
                (kernel, kernel),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                name=f"conv{i}",
            )(x)
            x = layers.Tap(name=f"relu{i}")(self.activation(x))
            if pool:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = layers.adaptive_avg_pool(x, (6, 6))
        # NHWC flatten (H, W, C order); the converter permutes torchvision's C, H, W order to it.
        x = x.reshape(x.shape[0], -1)
        for i in (1, 2):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = self.activation(dense(self.hidden_features, name=f"fc{i}")(x))
        return layers.classifier(x, self.num_classes, dtype=self.dtype)


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision ``alexnet`` state dict -> cnn_flax variables."""
    del name
    # torchvision's ``features`` indices of the five convolutions.
    params = {
        f"conv{i}": sd.conv(f"features.{j}", bias=True)
        for i, j in enumerate((0, 3, 6, 8, 10), start=1)
    }
    params["fc1"] = {
        "kernel": dense_kernel_from_nchw_flatten(sd("classifier.1.weight"), 256, 6, 6),
        "bias": sd("classifier.1.bias"),
    }
    params["fc2"] = sd.dense("classifier.4")
    params["head"] = sd.dense("classifier.6")
    return {"params": params}


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``relu{i}``: the ReLU after its ``i``-th convolution."""
    del name
    return f"features.{(1, 4, 7, 9, 11)[int(module[len('relu') :]) - 1]}"


FAMILY = Family(
    name="alexnet",
    reference="Krizhevsky et al. 2012; torchvision single-tower variant (Krizhevsky 2014)",
    mappings={"torchvision": from_torchvision},
    # torchvision references/classification README ("AlexNet and VGG"): the train.py defaults
    # with ``--lr 1e-2``; bfloat16 compute here (torchvision trained in float32).
    recipe=Recipe(
        base="torchvision_step",
        overrides={"optimizer.lr": 0.01},
        source="torchvision references/classification (AlexNet and VGG): train.py --lr 1e-2",
        target_top1=56.522,
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(("relu*",), torchvision=_torchvision_node),
)

# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "alexnet": (
        torchvision_weights("IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 224, 256, "bilinear",
                            56.522, 79.066, 0.714, 61_100_840, 233.087),
    ),
}
# fmt: on


FAMILY.register(
    "alexnet",
    AlexNet,
    torchvision="alexnet",
    weights=_PUBLISHED["alexnet"],
)

"""AlexNet (Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks").

This is torchvision's single-tower AlexNet (after Krizhevsky 2014, "One weird trick for
parallelizing convolutional neural networks"), not the paper's two-GPU split: 64-192-384-256-256
filters, no local response normalisation, and an adaptive 6x6 average pool in front of the
classifier so any input of at least 63 pixels works. 61,100,840 parameters.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.registry import register

# (features, kernel, stride, padding, max-pool after)
_FEATURES = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
    """AlexNet: five convolutions, three max pools and a three-layer classifier.

    Attributes:
      num_classes: classifier outputs.
      dropout_rate: dropout in front of the two hidden fully connected layers.
      hidden_features: width of the hidden fully connected layers.
      dtype: computation dtype; parameters stay float32.
      conv: convolution module to use.
      act: activation.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.5
    hidden_features: int = 4096
    dtype: jnp.dtype = jnp.float32
    conv: layers.ModuleDef = nn.Conv
    act: layers.Activation = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
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
            x = self.act(x)
            if pool:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = layers.adaptive_avg_pool(x, (6, 6))
        # NHWC flatten (H, W, C order); the converter permutes torchvision's C, H, W order to it.
        x = x.reshape(x.shape[0], -1)
        for i in (1, 2):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = self.act(dense(self.hidden_features, name=f"fc{i}")(x))
        x = dense(self.num_classes, name="head")(x)
        return layers.to_float32_logits(x)


register(
    "alexnet",
    AlexNet,
    family="alexnet",
    reference="Krizhevsky et al. 2012; torchvision single-tower variant (Krizhevsky 2014)",
    torchvision="alexnet",
)

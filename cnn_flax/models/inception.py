"""Inception v3 (Szegedy, Vanhoucke, Ioffe, Shlens and Wojna 2016, "Rethinking the Inception
Architecture for Computer Vision").

The network of the paper's Table 1: a stem of unpadded 3x3 convolutions and max pools, three
Inception modules at 35x35 whose 5x5 convolutions are factorised into two 3x3 ones (Fig. 5,
Sec. 3.1), a grid-size reduction (Fig. 10, Sec. 5), four modules at 17x17 with n x n
convolutions factorised into 1 x n and n x 1 ones (Fig. 6, n = 7, Sec. 3.2), a second reduction,
and two modules at 8x8 with expanded filter banks (Fig. 7); global pooling, dropout and a linear
classifier. One auxiliary classifier on the last 17x17 module with BatchNorm in it (Sec. 4)
acts as a regulariser; its logits are sown into ``layers.AUX_COLLECTION`` in train mode (as
GoogLeNet's) and weigh into the loss with the recipe's ``aux_loss_weight``.

This is torchvision's ``inception_v3``, layer for layer, so its weights (ported from
TensorFlow) import exactly: every convolution is ``BasicConv2d`` (no bias, BatchNorm with
epsilon 0.001, ReLU), pooling branches average with padding counted, the auxiliary head is a 5x5/3
average pool, a 1x1 convolution to 128 channels, a 5x5 convolution to 768 and a linear layer, and
dropout before the classifier is 0.5.

``inception_v3`` is torchvision's default constructor (auxiliary head on, ``transform_input``
off, 27,161,264 parameters). The published IMAGENET1K_V1 weights keep the auxiliary head and
need ``transform_input=True``: they were trained on inputs scaled to [-1, 1].

Input size: the unpadded stem and reductions need at least 75 pixels; the auxiliary head needs
17x17 maps out of ``mixed6e`` (its 5x5/3 pool, then a 5x5 convolution), which only 299-pixel
inputs or larger give. So evaluation accepts 75 pixels and up, and training with the auxiliary
head (or ``init`` with it) needs 299.

Parameter names follow torchvision's (lower case): ``conv1a`` ... ``conv4a`` (stem),
``mixed5b`` ... ``mixed7c`` (branches named as torchvision's, e.g. ``branch3x3dbl_2``), ``aux``
(``conv0``, ``conv1``, ``fc``) and ``head``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.googlenet import _transform_input as transform_input
from cnn_flax.models.registry import (
    Family,
    Recipe,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader

# torchvision draws weights from N(0, 0.1) truncated to [-2, 2] (20 standard deviations, so in
# effect untruncated); the auxiliary head's 5x5 convolution uses 0.01 and its classifier 0.001.
_init = nn.initializers.normal(0.1)
_AUX_MAP = 17  # the auxiliary head's input size (17x17 at 299 pixels)


class BasicConv(nn.Module):
    """Convolution (no bias) -> BatchNorm -> activation, torchvision's ``BasicConv2d``.

    Attributes:
      features: output channels.
      kernel: (height, width) of the kernel; 1 x n and n x 1 for the factorised modules.
      conv: bound convolution; norm: bound BatchNorm; activation: activation.
      strides: square stride.
      padding: symmetric (height, width) padding.
    """

    features: int
    kernel: tuple[int, int]
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = self.conv(
            self.features,
            self.kernel,
            strides=(self.strides, self.strides),
            padding=((ph, ph), (pw, pw)),
            name="conv",
        )(x)
        return self.activation(self.norm(name="bn")(x))


def _avg_pool3(x: jax.Array) -> jax.Array:
    """3x3/1 average pool padded by 1, the padding counted (torch's ``count_include_pad``)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool3(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
    """35x35 module, the 5x5 convolution factorised into two 3x3 (Fig. 5).

    Attributes:
      pool_features: width of the pooling branch's projection.
      unit: :class:`BasicConv` with the bound conv, norm and activation.
    """

    pool_features: int
    unit: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u = self.unit
        b1 = u(64, (1, 1), name="branch1x1")(x)
        b5 = u(48, (1, 1), name="branch5x5_1")(x)
        b5 = u(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = u(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = u(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = u(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = u(self.pool_features, (1, 1), name="branch_pool")(_avg_pool3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 grid reduction: strided convolutions beside a max pool (Fig. 10)."""

    unit: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u = self.unit
        b3 = u(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = u(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = u(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = u(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool3(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convolutions factorised into 1x7 and 7x1 (Fig. 6).

    Attributes:
      channels_7x7: width inside the factorised branches.
      unit: :class:`BasicConv` with the bound conv, norm and activation.
    """

    channels_7x7: int
    unit: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u, c7 = self.unit, self.channels_7x7
        row, col = {"kernel": (1, 7), "padding": (0, 3)}, {"kernel": (7, 1), "padding": (3, 0)}
        b1 = u(192, (1, 1), name="branch1x1")(x)
        b7 = u(c7, (1, 1), name="branch7x7_1")(x)
        b7 = u(c7, **row, name="branch7x7_2")(b7)
        b7 = u(192, **col, name="branch7x7_3")(b7)
        bd = u(c7, (1, 1), name="branch7x7dbl_1")(x)
        for i, (width, shape) in enumerate(((c7, col), (c7, row), (c7, col), (192, row)), 2):
            bd = u(width, **shape, name=f"branch7x7dbl_{i}")(bd)
        bp = u(192, (1, 1), name="branch_pool")(_avg_pool3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 grid reduction."""

    unit: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u = self.unit
        b3 = u(192, (1, 1), name="branch3x3_1")(x)
        b3 = u(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = u(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = u(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = u(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = u(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool3(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks: 1x3 and 3x1 side by side (Fig. 7)."""

    unit: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u = self.unit

        def split(y: jax.Array, prefix: str) -> jax.Array:
            a = u(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(y)
            b = u(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(y)
            return jnp.concatenate([a, b], axis=-1)

        b1 = u(320, (1, 1), name="branch1x1")(x)
        b3 = split(u(384, (1, 1), name="branch3x3_1")(x), "branch3x3_2")
        bd = u(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = split(u(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd), "branch3x3dbl_3")
        bp = u(192, (1, 1), name="branch_pool")(_avg_pool3(x))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """The auxiliary classifier on the 17x17 maps (Sec. 4, Fig. 8), as torchvision's.

    Attributes:
      num_classes: outputs.
      unit: :class:`BasicConv` with the bound conv, norm and activation (``conv0``).
      conv1_unit: the same for ``conv1``, whose kernels torchvision draws from N(0, 0.01).
      dense: bound Dense.
    """

    num_classes: int
    unit: layers.ModuleDef
    conv1_unit: layers.ModuleDef
    dense: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if min(x.shape[1:3]) < _AUX_MAP:
            raise ValueError(
                f"Inception v3's auxiliary classifier needs {_AUX_MAP}x{_AUX_MAP} maps or larger "
                f"(299-pixel inputs); it got {x.shape[1]}x{x.shape[2]}. Feed 299-pixel images, "
                f"or build the model with aux_logits=False."
            )
        x = nn.avg_pool(x, (5, 5), strides=(3, 3))
        x = self.unit(128, (1, 1), name="conv0")(x)
        x = self.conv1_unit(768, (5, 5), name="conv1")(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.dense(self.num_classes, kernel_init=nn.initializers.normal(0.001),
                          name="fc")(x).astype(jnp.float32)  # fmt: skip


class InceptionV3(layers.BatchNormContract):
    """Inception v3: the Table 1 network with its auxiliary classifier.

    Returns:
      The logits, float32 ``[batch, num_classes]`` (features ``[batch, 2048]`` when
      ``num_classes=0``). In train mode the auxiliary logits go to ``layers.AUX_COLLECTION``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features (and builds no auxiliary head).
      aux_logits: build the auxiliary classifier (run in train mode only).
      transform_input: re-normalise ImageNet-normalised input to the [-1, 1] scaling the ported
        weights expect, as torchvision's option; set it for the published weights.
      dropout: dropout in front of the classifier.
      bn_epsilon: BatchNorm epsilon (0.001, torchvision's ``BasicConv2d``).
    """

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    dropout: float = 0.5
    bn_epsilon: float = layers.family_default(1e-3)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        conv, norm, _ = layers.bind_contract(self, train=train, kernel_init=_init)
        unit = functools.partial(BasicConv, conv=conv, norm=norm, activation=self.activation)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_init
        )
        conv1_unit = functools.partial(
            unit,
            conv=layers.bind_conv(
                self.conv, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01)
            ),
        )
        # The auxiliary head only runs in training, but its parameters must exist whatever mode
        # ``init`` is called in. A feature extractor (num_classes=0) has none.
        run_aux = self.aux_logits and self.num_classes > 0 and (train or self.is_initializing())

        x = x.astype(self.dtype)
        if self.transform_input:
            x = transform_input(x)
        x = unit(32, (3, 3), strides=2, name="conv1a")(x)
        x = unit(32, (3, 3), name="conv2a")(x)
        x = unit(64, (3, 3), padding=(1, 1), name="conv2b")(x)
        x = _max_pool3(x)
        x = unit(80, (1, 1), name="conv3b")(x)
        x = unit(192, (3, 3), name="conv4a")(x)
        x = _max_pool3(x)
        for name, pool_features in (("mixed5b", 32), ("mixed5c", 64), ("mixed5d", 64)):
            x = InceptionA(pool_features, unit, name=name)(x)
        x = InceptionB(unit, name="mixed6a")(x)
        for name, c7 in (("mixed6b", 128), ("mixed6c", 160), ("mixed6d", 160), ("mixed6e", 192)):
            x = InceptionC(c7, unit, name=name)(x)
        if run_aux:
            aux_out = InceptionAux(self.num_classes, unit, conv1_unit, dense, name="aux")(x)
            if train:
                self.sow(layers.AUX_COLLECTION, "aux_logits", aux_out)
        x = InceptionD(unit, name="mixed7a")(x)
        x = InceptionE(unit, name="mixed7b")(x)
        x = InceptionE(unit, name="mixed7c")(x)
        return layers.pooled_head(self, x, dropout=self.dropout, train=train, kernel_init=_init)


# torchvision's stem module names -> ours (its mixed blocks are ``Mixed_5b`` for ``mixed5b``).
_TV_STEM = {
    "Conv2d_1a_3x3": "conv1a",
    "Conv2d_2a_3x3": "conv2a",
    "Conv2d_2b_3x3": "conv2b",
    "Conv2d_3b_1x1": "conv3b",
    "Conv2d_4a_3x3": "conv4a",
}


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision Inception v3 state dict -> cnn_flax variables.

    The branches of each mixed block are those of the cnn_flax block, which carry torchvision's
    names (``Mixed_5b.branch5x5_1`` -> ``mixed5b/branch5x5_1``). The auxiliary head
    (``AuxLogits``) is optional: torchvision drops it after loading the published weights when
    asked for ``aux_logits=False``.
    """
    params: dict = {}
    stats: dict = {}
    ours_shapes = _param_shapes(name)

    def basic_conv(theirs: str) -> tuple[dict, dict]:
        return sd.conv_bn(f"{theirs}.conv", f"{theirs}.bn")

    for theirs, ours in _TV_STEM.items():
        params[ours], stats[ours] = basic_conv(theirs)
    for ours in (k for k in ours_shapes if k.startswith("mixed")):
        block = f"Mixed_{ours[len('mixed') :]}"
        params[ours], stats[ours] = {}, {}
        for branch in ours_shapes[ours]:
            params[ours][branch], stats[ours][branch] = basic_conv(f"{block}.{branch}")
    if sd.has("AuxLogits.fc.weight"):
        params["aux"], stats["aux"] = {}, {}
        for part in ("conv0", "conv1"):
            params["aux"][part], stats["aux"][part] = basic_conv(f"AuxLogits.{part}")
        params["aux"]["fc"] = sd.dense("AuxLogits.fc")
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


def _param_shapes(name: str) -> dict:
    """The parameter tree of model ``name`` from shapes alone: its branch names are
    torchvision's, so the modules say once which branches each block has."""
    from cnn_flax.models.registry import create_model, model_info

    model = create_model(name, aux_logits=False)
    res = model_info(name).resolution
    x = jnp.zeros((1, res, res, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]


def weight_overrides(name: str, variables: dict) -> dict:
    """``aux_logits`` is whether the converted weights have the auxiliary head.

    ``transform_input`` cannot be read off the weights; the published entry's overrides say it.
    """
    del name
    return {"aux_logits": "aux" in variables["params"]}


_PAPER = "Szegedy et al. 2016, Rethinking the Inception Architecture (Inception v3)"
AUX_LOSS_WEIGHT = 0.4
"""Weight of the auxiliary classifier's loss: the paper gives none; TensorFlow's reference
training code for these weights (tensorflow/models, research/inception) uses 0.4."""


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``conv*`` (:data:`_TV_STEM`) or ``mixed*`` (``Mixed_*``)."""
    del name
    if module.startswith("mixed"):
        return f"Mixed_{module[len('mixed') :]}"
    return next(theirs for theirs, ours in _TV_STEM.items() if ours == module)


FAMILY = Family(
    name="inception",
    reference=_PAPER + "; torchvision inception_v3",
    mappings={"torchvision": from_torchvision},
    weight_overrides=weight_overrides,
    # The paper's Sec. 8 ("Training Methodology"): 50 replicas with batch 32 each for 100
    # epochs, RMSProp with decay 0.9 and epsilon 1.0, lr 0.045 decayed by 0.94 every 2 epochs,
    # gradient clipping at 2.0, and evaluation on a running average of the parameters; label
    # smoothing 0.1 (Sec. 7). The replicas ran asynchronously, each applying lr 0.045 to its own
    # batch of 32; here the 50 batches form one synchronous batch of 1600 at that same rate
    # (no linear scaling). TensorFlow's RMSProp as the paper's code: epsilon inside the square
    # root, mean square started at 1, momentum 0.9; weight decay 4e-5 and the auxiliary loss
    # weight from the same reference code. torchvision ported the weights, so the target is
    # their top-1.
    recipe=Recipe(
        base="tf_tpu",
        overrides={
            "batch_size": 32 * 50,
            "num_epochs": 100.0,
            "optimizer.lr": 0.045,
            "optimizer.lr_scaling": "none",
            "optimizer.rmsprop_decay": 0.9,
            "optimizer.eps": 1.0,
            "optimizer.momentum": 0.9,
            "optimizer.tf_style_eps": True,
            "optimizer.rmsprop_initial_scale": 1.0,
            "optimizer.weight_decay": 4e-5,
            "schedule.name": "exponential",
            "schedule.warmup_epochs": 0.0,
            "schedule.decay_rate": 0.94,
            "schedule.decay_epochs": 2.0,
            "schedule.staircase": True,
            "clip_grad_norm": 2.0,
            "label_smoothing": 0.1,
            "aux_loss_weight": AUX_LOSS_WEIGHT,
            "eval_every_steps": 1600,  # ~2 epochs at batch 1600
            "checkpoint_every_steps": 1600,
        },
        source="Szegedy et al. 2016, sec. 7-8: RMSProp (decay 0.9, eps 1.0), lr 0.045 x0.94 "
        "every 2 epochs, clipping 2.0, label smoothing 0.1, batch 32 x 50 replicas, 100 epochs, "
        "parameter averaging; aux loss x0.4, wd 4e-5 (tensorflow/models inception)",
        target_source="torchvision IMAGENET1K_V1 (ported from TensorFlow; the paper's "
        "single-crop figure, Table 3, is on its own evaluation)",
    ),
    features=FeatureNodes(("conv*", "mixed*"), torchvision=_torchvision_node),
)
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "inception_v3": (
        torchvision_weights("IMAGENET1K_V1", "inception_v3_google-0cc3c7bd.pth", 299, 342,
                            "bilinear", 77.294, 93.45, 5.713, 27_161_264, 103.903,
                            # Ported from TensorFlow: they expect [-1, 1] inputs.
                            overrides={"transform_input": True}),
    ),
}
# fmt: on


FAMILY.register(
    "inception_v3",
    InceptionV3,
    resolution=299,
    torchvision="inception_v3",
    weights=_PUBLISHED["inception_v3"],
    recipe=FAMILY.recipe.but(target_top1=77.294),
)

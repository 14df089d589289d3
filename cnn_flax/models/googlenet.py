"""GoogLeNet, or Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions").

This is torchvision's GoogLeNet, layer for layer, so its weights import exactly:
- every convolution is torchvision's ``BasicConv2d``: convolution without bias, BatchNorm
  (epsilon 0.001) and ReLU. The paper predates BatchNorm; torchvision's weights are ported from a
  BatchNorm re-training.
- the third branch of each Inception module uses a 3x3 convolution where the paper (Fig. 2b,
  Table 1) has 5x5: a known torchvision bug (pytorch/vision#906) that its published weights
  depend on. ``branch3_kernel_size=5`` gives the paper's module.
- max pools use ceil mode (Caffe's rounding), and the pool in front of inception5a is 2x2/2
  where the paper's Table 1 has 3x3/2 (the output size is the same at 224 pixels).
- dropout 0.2 before the classifier (the paper uses 0.4) and 0.7 in the auxiliary heads.

Two auxiliary classifiers (Sec. 5), after inception4a and inception4d, feed the training loss
with weight :data:`AUX_LOSS_WEIGHT`. Like every cnn_flax model, GoogLeNet returns the logits in
every mode; in train mode with ``aux_logits=True`` the auxiliary classifiers sow their logits
into the ``"aux_logits"`` collection (``aux1_logits``, ``aux2_logits``), which a train step reads
by making that collection mutable (:func:`cnn_flax.models.layers.aux_outputs`).

``googlenet`` is torchvision's default constructor: auxiliary heads on, ``transform_input`` off,
13,004,888 parameters. torchvision's published IMAGENET1K_V1 weights need the overrides
``aux_logits=False, transform_input=True`` (6,624,904 parameters).

``inception_module="naive"`` builds the paper's naive module (Fig. 2a) for ablations; see
:class:`NaiveInception` for how its widths work. ``googlenet_naive`` registers it.
"""

from __future__ import annotations

import dataclasses
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

AUX_LOSS_WEIGHT = 0.3
"""Weight of each auxiliary classifier's loss in the training loss (paper, Sec. 5)."""


@dataclasses.dataclass(frozen=True)
class InceptionSpec:
    """One Inception module, in the columns of the paper's Table 1.

    Attributes:
      conv1x1: width of the 1x1 branch.
      reduce3x3: 1x1 reduction in front of the 3x3 branch (unused by the naive module).
      conv3x3: width of the 3x3 branch.
      reduce5x5: 1x1 reduction in front of the third branch (unused by the naive module).
      conv5x5: width of the third branch (a 3x3 convolution in torchvision, see the module doc).
      pool_proj: 1x1 projection after the pooling branch (unused by the naive module).
    """

    conv1x1: int
    reduce3x3: int
    conv3x3: int
    reduce5x5: int
    conv5x5: int
    pool_proj: int


# Table 1 of the paper: stages 3 (a, b), 4 (a-e) and 5 (a, b).
GOOGLENET = (
    (InceptionSpec(64, 96, 128, 16, 32, 32), InceptionSpec(128, 128, 192, 32, 96, 64)),
    (
        InceptionSpec(192, 96, 208, 16, 48, 64),
        InceptionSpec(160, 112, 224, 24, 64, 64),
        InceptionSpec(128, 128, 256, 24, 64, 64),
        InceptionSpec(112, 144, 288, 32, 64, 64),
        InceptionSpec(256, 160, 320, 32, 128, 128),
    ),
    (InceptionSpec(256, 160, 320, 32, 128, 128), InceptionSpec(384, 192, 384, 48, 128, 128)),
)
_FIRST_STAGE = 3  # the paper numbers the Inception stages 3 to 5
_AUX1_AFTER, _AUX2_AFTER = "inception4a", "inception4d"

# torchvision draws conv and linear weights from N(0, 0.01) truncated to [-2, 2], i.e. at 200
# standard deviations: effectively untruncated. Linear biases stay at zero here (torchvision
# leaves them at PyTorch's default uniform draw).
_weight_init = nn.initializers.normal(0.01)


def max_pool_ceil(x: jax.Array, window: int, *, stride: int, padding: int = 0) -> jax.Array:
    """PyTorch's ``MaxPool2d(..., ceil_mode=True)`` on NHWC input.

    Ceil mode keeps a last, partial window when the input does not divide evenly (so 112 -> 56
    rather than 55 for a 3x3/2 pool), unless that window would start in the right padding.
    Implemented as extra right padding, which max pooling fills with -inf.
    """

    def right_pad(n: int) -> int:
        out = -(-(n + 2 * padding - window) // stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
        return padding + max(0, (out - 1) * stride + window - n - 2 * padding)

    ph, pw = right_pad(x.shape[1]), right_pad(x.shape[2])
    return nn.max_pool(
        x,
        (window, window),
        strides=(stride, stride),
        padding=((padding, ph), (padding, pw)),
    )


def _conv_bn(*, conv: layers.ModuleDef, norm: layers.ModuleDef, activation: layers.Activation):
    """torchvision's ``BasicConv2d`` as a :class:`~cnn_flax.models.layers.ConvBN` factory."""
    return functools.partial(layers.ConvBN, conv=conv, norm=norm, activation=activation)


class Inception(nn.Module):
    """The Inception module with dimension reductions (paper Fig. 2b).

    Output channels: ``conv1x1 + conv3x3 + conv5x5 + pool_proj``.

    Attributes:
      spec: branch widths.
      branch3_kernel_size: kernel of the third branch (3 as torchvision, 5 as the paper).
      conv: bound convolution; norm: bound BatchNorm; activation: activation.
    """

    spec: InceptionSpec
    branch3_kernel_size: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        conv_bn = _conv_bn(conv=self.conv, norm=self.norm, activation=self.activation)
        b1 = conv_bn(s.conv1x1, 1, name="branch1")(x)
        b2 = conv_bn(s.reduce3x3, 1, name="branch2_reduce")(x)
        b2 = conv_bn(s.conv3x3, 3, name="branch2")(b2)
        b3 = conv_bn(s.reduce5x5, 1, name="branch3_reduce")(x)
        b3 = conv_bn(s.conv5x5, self.branch3_kernel_size, name="branch3")(b3)
        b4 = max_pool_ceil(x, 3, stride=1, padding=1)
        b4 = conv_bn(s.pool_proj, 1, name="branch4_proj")(b4)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class NaiveInception(nn.Module):
    """The naive Inception module (paper Fig. 2a), for ablations.

    The 3x3 and third-branch convolutions act on the input directly (no 1x1 reductions) and the
    pooled input joins the output unprojected, so ``spec.reduce3x3``, ``spec.reduce5x5`` and
    ``spec.pool_proj`` are unused and the output has ``conv1x1 + conv3x3 + conv5x5 + C_in``
    channels, ``C_in`` being the module's input channels. Widths therefore grow from module to
    module, the "computational blow up" that motivates the reductions (paper Sec. 4).

    Attributes:
      spec: branch widths.
      branch3_kernel_size: kernel of the third branch (3 as torchvision, 5 as the paper).
      conv: bound convolution; norm: bound BatchNorm; activation: activation.
    """

    spec: InceptionSpec
    branch3_kernel_size: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        conv_bn = _conv_bn(conv=self.conv, norm=self.norm, activation=self.activation)
        b1 = conv_bn(s.conv1x1, 1, name="branch1")(x)
        b2 = conv_bn(s.conv3x3, 3, name="branch2")(x)
        b3 = conv_bn(s.conv5x5, self.branch3_kernel_size, name="branch3")(x)
        b4 = max_pool_ceil(x, 3, stride=1, padding=1)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (paper Sec. 5), as torchvision's ``InceptionAux``.

    4x4 adaptive average pool, 1x1 convolution to 128 channels (``conv``), 1024-wide ``fc1``
    with ReLU and dropout, then ``fc2`` to the classes.

    Attributes:
      num_classes: outputs.
      dropout: dropout after ``fc1``.
      conv: bound convolution; norm: bound BatchNorm; activation: activation; dense: bound Dense.
    """

    num_classes: int
    dropout: float
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation
    dense: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = layers.adaptive_avg_pool(x, (4, 4))
        conv_bn = _conv_bn(conv=self.conv, norm=self.norm, activation=self.activation)
        x = conv_bn(128, 1, name="conv")(x)
        # NHWC flatten; the converter permutes torchvision's C, H, W order to it.
        x = x.reshape(x.shape[0], -1)
        x = self.activation(self.dense(1024, name="fc1")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return self.dense(self.num_classes, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(layers.BatchNormContract):
    """GoogLeNet: a stem, nine Inception modules in three stages, and a linear classifier.

    Parameters are named ``conv1``, ``conv2``, ``conv3`` (stem), ``inception3a`` ...
    ``inception5b`` (branches ``branch1``, ``branch2_reduce``, ``branch2``, ``branch3_reduce``,
    ``branch3``, ``branch4_proj``), ``aux1``, ``aux2`` and ``head``, following torchvision's names.

    Returns:
      The logits, float32 ``[batch, num_classes]`` (features ``[batch, 1024]`` when
      ``num_classes=0``). In train mode the auxiliary logits go to ``layers.AUX_COLLECTION``.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features (and builds no auxiliary heads).
      aux_logits: build the two auxiliary classifiers (run in train mode only).
      transform_input: re-normalise ImageNet-normalised input to the [-1, 1] scaling the ported
        weights expect, as torchvision's option; set it for the published weights.
      inception_module: ``"reduced"`` (paper Fig. 2b, torchvision) or ``"naive"`` (Fig. 2a).
      branch3_kernel_size: kernel of each module's third branch: 3 as torchvision, 5 as the paper.
      stages: the Inception spec, three stages (numbered 3 to 5 as in the paper).
      dropout: dropout in front of the classifier.
      aux_dropout: dropout inside the auxiliary classifiers.
      bn_epsilon: BatchNorm epsilon (0.001, torchvision's ``BasicConv2d``).
    """

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    inception_module: str = "reduced"
    branch3_kernel_size: int = 3
    stages: tuple[tuple[InceptionSpec, ...], ...] = GOOGLENET
    dropout: float = 0.2
    aux_dropout: float = 0.7
    bn_epsilon: float = layers.family_default(1e-3)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        modules = {"reduced": Inception, "naive": NaiveInception}
        if self.inception_module not in modules:
            raise ValueError(
                f"inception_module={self.inception_module!r} is not one of {sorted(modules)}; "
                f"use 'reduced' (torchvision, paper Fig. 2b) or 'naive' (paper Fig. 2a)."
            )
        block = modules[self.inception_module]
        layers.check_rate("dropout", self.dropout)
        layers.check_rate("aux_dropout", self.aux_dropout)
        conv, norm, _ = layers.bind_contract(self, train=train, kernel_init=_weight_init)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_weight_init
        )
        conv_bn = _conv_bn(conv=conv, norm=norm, activation=self.activation)
        # The auxiliary heads only run in training, but their parameters must exist whatever
        # mode ``init`` is called in. A feature extractor (num_classes=0) has none.
        with_aux = self.aux_logits and self.num_classes > 0
        run_aux = with_aux and (train or self.is_initializing())

        x = x.astype(self.dtype)
        if self.transform_input:
            x = _transform_input(x)
        x = conv_bn(64, 7, strides=2, name="conv1")(x)
        x = max_pool_ceil(x, 3, stride=2)
        x = conv_bn(64, 1, name="conv2")(x)
        x = conv_bn(192, 3, name="conv3")(x)
        x = max_pool_ceil(x, 3, stride=2)

        aux = {}
        for i, stage in enumerate(self.stages):
            if i > 0:
                # torchvision's pool in front of stage 5 is 2x2 (the paper's is 3x3).
                x = max_pool_ceil(x, 3 if i == 1 else 2, stride=2)
            for j, spec in enumerate(stage):
                name = f"inception{_FIRST_STAGE + i}{chr(ord('a') + j)}"
                x = block(
                    spec,
                    self.branch3_kernel_size,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    name=name,
                )(x)
                for aux_name, after in (("aux1", _AUX1_AFTER), ("aux2", _AUX2_AFTER)):
                    if run_aux and name == after:
                        aux[aux_name] = InceptionAux(
                            self.num_classes,
                            self.aux_dropout,
                            conv=conv,
                            norm=norm,
                            activation=self.activation,
                            dense=dense,
                            name=aux_name,
                        )(x, train=train)
        if run_aux and len(aux) != 2:
            raise ValueError(
                f"The auxiliary classifiers attach after {_AUX1_AFTER} and {_AUX2_AFTER}, which "
                f"these stages do not have; set aux_logits=False or keep stage 4 at 4+ modules."
            )

        if train:
            for aux_name, aux_out in aux.items():
                self.sow(layers.AUX_COLLECTION, f"{aux_name}_logits", aux_out)
        return layers.pooled_head(
            self, x, dropout=self.dropout, train=train, kernel_init=_weight_init
        )


def _transform_input(x: jax.Array) -> jax.Array:
    """ImageNet mean/std normalisation -> ``(x - 0.5) / 0.5`` normalisation, per channel."""
    mean = jnp.asarray(layers.IMAGENET_MEAN, x.dtype)
    std = jnp.asarray(layers.IMAGENET_STD, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


# Our branch name -> torchvision's BasicConv2d prefix inside an Inception module.
_TV_BRANCHES = {
    "branch1": "branch1",
    "branch2_reduce": "branch2.0",
    "branch2": "branch2.1",
    "branch3_reduce": "branch3.0",
    "branch3": "branch3.1",
    "branch4_proj": "branch4.1",
}


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision GoogLeNet state dict -> cnn_flax variables.

    Accepts both layouts torchvision produces: the default constructor's, with the auxiliary
    classifiers (``aux1.*``, ``aux2.*``), and that of ``googlenet(weights=...)``, whose auxiliary
    heads are removed after loading (then the model needs ``aux_logits=False``).
    """
    from cnn_flax.models.registry import create_model

    model = create_model(name)
    params: dict = {}
    stats: dict = {}

    def conv_bn(ours: tuple[str, ...], theirs: str) -> None:
        p, s = sd.conv_bn(f"{theirs}.conv", f"{theirs}.bn")
        _nest(params, ours, p)
        _nest(stats, ours, s)

    for stem in ("conv1", "conv2", "conv3"):
        conv_bn((stem,), stem)
    for i, stage in enumerate(model.stages):
        for j in range(len(stage)):
            block = f"inception{_FIRST_STAGE + i}{chr(ord('a') + j)}"
            for ours, theirs in _TV_BRANCHES.items():
                conv_bn((block, ours), f"{block}.{theirs}")
    for aux in ("aux1", "aux2"):
        if not sd.has(f"{aux}.fc2.weight"):
            continue  # torchvision's published layout has no auxiliary heads
        conv_bn((aux, "conv"), f"{aux}.conv")
        params[aux]["fc1"] = {
            "kernel": dense_kernel_from_nchw_flatten(sd(f"{aux}.fc1.weight"), 128, 4, 4),
            "bias": sd(f"{aux}.fc1.bias"),
        }
        params[aux]["fc2"] = sd.dense(f"{aux}.fc2")
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


def weight_overrides(name: str, variables: dict) -> dict:
    """What converted weights show of the model they need: ``aux_logits`` is whether they have
    auxiliary heads (torchvision drops them after loading its published weights).

    ``transform_input`` cannot be read off the weights; the published entry's overrides say it.
    """
    del name
    return {"aux_logits": "aux1" in variables["params"]}


def _nest(tree: dict, path: tuple[str, ...], value: dict) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


_REFERENCE = "Szegedy et al. 2015 (Inception v1); torchvision's BatchNorm variant"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's GoogLeNet names its modules as we do."""
    del name
    return module


FAMILY = Family(
    name="googlenet",
    reference=_REFERENCE,
    mappings={"torchvision": from_torchvision},
    weight_overrides=weight_overrides,
    # torchvision's GoogLeNet weights are ported, not trained with its scripts, so the
    # optimisation follows train.py's defaults for BatchNorm networks; the auxiliary losses are
    # weighted 0.3 (paper, Sec. 5). The paper's own schedule (lr x0.96 every 8 epochs) is
    # schedule.name=exponential, decay_rate=0.96, decay_epochs=8.
    recipe=Recipe(
        base="torchvision_step",
        overrides={"aux_loss_weight": AUX_LOSS_WEIGHT},
        source="torchvision train.py defaults (lr 0.1, wd 1e-4, StepLR 30) + auxiliary losses "
        "x0.3 (Szegedy et al. 2015, sec. 5)",
    ),
    features=FeatureNodes(("conv*", "inception*"), torchvision=_torchvision_node),
)
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "googlenet": (
        torchvision_weights("IMAGENET1K_V1", "googlenet-1378be20.pth", 224, 256, "bilinear",
                            69.778, 89.53, 1.498, 6_624_904, 49.731,
                            # Ported from TensorFlow: they expect [-1, 1] inputs, and torchvision
                            # drops the auxiliary heads after loading them.
                            overrides={"transform_input": True, "aux_logits": False}),
    ),
}
# fmt: on


FAMILY.register(
    "googlenet",
    GoogLeNet,
    torchvision="googlenet",
    weights=_PUBLISHED["googlenet"],
    recipe=FAMILY.recipe.but(
        target_top1=69.778,
        target_source="torchvision's ported IMAGENET1K_V1 weights (the paper gives top-5 only)",
    ),
)
FAMILY.register(
    "googlenet_naive",
    functools.partial(GoogLeNet, inception_module="naive"),
    reference=_REFERENCE + "; naive Inception modules (paper Fig. 2a), an ablation",
)

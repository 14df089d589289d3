"""DenseNet (Huang, Liu, van der Maaten and Weinberger 2017, "Densely Connected Convolutional
Networks").

Every layer of a dense block sees the concatenation of the block's input and of all earlier
layers' outputs and adds ``growth_rate`` new channels to it (Sec. 3, "Dense connectivity"). These
are the paper's DenseNet-BC networks for ImageNet (Sec. 3 and Table 1), as torchvision builds
them, number for number:

- each layer is pre-activation: BN-ReLU-Conv(1x1) to ``bn_size * growth_rate`` channels (the
  "bottleneck", B), then BN-ReLU-Conv(3x3) to ``growth_rate`` channels;
- between blocks a transition layer, BN-ReLU-Conv(1x1) then 2x2 average pooling, compresses the
  channels by ``compression`` (the paper's theta = 0.5, C);
- a 7x7/2 stem convolution with BN and ReLU and a 3x3/2 max pool, and after the last block a BN,
  a ReLU and global average pooling in front of the linear classifier.

``memory_efficient=True`` is torchvision's option of the same name (Pleiss et al. 2017,
"Memory-Efficient Implementation of DenseNets"): the concatenation, BN and ReLU in front of each
bottleneck convolution are recomputed in the backward pass (``nn.remat``) instead of kept, so the
activations stored per block grow linearly rather than quadratically with its depth, in PyTorch's
eager execution. The results are the same. Under XLA the option saved nothing where measured: on
CPU (jax 0.10.2) a DenseNet-121 train step at batch 16 and 224 pixels compiles to the same
2,963 MiB of temporary buffers with and without it (``compile().memory_analysis()``), and only
compiles slower. XLA appears to recompute the fused concatenation, BN and ReLU for the backward
pass on its own. The option is kept for parity with torchvision and for backends whose compiler
keeps those tensors (unmeasured on GPU).

Parameter names: ``stem`` (``conv``, ``bn``), ``block{b}_layer{l}`` (``bottleneck`` and
``conv3x3``, each ``norm`` and ``conv``), ``transition{b}`` (``norm``, ``conv``; after block
``b``), ``final_norm`` and ``head``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import Family, Recipe, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader

# torchvision's "official init from torch repo": Kaiming-normal convolutions on fan_in (He et
# al. 2015), untruncated; the classifier keeps torch's default weights and zero biases.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class PreActConv(nn.Module):
    """BN -> activation -> convolution, the unit every DenseNet layer is made of.

    A tuple input is concatenated on channels first: the dense connectivity of Sec. 3.

    Attributes:
      features: output channels.
      kernel_size: square kernel size (1 or 3), padded to keep the spatial size.
      conv: bound convolution; norm: bound BatchNorm; activation: activation.
    """

    features: int
    kernel_size: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, ...]) -> jax.Array:
        if isinstance(x, tuple):
            x = jnp.concatenate(x, axis=-1)
        x = self.activation(self.norm(name="norm")(x))
        pad = (self.kernel_size - 1) // 2
        k = (self.kernel_size, self.kernel_size)
        return self.conv(self.features, k, padding=((pad, pad), (pad, pad)), name="conv")(x)


# Recomputed in the backward pass: only its inputs (earlier layers' outputs, kept anyway) and its
# output are stored.
_RematPreActConv = nn.remat(PreActConv)


class DenseLayer(nn.Module):
    """One layer of a dense block: bottleneck (concat-BN-ReLU-1x1) then BN-ReLU-3x3.

    Attributes:
      growth_rate: new channels this layer adds (the paper's k).
      bn_size: the bottleneck has ``bn_size * growth_rate`` channels (4 in the paper).
      dropout: dropout on the layer's output (torchvision's ``drop_rate``; 0 for ImageNet).
      memory_efficient: recompute the bottleneck's concatenation, BN and ReLU in the backward
        pass (``nn.remat``) rather than store them.
      conv: bound convolution; norm: bound BatchNorm; activation: activation.
    """

    growth_rate: int
    bn_size: int
    dropout: float
    memory_efficient: bool
    conv: layers.ModuleDef
    norm: layers.ModuleDef
    activation: layers.Activation

    @nn.compact
    def __call__(self, features: tuple[jax.Array, ...], *, train: bool) -> jax.Array:
        bound = {"conv": self.conv, "norm": self.norm, "activation": self.activation}
        bottleneck = _RematPreActConv if self.memory_efficient else PreActConv
        y = bottleneck(self.bn_size * self.growth_rate, 1, **bound, name="bottleneck")(features)
        y = PreActConv(self.growth_rate, 3, **bound, name="conv3x3")(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class DenseNet(layers.BatchNormContract):
    """DenseNet-BC: stem, dense blocks joined by compressing transitions, BN-ReLU, classifier.

    Features (``num_classes=0``): the globally pooled output of the final BN and ReLU.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.BatchNormContract`):
      num_classes: classifier outputs; 0 returns the features.
      growth_rate: channels each layer adds (k: 32, or 48 for DenseNet-161).
      block_config: layers per dense block.
      num_init_features: channels of the stem (2k in the paper).
      bn_size: bottleneck width in units of ``growth_rate``.
      compression: transitions keep ``floor(compression * channels)`` channels (theta).
      dropout: dropout after every dense layer (torchvision's ``drop_rate``).
      memory_efficient: rematerialise each layer's concatenation-BN-ReLU (torchvision's option).
    """

    num_classes: int = 1000
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    compression: float = 0.5
    dropout: float = 0.0
    memory_efficient: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layers.check_rate("dropout", self.dropout)
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(
                f"compression={self.compression} must be in (0, 1]; DenseNet-BC uses 0.5."
            )
        conv, norm, _ = layers.bind_contract(self, train=train, kernel_init=_conv_init)
        x = x.astype(self.dtype)
        x = layers.ConvBN(
            self.num_init_features,
            7,
            conv=conv,
            norm=norm,
            strides=2,
            activation=self.activation,
            name="stem",
        )(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for b, num_layers in enumerate(self.block_config, start=1):
            features = (x,)
            for i in range(1, num_layers + 1):
                new = DenseLayer(
                    self.growth_rate,
                    self.bn_size,
                    self.dropout,
                    self.memory_efficient,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    name=f"block{b}_layer{i}",
                )(features, train=train)
                features = (*features, new)
            x = layers.Tap(name=f"block{b}")(jnp.concatenate(features, axis=-1))
            if b < len(self.block_config):
                width = int(x.shape[-1] * self.compression)
                x = PreActConv(
                    width,
                    1,
                    conv=conv,
                    norm=norm,
                    activation=self.activation,
                    name=f"transition{b}",
                )(x)
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = self.activation(norm(name="final_norm")(x))
        return layers.pooled_head(self, x)


def _tv_layer(sd: StateDictReader, prefix: str, name: str) -> str:
    """The key prefix of torchvision module ``name`` (``norm1`` ...) inside dense layer
    ``prefix``. The published checkpoint files predate torchvision's renaming and spell it
    ``norm.1``; torchvision renames on load, so both spellings are accepted."""
    current = f"{prefix}.{name}"
    return current if sd.has(f"{current}.weight") else f"{prefix}.{name[:-1]}.{name[-1]}"


def _has_layer(sd: StateDictReader, prefix: str) -> bool:
    return sd.has(f"{_tv_layer(sd, prefix, 'conv1')}.weight")


def _pre_act(sd: StateDictReader, norm: str, conv: str) -> tuple[dict, dict]:
    bn_params, bn_stats = sd.batch_norm(norm)
    return {"norm": bn_params, "conv": sd.conv(conv)}, {"norm": bn_stats}


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision DenseNet state dict (current or legacy key spelling) -> cnn_flax variables."""
    del name
    params, stats = {}, {}
    params["stem"], stats["stem"] = sd.conv_bn("features.conv0", "features.norm0")
    b = 1
    while _has_layer(sd, f"features.denseblock{b}.denselayer1"):
        i = 1
        while _has_layer(sd, prefix := f"features.denseblock{b}.denselayer{i}"):
            layer_params, layer_stats = {}, {}
            for ours, (tv_norm, tv_conv) in (
                ("bottleneck", ("norm1", "conv1")),
                ("conv3x3", ("norm2", "conv2")),
            ):
                layer_params[ours], layer_stats[ours] = _pre_act(
                    sd, _tv_layer(sd, prefix, tv_norm), _tv_layer(sd, prefix, tv_conv)
                )
            params[f"block{b}_layer{i}"], stats[f"block{b}_layer{i}"] = layer_params, layer_stats
            i += 1
        if sd.has(f"features.transition{b}.conv.weight"):
            t = f"features.transition{b}"
            params[f"transition{b}"], stats[f"transition{b}"] = _pre_act(
                sd, f"{t}.norm", f"{t}.conv"
            )
        b += 1
    params["final_norm"], stats["final_norm"] = sd.batch_norm("features.norm5")
    params["head"] = sd.dense("classifier")
    return {"params": params, "batch_stats": stats}


_PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks (DenseNet-BC)"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stem``, ``block{b}`` taps and ``final_norm``."""
    del name
    if module.startswith("block"):
        return f"features.denseblock{module[len('block') :]}"
    return {"stem": "features.relu0", "final_norm": "features.norm5"}[module]


FAMILY = Family(
    name="densenet",
    reference=_PAPER + "; torchvision densenet",
    mappings={"torchvision": from_torchvision},
    # Sec. 4.2 ("Training"), ImageNet: SGD with Nesterov momentum 0.9 (no dampening), batch 256,
    # lr 0.1 divided by 10 at epochs 30 and 60 of 90, weight decay 1e-4; the torchvision
    # train.py defaults otherwise. torchvision's weights are the authors' own (ported from their
    # LuaTorch release), so their top-1 is the target.
    recipe=Recipe(
        base="torchvision_step",
        overrides={"optimizer.nesterov": True},
        source="Huang et al. 2017, sec. 4.2: SGD Nesterov 0.9, batch 256, lr 0.1 /10 at epochs "
        "30 and 60 of 90, wd 1e-4",
        target_source="torchvision IMAGENET1K_V1 (the authors' LuaTorch models, ported)",
    ),
    features=FeatureNodes(("stem", "block?", "final_norm"), torchvision=_torchvision_node),
)

# name: (growth rate, block config, stem width) as torchvision.
_VARIANTS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "densenet121": (
        torchvision_weights("IMAGENET1K_V1", "densenet121-a639ec97.pth", 224, 256, "bilinear",
                            74.434, 91.972, 2.834, 7_978_856, 30.845),
    ),
    "densenet161": (
        torchvision_weights("IMAGENET1K_V1", "densenet161-8d451a50.pth", 224, 256, "bilinear",
                            77.138, 93.56, 7.728, 28_681_000, 110.369),
    ),
    "densenet169": (
        torchvision_weights("IMAGENET1K_V1", "densenet169-b2777c0a.pth", 224, 256, "bilinear",
                            75.6, 92.806, 3.36, 14_149_480, 54.708),
    ),
    "densenet201": (
        torchvision_weights("IMAGENET1K_V1", "densenet201-c1103571.pth", 224, 256, "bilinear",
                            76.896, 93.37, 4.291, 20_013_928, 77.373),
    ),
}
# fmt: on


for _name, (_k, _blocks, _init) in _VARIANTS.items():
    FAMILY.register(
        _name,
        functools.partial(DenseNet, growth_rate=_k, block_config=_blocks, num_init_features=_init),
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=FAMILY.recipe.but(target_top1=_PUBLISHED[_name][0].top1),
    )

"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale").

The image is cut into ``patch_size`` x ``patch_size`` patches, each linearly embedded (a strided
convolution), a learned class token is prepended, learned position embeddings are added, and a
stack of pre-norm Transformer encoder blocks (multi-head self-attention and a GELU MLP, each in a
residual branch, Vaswani et al. 2017) follows; the classifier reads the class token after a
final LayerNorm (Sec. 3.1, Eq. 1-4).

This is torchvision's ``vit_b_16`` ... ``vit_h_14``, number for number: LayerNorm epsilon 1e-6,
exact GELU, biases everywhere, no representation layer, attention through
``jax.nn.dot_product_attention`` (cuDNN flash attention on GPUs). Like torchvision the position
embeddings have the grid of ``image_size``; unlike torchvision an input of another size is not
refused: the grid is resized on the fly with torchvision's own rule (bicubic, corners aligned,
:func:`resize_position_grid`), which is also how stored weights move to another resolution
(:func:`resize_position_embedding`, Sec. 3.2's "2D interpolation of the pre-trained position
embeddings").

Parameter names: ``patch_embedding`` (conv), ``class_token``, ``pos_embedding``,
``encoder_block{i}`` (``norm1``, ``attention`` {``qkv``, ``out``}, ``norm2``, ``mlp`` {``fc1``,
``fc2``}), ``encoder_norm`` and ``head``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import layers
from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import Family, Recipe, Weights, torchvision_weights
from cnn_flax.models.state_dict import StateDictReader, dense_kernel

# torch's bicubic kernel constant (``upsample_bicubic2d``); Keys' a = -0.5 would differ.
_CUBIC_A = -0.75


def _cubic(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1
    if x < 2:
        return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A
    return 0.0


@functools.lru_cache(maxsize=32)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of torch's 1-D bicubic resize with ``align_corners=True``.

    Output ``i`` samples input position ``i * (n_in - 1) / (n_out - 1)`` with the four nearest
    inputs (indices clamped at the borders), as ``torch.nn.functional.interpolate`` does.
    """
    matrix = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        base = math.floor(src)
        t = src - base
        for k, weight in enumerate((_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t))):
            matrix[i, min(max(base - 1 + k, 0), n_in - 1)] += weight
    return matrix


def resize_position_grid(grid: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes ``[1, h, w, dim]`` position embeddings to ``[1, *size, dim]`` (torch's bicubic,
    corners aligned: torchvision's ``interpolate_embeddings``)."""
    _, h, w, _ = grid.shape
    if (h, w) == size:
        return grid
    rows = jnp.asarray(bicubic_matrix(h, size[0]), grid.dtype)
    cols = jnp.asarray(bicubic_matrix(w, size[1]), grid.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, grid, cols)


def resize_position_embedding(variables: dict, *, grid: int) -> dict:
    """``variables`` of a ViT with its position embeddings resized to a ``grid`` x ``grid``
    patch grid (e.g. 224 -> 384 pixels at patch 16 is 14 -> 24); the class token's embedding is
    kept. Use it to load weights into a model with another ``image_size``."""
    pos = np.asarray(variables["params"]["pos_embedding"])
    old = math.isqrt(pos.shape[1] - 1)
    if old * old != pos.shape[1] - 1:
        raise ValueError(f"pos_embedding {pos.shape} does not hold a square patch grid.")
    image = pos[:, 1:].reshape(1, old, old, pos.shape[-1])
    resized = np.asarray(resize_position_grid(jnp.asarray(image), (grid, grid)))
    new = np.concatenate([pos[:, :1], resized.reshape(1, grid * grid, -1)], axis=1)
    params = {**variables["params"], "pos_embedding": new.astype(pos.dtype)}
    return {**variables, "params": params}


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (torch's ``in_proj``).

    Attributes:
      num_heads: attention heads; the width must divide by it.
      dtype: computation dtype.
      dropout: dropout on the attention weights (0: ``jax.nn.dot_product_attention``).
    """

    num_heads: int
    dtype: jnp.dtype
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        batch, tokens, width = x.shape
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads={self.num_heads}.")
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.xavier_uniform(),
        )
        qkv = dense(3 * width, name="qkv")(x)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.dropout and train:
            scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(query.shape[-1])
            weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
            weights = nn.Dropout(self.dropout, deterministic=False)(weights)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        else:
            out = jax.nn.dot_product_attention(query, key, value)
        return dense(width, name="out")(out.reshape(batch, tokens, width))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Attributes:
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP.
      norm: bound LayerNorm; activation: the MLP's activation.
      dtype: computation dtype.
      dropout: dropout after the attention and in the MLP.
      attention_dropout: dropout on the attention weights.
      drop_path: stochastic depth rate of both residual branches.
    """

    num_heads: int
    mlp_dim: int
    norm: layers.ModuleDef
    activation: layers.Activation
    dtype: jnp.dtype
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        deterministic = not train
        y = self.norm(name="norm1")(x)
        y = SelfAttention(
            self.num_heads, dtype=self.dtype, dropout=self.attention_dropout, name="attention"
        )(y, train=train)
        y = nn.Dropout(self.dropout, deterministic=deterministic)(y)
        x = x + layers.DropPath(self.drop_path)(y, deterministic=deterministic)
        y = self.norm(name="norm2")(x)
        y = _MLP(self.mlp_dim, activation=self.activation, dtype=self.dtype, name="mlp")(y)
        y = nn.Dropout(self.dropout, deterministic=deterministic)(y)
        return x + layers.DropPath(self.drop_path)(y, deterministic=deterministic)


class _MLP(nn.Module):
    """Dense -> activation -> Dense, initialised as torchvision's ``MLPBlock``."""

    hidden: int
    activation: layers.Activation
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(1e-6),
        )
        width = x.shape[-1]
        x = self.activation(dense(self.hidden, name="fc1")(x))
        return dense(width, name="fc2")(x)


class VisionTransformer(layers.LayerNormContract):
    """ViT: patch embedding, class token, position embeddings, encoder blocks, classifier.

    Features (``num_classes=0``): the class token's output after the final LayerNorm.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.LayerNormContract`):
      patch_size: side of the square patches.
      num_layers: encoder blocks.
      num_heads: attention heads per block.
      hidden_dim: token width.
      mlp_dim: hidden width of each block's MLP.
      image_size: the resolution the position embeddings are laid out for.
      num_classes: classifier outputs; 0 returns the features.
      dropout: dropout after the embeddings, the attention and in the MLPs.
      attention_dropout: dropout on the attention weights.
      drop_path: stochastic depth rate of the last block (linear in depth; torchvision: 0).
    """

    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    image_size: int = 224
    num_classes: int = 1000
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for name in ("dropout", "attention_dropout", "drop_path"):
            layers.check_rate(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}."
            )
        p = self.patch_size
        fan_in = 3 * p * p
        conv, norm, _ = layers.bind_contract(
            self,
            train=train,
            use_bias=True,
            kernel_init=nn.initializers.truncated_normal(math.sqrt(1 / fan_in)),
        )
        x = conv(self.hidden_dim, (p, p), strides=(p, p), padding="VALID", name="patch_embedding")(
            x.astype(self.dtype)
        )
        batch, h, w, width = x.shape
        grid = self.image_size // p
        pos = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, 1 + grid * grid, width), jnp.float32
        )
        token = self.param("class_token", nn.initializers.zeros, (1, 1, width), jnp.float32)
        pos_image = resize_position_grid(pos[:, 1:].reshape(1, grid, grid, width), (h, w))
        pos = jnp.concatenate([pos[:, :1], pos_image.reshape(1, h * w, width)], axis=1)

        x = x.reshape(batch, h * w, width)
        x = jnp.concatenate([jnp.broadcast_to(token.astype(x.dtype), (batch, 1, width)), x], 1)
        x = x + pos.astype(x.dtype)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                norm=norm,
                activation=self.activation,
                dtype=self.dtype,
                dropout=self.dropout,
                attention_dropout=self.attention_dropout,
                drop_path=self.drop_path * i / max(1, self.num_layers - 1),
                name=f"encoder_block{i}",
            )(x, train=train)
        x = norm(name="encoder_norm")(x)
        return layers.classifier(
            x[:, 0], self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros
        )


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision VisionTransformer state dict -> cnn_flax variables.

    ``conv_proj`` -> ``patch_embedding``; ``encoder.layers.encoder_layer_{i}`` ->
    ``encoder_block{i}`` with ``ln_1``/``ln_2`` -> ``norm1``/``norm2``, the attention's fused
    ``in_proj`` (query, key, value rows) -> ``qkv`` and ``out_proj`` -> ``out``, ``mlp.0`` /
    ``mlp.3`` -> ``mlp.fc1`` / ``mlp.fc2``; ``encoder.ln`` -> ``encoder_norm``; ``heads.head``
    -> ``head``. The position embeddings keep their grid; the model's ``image_size`` follows from
    it (:func:`weight_overrides`).
    """
    del name
    params: dict = {
        "patch_embedding": sd.conv("conv_proj", bias=True),
        "class_token": sd("class_token"),
        "pos_embedding": sd("encoder.pos_embedding"),
    }
    i = 0
    while sd.has(f"encoder.layers.encoder_layer_{i}.ln_1.weight"):
        prefix = f"encoder.layers.encoder_layer_{i}"
        attention = f"{prefix}.self_attention"
        params[f"encoder_block{i}"] = {
            "norm1": sd.layer_norm(f"{prefix}.ln_1"),
            "attention": {
                "qkv": {
                    "kernel": dense_kernel(sd(f"{attention}.in_proj_weight")),
                    "bias": sd(f"{attention}.in_proj_bias"),
                },
                "out": sd.dense(f"{attention}.out_proj"),
            },
            "norm2": sd.layer_norm(f"{prefix}.ln_2"),
            "mlp": {"fc1": sd.dense(f"{prefix}.mlp.0"), "fc2": sd.dense(f"{prefix}.mlp.3")},
        }
        i += 1
    params["encoder_norm"] = sd.layer_norm("encoder.ln")
    params["head"] = sd.dense("heads.head")
    return {"params": params}


def weight_overrides(name: str, variables: dict) -> dict:
    """The ``image_size`` the weights' position-embedding grid was laid out for."""
    from cnn_flax.models.registry import create_model

    patch = create_model(name).patch_size
    grid = math.isqrt(int(np.shape(variables["params"]["pos_embedding"])[1]) - 1)
    return {"image_size": grid * patch}


_PAPER = "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words; torchvision vision_transformer"
_TV = "torchvision references/classification (Vision Transformer)"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``encoder_block{i}``."""
    del name
    return f"encoder.layers.encoder_layer_{module[len('encoder_block') :]}"


FAMILY = Family(
    name="vit",
    reference=_PAPER,
    mappings={"torchvision": from_torchvision},
    weight_overrides=weight_overrides,
    # torchvision's vit_b_16 command: AdamW lr 3e-3 at batch 4096 (8 x 512), weight decay 0.3 on
    # every parameter (no --norm-weight-decay), cosine after 30 linear warm-up epochs from 0.033 x
    # the peak, 300 epochs, label smoothing 0.11, mixup 0.2 / cutmix 1.0, RandAugment (2 ops,
    # magnitude 9), gradient clipping at norm 1, repeated augmentation (--ra-sampler, its default
    # 3 repeats), the EMA of the V2 base; 224 px crops, no TrivialAugment, no random erasing.
    recipe=Recipe(
        base="torchvision_v2",
        overrides={
            "batch_size": 4096,
            "num_epochs": 300.0,
            "label_smoothing": 0.11,
            "clip_grad_norm": 1.0,
            "optimizer.name": "adamw",
            "optimizer.lr": 3e-3 * 256 / 4096,
            "optimizer.weight_decay": 0.3,
            "optimizer.weight_decay_mask": "all",
            "schedule.warmup_epochs": 30.0,
            "schedule.warmup_init_factor": 0.033,
            "data.image_size": 224,
            "data.augment.trivial_augment_wide": False,
            "data.augment.randaugment.num_layers": 2,
            "data.augment.randaugment.magnitude": 9,
            "data.augment.random_erasing": 0.0,
            "data.repeated_augmentation": 3,
        },
        source=f"{_TV}, vit_b_16: AdamW 3e-3 at batch 4096, wd 0.3, 30 warm-up epochs + cosine, "
        "300 epochs, label smoothing 0.11, mixup/cutmix, RandAugment, clip 1, EMA, repeated "
        "augmentation x3",
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(
        ("encoder_block*",), torchvision=_torchvision_node, every=True, tokens=True
    ),
)

_B = {"num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072}
_L = {"num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "mlp_dim": 4096}
_H = {"num_layers": 32, "num_heads": 16, "hidden_dim": 1280, "mlp_dim": 5120}


_SWAG = "SWAG weights (Singh et al. 2022), fine-tuned end to end; torchvision did not train them"
# name: (size, patch, recipe changes)
_VARIANTS = {
    "vit_b_16": (
        _B,
        16,
        {},
    ),
    "vit_b_32": (
        _B,
        32,
        # torchvision trains vit_b_32 with AutoAugment's ImageNet policy instead of RandAugment.
        {"data.augment.randaugment.num_layers": 0, "data.augment.autoaugment": "v0"},
    ),
    "vit_l_16": (
        _L,
        16,
        # torchvision's vit_l_16: the V2 recipe (SGD lr 0.5 at batch 1024, 600 epochs, wd 2e-5
        # none on norms, label smoothing 0.1, TrivialAugment Wide, random erasing 0.1) on 224 px
        # crops, with gradient clipping at 1 and the family's 3 repeats.
        {
            "batch_size": 1024,
            "num_epochs": 600.0,
            "label_smoothing": 0.1,
            "optimizer.name": "sgd",
            "optimizer.lr": 0.5 * 256 / 1024,
            "optimizer.weight_decay": 2e-5,
            "optimizer.weight_decay_mask": "no_norm",
            "schedule.warmup_epochs": 5.0,
            "schedule.warmup_init_factor": 0.01,
            "data.augment.randaugment.num_layers": 0,
            "data.augment.trivial_augment_wide": True,
            "data.augment.random_erasing": 0.1,
        },
    ),
    "vit_l_32": (
        _L,
        32,
        {},
    ),
    "vit_h_14": (
        _H,
        14,
        {},
    ),
}  # fmt: skip
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "vit_b_16": (
        torchvision_weights("IMAGENET1K_V1", "vit_b_16-c867db91.pth", 224, 256, "bilinear", 81.072,
                            95.318, 17.564, 86_567_656, 330.285),
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "vit_b_16_swag-9ac1b537.pth", 384, 384,
                            "bicubic", 85.304, 97.65, 55.484, 86_859_496, 331.398),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "vit_b_16_lc_swag-4e70ced5.pth", 224, 224,
                            "bicubic", 81.886, 96.18, 17.564, 86_567_656, 330.285),
    ),
    "vit_b_32": (
        torchvision_weights("IMAGENET1K_V1", "vit_b_32-d86f8d99.pth", 224, 256, "bilinear", 75.912,
                            92.466, 4.409, 88_224_232, 336.604),
    ),
    "vit_l_16": (
        torchvision_weights("IMAGENET1K_V1", "vit_l_16-852ce7e3.pth", 224, 242, "bilinear", 79.662,
                            94.638, 61.555, 304_326_632, 1161.023),
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "vit_l_16_swag-4f3808c9.pth", 512, 512,
                            "bicubic", 88.064, 98.512, 361.986, 305_174_504, 1164.258),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "vit_l_16_lc_swag-4d563306.pth", 224, 224,
                            "bicubic", 85.146, 97.422, 61.555, 304_326_632, 1161.023),
    ),
    "vit_l_32": (
        torchvision_weights("IMAGENET1K_V1", "vit_l_32-c7638314.pth", 224, 256, "bilinear", 76.972,
                            93.07, 15.378, 306_535_400, 1169.449),
    ),
    "vit_h_14": (
        torchvision_weights("IMAGENET1K_SWAG_E2E_V1", "vit_h_14_swag-80465313.pth", 518, 518,
                            "bicubic", 88.552, 98.694, 1016.717, 633_470_440, 2416.643),
        torchvision_weights("IMAGENET1K_SWAG_LINEAR_V1", "vit_h_14_lc_swag-c1eb923e.pth", 224, 224,
                            "bicubic", 85.708, 97.73, 167.295, 632_045_800, 2411.209),
    ),
}
# fmt: on


def _at_their_size(weights: tuple[Weights, ...]) -> tuple[Weights, ...]:
    """Each set with the ``image_size`` it was trained at (SWAG E2E: 384 to 518 px)."""
    return tuple(
        dataclasses.replace(w, overrides={**w.overrides, "image_size": w.transform.crop})
        for w in weights
    )


for _name, (_size, _patch, _changes) in _VARIANTS.items():
    _weights = _at_their_size(_PUBLISHED[_name])
    _target = _weights[0].top1 if _weights[0].tag == "IMAGENET1K_V1" else None
    FAMILY.register(
        _name,
        functools.partial(VisionTransformer, patch_size=_patch, **_size),
        torchvision=_name,
        weights=_weights,
        recipe=FAMILY.recipe.but(
            # evaluated as the published weights (vit_l_16: 242, tuned after training at 232)
            {**_changes, "data.eval_resize_size": _weights[0].transform.resize}
            if _target
            else _changes,
            target_top1=_target,
            target_source=None if _target else f"none published: {_SWAG}",
        ),
    )

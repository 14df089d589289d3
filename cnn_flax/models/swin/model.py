"""The Swin Transformer modules (V1 and V2); see :mod:`cnn_flax.models.swin` for the design."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax.models import layers
from cnn_flax.models.swin.windows import (
    effective_shift,
    relative_coords_table,
    relative_position_index,
    shift_mask,
    window_partition,
    window_reverse,
)

# torchvision initialises every linear layer (and the V1 position-bias table) with a truncated
# normal of standard deviation 0.02 (truncated at +-2, i.e. +-100 standard deviations), biases 0.
_init = nn.initializers.normal(0.02)
# V2's temperature: exp(logit_scale) clamped at 100 (Sec. 3.2), initialised at 10.
_MAX_LOGIT_SCALE = math.log(100.0)
# V2's position-bias MLP: hidden width, and the output squashed into (0, 16).
_CPB_HIDDEN = 512
_CPB_RANGE = 16.0


class QKV(nn.Module):
    """The joint query/key/value projection, torch's ``Linear(C, 3C)`` layout.

    Attributes:
      features: output features (3 x channels).
      zero_key_bias: drop the key's third of the bias in the forward pass (V2, as torchvision).
      dtype: computation dtype.
    """

    features: int
    zero_key_bias: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        if self.zero_key_bias:
            third = self.features // 3
            bias = jnp.asarray(bias).at[third : 2 * third].set(0.0)
        x = x.astype(self.dtype)
        return jnp.dot(x, kernel.astype(self.dtype)) + bias.astype(self.dtype)


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with a relative position bias.

    Attributes:
      num_heads: attention heads.
      window_size: side ``M`` of the square windows.
      shift_size: cyclic shift (``M // 2`` in every second block, else 0).
      cosine: V2's scaled cosine attention and continuous position bias.
      dense: bound Dense.
      dropout: dropout rate after the output projection.
      dtype: computation dtype.
    """

    num_heads: int
    window_size: int
    shift_size: int
    cosine: bool
    dense: layers.ModuleDef
    dropout: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        b, h, w, c = x.shape
        m = self.window_size
        x = jnp.pad(x, ((0, 0), (0, -h % m), (0, -w % m), (0, 0)))
        hp, wp = x.shape[1], x.shape[2]
        shift = effective_shift(hp, wp, m, self.shift_size)
        if any(shift):
            x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
        windows = window_partition(x, m)
        tokens = m * m

        bias = self._position_bias()[None]  # [1, heads, N, N], the same in every window
        if any(shift):
            # Each window its own mask: [B * nW, heads, N, N], batch-major as the windows.
            per_window = bias + jnp.asarray(shift_mask(hp, wp, m, shift))[:, None]
            bias = jnp.broadcast_to(per_window, (b, *per_window.shape))
            bias = bias.reshape(-1, *per_window.shape[1:])

        qkv = QKV(3 * c, zero_key_bias=self.cosine, dtype=self.dtype, name="qkv")(windows)
        qkv = qkv.reshape(-1, tokens, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B * nW, N, heads, head_dim]
        if self.cosine:
            logit_scale = self.param(
                "logit_scale", nn.initializers.constant(math.log(10.0)), (self.num_heads,)
            )
            temperature = jnp.exp(jnp.minimum(logit_scale, _MAX_LOGIT_SCALE))
            q = _unit(q) * temperature[:, None].astype(q.dtype)
            k = _unit(k)
            scale = 1.0
        else:
            scale = (c // self.num_heads) ** -0.5
        y = _attention(q, k, v, bias, scale=scale)
        y = self.dense(c, name="proj")(y.reshape(-1, tokens, c))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)

        y = window_reverse(y, m, hp, wp)
        if any(shift):
            y = jnp.roll(y, shift, axis=(1, 2))
        return y[:, :h, :w]

    def _position_bias(self) -> jax.Array:
        """``[heads, N, N]``: a learned table (V1) or an MLP of the log coordinates (V2)."""
        m = self.window_size
        index = relative_position_index(m).reshape(-1)
        # In float32 at least: it is added to the float32 logits.
        dtype = jnp.promote_types(self.dtype, jnp.float32)
        if self.cosine:
            coords = jnp.asarray(relative_coords_table(m), dtype)
            hidden = nn.relu(self.dense(_CPB_HIDDEN, dtype=dtype, name="cpb_fc1")(coords))
            table = self.dense(self.num_heads, dtype=dtype, use_bias=False, name="cpb_fc2")(hidden)
            table = table.reshape(-1, self.num_heads)
        else:
            table = self.param(
                "relative_position_bias_table", _init, ((2 * m - 1) ** 2, self.num_heads)
            ).astype(dtype)
        bias = table[index].reshape(m * m, m * m, self.num_heads).transpose(2, 0, 1)
        return _CPB_RANGE * jax.nn.sigmoid(bias) if self.cosine else bias


def _attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, *, scale: float
) -> jax.Array:
    """Softmax attention over ``[batch, tokens, heads, head_dim]``, ``bias`` added to the logits.

    ``jax.nn.dot_product_attention`` (its softmax in float32, fused kernels where available);
    float64 computation, which only numerical checks use, takes the explicit path, as that
    function rounds the logits to float32 whatever the input's precision.
    """
    if q.dtype != jnp.float64:
        return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale + bias
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def _unit(x: jax.Array) -> jax.Array:
    """``x / max(|x|, 1e-12)`` over the last axis (torch's ``F.normalize``), norm in float32."""
    norm = jnp.linalg.norm(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=-1)
    return x / jnp.maximum(norm, 1e-12)[..., None].astype(x.dtype)


class SwinBlock(nn.Module):
    """Window attention then an MLP, each a residual branch with a LayerNorm and drop path:
    before the branch (V1, pre-norm) or at its end (V2, "res-post-norm").

    Attributes:
      num_heads: attention heads.
      window_size: window side.
      shift_size: cyclic shift of the windows (0: plain W-MSA).
      mlp_ratio: MLP hidden width over the channels.
      v2: V2's post-norm and cosine attention.
      norm: bound LayerNorm; dense: bound Dense; activation: the MLP's (GELU).
      dropout: dropout after the attention projection and in the MLP.
      drop_path: stochastic depth rate of both branches.
      dtype: computation dtype.
    """

    num_heads: int
    window_size: int
    shift_size: int
    mlp_ratio: float
    v2: bool
    norm: layers.ModuleDef
    dense: layers.ModuleDef
    activation: layers.Activation
    dropout: float
    drop_path: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c = x.shape[-1]
        drop_path = layers.DropPath(self.drop_path, name="drop_path")
        dropout = nn.Dropout(self.dropout, deterministic=not train)
        attention = WindowAttention(
            num_heads=self.num_heads,
            window_size=self.window_size,
            shift_size=self.shift_size,
            cosine=self.v2,
            dense=self.dense,
            dropout=self.dropout,
            dtype=self.dtype,
            name="attn",
        )

        def mlp(y: jax.Array) -> jax.Array:
            y = dropout(self.activation(self.dense(int(c * self.mlp_ratio), name="fc1")(y)))
            return dropout(self.dense(c, name="fc2")(y))

        norm1, norm2 = self.norm(name="norm1"), self.norm(name="norm2")
        if self.v2:
            x = x + drop_path(norm1(attention(x, train=train)), deterministic=not train)
            return x + drop_path(norm2(mlp(x)), deterministic=not train)
        x = x + drop_path(attention(norm1(x), train=train), deterministic=not train)
        return x + drop_path(mlp(norm2(x)), deterministic=not train)


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch x patch`` patches projected to ``features`` (a strided
    convolution), then a LayerNorm (Sec. 3.1, "patch partition" and "linear embedding").

    Attributes:
      features: embedding channels; patch: patch side; conv: bound conv; norm: bound LayerNorm.
    """

    features: int
    patch: int
    conv: layers.ModuleDef
    norm: layers.ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = (self.patch, self.patch)
        x = self.conv(self.features, kernel, strides=kernel, padding="VALID", name="conv")(x)
        return self.norm(name="norm")(x)


class PatchMerging(nn.Module):
    """Each 2x2 neighbourhood concatenated to 4C channels, then a bias-free linear map to 2C with
    a LayerNorm before it (V1, on 4C) or after it (V2, on 2C). Odd maps are zero-padded.

    Attributes:
      norm: bound LayerNorm; dense: bound Dense; v2: the norm after the reduction.
    """

    norm: layers.ModuleDef
    dense: layers.ModuleDef
    v2: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w, c = x.shape[1:]
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        # torchvision's order: (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets.
        x = jnp.concatenate([x[:, i::2, j::2] for j in (0, 1) for i in (0, 1)], axis=-1)
        reduction = self.dense(2 * c, use_bias=False, name="reduction")
        norm = self.norm(name="norm")
        return norm(reduction(x)) if self.v2 else reduction(norm(x))


class SwinTransformer(layers.LayerNormContract):
    """Swin Transformer V1 or V2: patch embedding, four stages of window-attention blocks with
    patch merging between them, a final LayerNorm, global average pooling and the classifier.

    Features (``num_classes=0``): the pooled, normalised tokens of the last stage.

    Attributes (besides the contract's, :class:`~cnn_flax.models.layers.LayerNormContract`):
      embed_dim: channels of the first stage; stage ``s`` has ``embed_dim * 2 ** (s - 1)``.
      depths: blocks per stage.
      num_heads: attention heads per stage.
      window_size: side of the attention windows.
      patch_size: kernel and stride of the patch embedding.
      mlp_ratio: MLP hidden width over the channels.
      version: 1 (Swin) or 2 (Swin V2: post-norm, cosine attention, continuous position bias).
      num_classes: classifier outputs; 0 returns the features.
      dropout: dropout after each attention projection and in each MLP.
      drop_path: stochastic depth rate of the last block; block b of B uses rate * b / (B - 1).
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    version: int = 1
    num_classes: int = 1000
    dropout: float = 0.0
    drop_path: float = 0.2
    norm_epsilon: float = layers.family_default(1e-5)

    def _check(self) -> None:
        layers.check_rate("dropout", self.dropout)
        layers.check_rate("drop_path", self.drop_path)
        if self.version not in (1, 2):
            raise ValueError(f"version={self.version}; use 1 (Swin) or 2 (Swin V2).")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths={self.depths} and num_heads={self.num_heads} differ in length; give "
                "one head count per stage."
            )
        if self.window_size < (2 if self.version == 2 else 1):
            raise ValueError(f"window_size={self.window_size}; V2 needs at least 2, V1 at least 1.")
        for s, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**s) % heads:
                raise ValueError(
                    f"Stage {s + 1} has {self.embed_dim * 2**s} channels, not divisible by "
                    f"num_heads={heads}; pick heads that divide embed_dim * 2 ** stage."
                )

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        self._check()
        v2 = self.version == 2
        conv, norm, _ = layers.bind_contract(
            self, train=train, use_bias=True, kernel_init=layers.torch_linear_init
        )
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_init
        )

        x = x.astype(self.dtype)
        x = PatchEmbedding(self.embed_dim, self.patch_size, conv=conv, norm=norm, name="stem")(x)
        total = sum(self.depths)
        b = 0
        for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads), start=1):
            if s > 1:
                x = PatchMerging(norm=norm, dense=dense, v2=v2, name=f"downsample{s}")(x)
            for j in range(depth):
                x = SwinBlock(
                    num_heads=heads,
                    window_size=self.window_size,
                    shift_size=0 if j % 2 == 0 else self.window_size // 2,
                    mlp_ratio=self.mlp_ratio,
                    v2=v2,
                    norm=norm,
                    dense=dense,
                    activation=self.activation,
                    dropout=self.dropout,
                    drop_path=self.drop_path * b / max(1, total - 1),
                    dtype=self.dtype,
                    name=f"stage{s}_block{j}",
                )(x, train=train)
                b += 1
        x = norm(name="final_norm")(x)
        return layers.pooled_head(self, x, kernel_init=_init)

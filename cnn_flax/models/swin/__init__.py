"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows") and Swin Transformer V2 (Liu et al. 2022, "Swin Transformer V2: Scaling Up
Capacity and Resolution").

A hierarchy of Transformer stages at /4, /8, /16 and /32 of the input (Sec. 3.1): a 4x4/4 patch
embedding with a LayerNorm, then stages of blocks whose self-attention is restricted to
non-overlapping ``M x M`` windows (W-MSA, Sec. 3.2), every second block shifting the windows by
``M // 2`` with a cyclic roll and masking the attention between the pieces the roll brings
together (SW-MSA, Fig. 4), a learned bias per relative position inside a window (Sec. 3.2,
"Relative position bias") and patch merging (2x2 neighbours concatenated, LayerNorm, linear
4C -> 2C) between stages. V2 (Sec. 3.1-3.3) moves each LayerNorm behind its residual branch
("res-post-norm"), replaces the dot product with a cosine similarity scaled by a learned,
clamped per-head temperature, and computes the position bias with a small MLP from
log-spaced relative coordinates ("continuous relative position bias").

This is torchvision's ``swin_t/s/b`` and ``swin_v2_t/s/b``, number for number: windows of 7
(V2: 8), LayerNorm epsilon 1e-5, exact GELU, stochastic depth growing as
``drop_path * b / (B - 1)`` over all blocks. Like torchvision (and unlike the paper's code) the
window never shrinks to the feature map: a map that is not a multiple of the window is
zero-padded at the bottom and right after the norm (the padded tokens take part in attention
unmasked), the shift is dropped along an axis whose padded size is one window, and patch merging
zero-pads odd maps. V2's key projection has no bias: torchvision keeps one in the state dict but
zeroes it in every forward pass, and so does this module. NHWC throughout.

Parameter names: ``stem`` (``conv``, ``norm``), ``stage{s}_block{j}`` (``norm1``, ``attn``
(``qkv``, ``proj``, and ``relative_position_bias_table`` or, in V2, ``logit_scale``,
``cpb_fc1``, ``cpb_fc2``), ``norm2``, ``fc1``, ``fc2``), ``downsample{s}`` (``norm``,
``reduction``; the merging into stage ``s``), ``final_norm`` and ``head``.
"""

from __future__ import annotations

import functools

import numpy as np

from cnn_flax.models.features import FeatureNodes
from cnn_flax.models.registry import (
    Family,
    Recipe,
    model_info,
    torchvision_weights,
)
from cnn_flax.models.state_dict import StateDictReader
from cnn_flax.models.swin.model import (
    PatchEmbedding,
    PatchMerging,
    SwinBlock,
    SwinTransformer,
    WindowAttention,
)
from cnn_flax.models.swin.windows import (
    MASK_VALUE,
    effective_shift,
    relative_coords_table,
    relative_position_index,
    shift_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "FAMILY",
    "MASK_VALUE",
    "PatchEmbedding",
    "PatchMerging",
    "SwinBlock",
    "SwinTransformer",
    "WindowAttention",
    "convert_torchvision",
    "effective_shift",
    "from_torchvision",
    "relative_coords_table",
    "relative_position_index",
    "shift_mask",
    "window_partition",
    "window_reverse",
]


def from_torchvision(name: str, sd: StateDictReader) -> dict:
    """torchvision Swin (V1 or V2) state dict -> cnn_flax variables of registered model ``name``.

    See :func:`convert_torchvision`; the window size is the registered model's.
    """
    return convert_torchvision(sd, window_size=model_info(name).builder(num_classes=0).window_size)


def convert_torchvision(sd: StateDictReader, *, window_size: int) -> dict:
    """torchvision ``SwinTransformer`` state dict (any depths, widths, V1 or V2) -> variables.

    torchvision's ``features`` are ``0`` (patch embedding: conv ``0.0``, LayerNorm ``0.2``),
    then stage ``s`` at ``2s - 1`` and the merging after it at ``2s``; a block's MLP layers are
    ``mlp.0`` and ``mlp.3``. The constant buffers (``relative_position_index``, V2's
    ``relative_coords_table``) are recomputed by the model: they are checked against
    ``window_size``, not copied, so a checkpoint made for another window size is refused.
    """
    window = window_size
    params: dict = {
        "stem": {"conv": sd.conv("features.0.0", bias=True), "norm": sd.layer_norm("features.0.2")}
    }
    s = 1
    while sd.has(f"features.{2 * s - 1}.0.norm1.weight"):
        if s > 1:
            merge = f"features.{2 * s - 2}"
            params[f"downsample{s}"] = {
                "norm": sd.layer_norm(f"{merge}.norm"),
                "reduction": {"kernel": sd(f"{merge}.reduction.weight").T},
            }
        j = 0
        while sd.has(f"features.{2 * s - 1}.{j}.norm1.weight"):
            prefix = f"features.{2 * s - 1}.{j}"
            params[f"stage{s}_block{j}"] = {
                "norm1": sd.layer_norm(f"{prefix}.norm1"),
                "attn": _attention(sd, f"{prefix}.attn", window=window),
                "norm2": sd.layer_norm(f"{prefix}.norm2"),
                "fc1": sd.dense(f"{prefix}.mlp.0"),
                "fc2": sd.dense(f"{prefix}.mlp.3"),
            }
            j += 1
        s += 1
    params["final_norm"] = sd.layer_norm("norm")
    params["head"] = sd.dense("head")
    return {"params": params}


def _attention(sd: StateDictReader, prefix: str, *, window: int) -> dict:
    _check_buffer(sd, f"{prefix}.relative_position_index", relative_position_index(window), window)
    out = {"qkv": sd.dense(f"{prefix}.qkv"), "proj": sd.dense(f"{prefix}.proj")}
    if sd.has(f"{prefix}.logit_scale"):
        table = relative_coords_table(window)
        _check_buffer(sd, f"{prefix}.relative_coords_table", table, window)
        out["logit_scale"] = np.reshape(sd(f"{prefix}.logit_scale"), (-1,))
        out["cpb_fc1"] = sd.dense(f"{prefix}.cpb_mlp.0")
        out["cpb_fc2"] = {"kernel": sd(f"{prefix}.cpb_mlp.2.weight").T}
    else:
        out["relative_position_bias_table"] = sd(f"{prefix}.relative_position_bias_table")
    return out


def _check_buffer(sd: StateDictReader, key: str, expected: np.ndarray, window: int) -> None:
    """A constant the model recomputes must be what the checkpoint was made with."""
    got = sd(key)
    if got.size != expected.size or not np.allclose(got.reshape(-1), expected.reshape(-1)):
        raise ValueError(
            f"{key} (shape {got.shape}) is not that of the model's {window}x{window} windows: "
            "the checkpoint is of another Swin variant or window size; convert it for the model "
            "it was trained as (V1 windows are 7, V2's 8)."
        )


_PAPER = "Liu et al. 2021, Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
_PAPER_V2 = "Liu et al. 2022, Swin Transformer V2: Scaling Up Capacity and Resolution"


def _torchvision_node(name: str, module: str) -> str:
    """torchvision's node for our ``stage{i}_block{j}``: ``features.{2i - 1}`` (its patch
    embedding and patch merging layers take the even places)."""
    del name
    return f"features.{2 * int(module[len('stage')]) - 1}"


FAMILY = Family(
    name="swin",
    reference=_PAPER + "; torchvision swin_transformer",
    mappings={"torchvision": from_torchvision},
    # torchvision references/classification README, "SwinTransformer" (V2: the same command at
    # 256 px): AdamW lr 1e-3 at batch 1024 (8 x 128), weight decay 0.05 with none on norms,
    # biases and relative position tables ("kernels" decays only conv/dense kernels), cosine to
    # lr-min 1e-5 (1% of the peak) after 20 linear warm-up epochs from 1% of it, 300 epochs,
    # label smoothing 0.1, mixup 0.8 / cutmix 1.0, gradient norm clipped at 5, random erasing
    # 0.25, TrivialAugment Wide, an EMA of the weights (the base's 0.99998), repeated
    # augmentation x4, trained on full-size crops (224; V2: 256) and evaluated as the published
    # weights (the resize torchvision tuned after training). Not expressed: --interpolation
    # bicubic (the pipeline resizes bilinearly).
    recipe=Recipe(
        base="torchvision_v2",
        overrides={
            "num_epochs": 300.0,
            "optimizer.name": "adamw",
            "optimizer.lr": 1e-3 * 256 / 1024,
            "optimizer.weight_decay": 0.05,
            "optimizer.weight_decay_mask": "kernels",
            "schedule.warmup_epochs": 20.0,
            "schedule.warmup_init_factor": 0.01,
            "schedule.end_lr_factor": 1e-5 / 1e-3,
            "clip_grad_norm": 5.0,
            "data.augment.mixup_alpha": 0.8,
            "data.augment.cutmix_alpha": 1.0,
            "data.augment.random_erasing": 0.25,
            "data.augment.trivial_augment_wide": True,
            "data.repeated_augmentation": 4,
        },
        source="torchvision references/classification (SwinTransformer): AdamW lr 1e-3, wd 0.05 "
        "(none on norms, biases, position tables), cosine to 1e-5 after 20 warm-up epochs, 300 "
        "epochs, label smoothing 0.1, mixup 0.8/cutmix 1.0, clip 5, random erasing 0.25, "
        "TrivialAugment, EMA, repeated augmentation x4",
        target_source="torchvision IMAGENET1K_V1",
    ),
    features=FeatureNodes(("stage*",), torchvision=_torchvision_node),
)

# name: (embed_dim, depths, heads, stochastic depth, version), as torchvision's builders; V1
# windows are 7 at 224 px, V2's 8 at 256.
_VARIANTS = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, 1),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3, 1),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5, 1),
    "swin_v2_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, 2),
    "swin_v2_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3, 2),
    "swin_v2_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5, 2),
}  # fmt: skip
# Published weight sets per model, default first: torchvision's (tag, file, crop, resize,
# interpolation, top-1, top-5, GMACs, params, MB) and timm's Hub copies (model, crop, resize,
# interpolation). ``python -m cnn_flax.weights.published_tables`` writes the rows from
# torchvision's and timm's metadata; tests/models/test_weights_facts.py checks them against it.
# fmt: off
_PUBLISHED = {
    "swin_t": (
        torchvision_weights("IMAGENET1K_V1", "swin_t-704ceda3.pth", 224, 232, "bicubic", 81.474,
                            95.776, 4.491, 28_288_354, 108.19),
    ),
    "swin_s": (
        torchvision_weights("IMAGENET1K_V1", "swin_s-5e29d889.pth", 224, 246, "bicubic", 83.196,
                            96.36, 8.741, 49_606_258, 189.786),
    ),
    "swin_b": (
        torchvision_weights("IMAGENET1K_V1", "swin_b-68c6b09e.pth", 224, 238, "bicubic", 83.582,
                            96.64, 15.431, 87_768_224, 335.364),
    ),
    "swin_v2_t": (
        torchvision_weights("IMAGENET1K_V1", "swin_v2_t-b137f0e2.pth", 256, 260, "bicubic", 82.072,
                            96.132, 5.94, 28_351_570, 108.626),
    ),
    "swin_v2_s": (
        torchvision_weights("IMAGENET1K_V1", "swin_v2_s-637d8ceb.pth", 256, 260, "bicubic", 83.712,
                            96.816, 11.546, 49_737_442, 190.675),
    ),
    "swin_v2_b": (
        torchvision_weights("IMAGENET1K_V1", "swin_v2_b-781e5279.pth", 256, 272, "bicubic", 84.112,
                            96.864, 20.325, 87_930_848, 336.372),
    ),
}
# fmt: on


for _name, (_dim, _depths, _heads, _drop_path, _version) in _VARIANTS.items():
    _v1 = _PUBLISHED[_name][0]
    _crop = 224 if _version == 1 else 256
    FAMILY.register(
        _name,
        functools.partial(
            SwinTransformer,
            embed_dim=_dim,
            depths=_depths,
            num_heads=_heads,
            window_size=7 if _version == 1 else 8,
            version=_version,
            drop_path=_drop_path,
        ),
        reference=None if _version == 1 else _PAPER_V2 + "; torchvision swin_transformer",
        resolution=_crop,
        torchvision=_name,
        weights=_PUBLISHED[_name],
        recipe=FAMILY.recipe.but(
            {
                "data.image_size": _crop,
                "data.eval_crop_size": _crop,
                "data.eval_resize_size": _v1.transform.resize,
            },
            target_top1=_v1.top1,
        ),
    )

"""Train and eval image sizes of a data config, FixRes style (Touvron et al., 2019): the train
crop, and the eval resize + centre crop, are separate fields (configs/base.py), as torchvision's
--train-crop-size, --val-resize-size and --val-crop-size. No TensorFlow here: the trainer and
dry runs read these too."""

from __future__ import annotations

from typing import Any

from cnn_flax.models.registry import EvalTransform


def _positive(name: str, value: Any) -> int:
    if value is None or int(value) < 1:
        raise ValueError(f"data.{name} must be a positive number of pixels, got {value!r}")
    return int(value)


def train_size(data_config: Any) -> int:
    """The side of the train crops (data.image_size)."""
    return _positive("image_size", data_config.image_size)


def eval_sizes(data_config: Any) -> EvalTransform:
    """The evaluation transform of a data config: the crop is eval_crop_size, else image_size.
    With eval_resize_size set the ratio is crop / resize; unset, the ratio is eval_crop_ratio
    (exactly, so configs written before these fields evaluate as they did) and resize =
    round(crop / it)."""
    crop = data_config.eval_crop_size
    crop = train_size(data_config) if crop is None else _positive("eval_crop_size", crop)
    resize = data_config.eval_resize_size
    if resize is None:
        ratio = float(data_config.eval_crop_ratio)
        if not 0 < ratio <= 1:
            raise ValueError(f"data.eval_crop_ratio must be in (0, 1], got {ratio}")
        return EvalTransform(crop, round(crop / ratio), ratio=ratio)
    resize = _positive("eval_resize_size", resize)
    try:
        return EvalTransform(crop, resize)
    except ValueError:  # the transform's own rule, crop <= resize, said in the config's words
        raise ValueError(
            f"data.eval_resize_size={resize} is smaller than the eval crop ({crop}): a centre "
            "crop larger than the image would need padding; set eval_resize_size >= the crop"
        ) from None

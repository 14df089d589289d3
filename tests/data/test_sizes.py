"""FixRes-style sizes: train crop, eval resize and eval crop as separate config fields, and the
eval geometry against torchvision's Resize + CenterCrop. Runtime ~3 s."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnn_flax.configs.base import get_data_config
from cnn_flax.data import pipeline, preprocess, sizes
from tests.data.conftest import data_config


def _sizes(data_config) -> tuple[int, int, float]:
    transform = sizes.eval_sizes(data_config)
    return transform.resize, transform.crop, transform.crop_ratio


def test_old_configs_keep_their_eval_crop_ratio_and_v2_sets_each_size():
    config = get_data_config()  # image_size 224, eval_crop_ratio 0.875: torchvision's V1
    assert sizes.train_size(config) == 224
    assert _sizes(config) == (256, 224, 0.875)
    config.eval_crop_ratio = 0.95  # an exact ratio, not crop / round(crop / ratio)
    assert sizes.eval_sizes(config).crop_ratio == 0.95
    config.update(dict(image_size=176, eval_resize_size=232, eval_crop_size=224))  # V2 recipe
    assert sizes.train_size(config) == 176
    assert _sizes(config) == (232, 224, 224 / 232)
    config.eval_resize_size = 200
    with pytest.raises(ValueError, match="eval_resize_size=200 is smaller than the eval crop"):
        sizes.eval_sizes(config)
    config.eval_crop_size = 0
    with pytest.raises(ValueError, match="data.eval_crop_size must be a positive number"):
        sizes.eval_sizes(config)


@pytest.mark.torch
@pytest.mark.parametrize("resize,crop", [(232, 224), (28, 24)])
def test_eval_geometry_matches_torchvision_resize_and_centre_crop(resize, crop):
    """Our crop is fused with decoding (a centre window of crop / resize of the shorter side,
    then one antialiased resize); on a smooth image it must see what torchvision's
    Resize(resize) + CenterCrop(crop) sees, up to interpolation (mean < 1.5 levels)."""
    transforms = pytest.importorskip("torchvision.transforms")
    yy, xx = np.mgrid[0:220, 0:300]
    smooth = np.stack(
        [xx * 255 / 299, 127 + 120 * np.sin(yy / 15.0), (xx + yy) * 255 / 518], -1
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, "PNG")
    bilinear = transforms.InterpolationMode.BILINEAR
    reference = transforms.Compose(
        [transforms.Resize(resize, interpolation=bilinear), transforms.CenterCrop(crop)]
    )(Image.fromarray(smooth))
    ours = preprocess.preprocess_for_eval(
        tf.constant(buffer.getvalue()), image_size=crop, crop_ratio=crop / resize
    )
    diff = np.abs(np.asarray(reference, int) - ours.numpy().astype(int))
    assert ours.shape == (crop, crop, 3)
    assert diff.mean() < 1.5 and diff.max() <= 6, (diff.mean(), diff.max())


def test_pipeline_trains_and_evaluates_at_their_own_sizes(jpeg_folder, tmp_path):
    config = data_config(
        f"folder:{jpeg_folder}",
        str(tmp_path),
        image_size=16,
        eval_crop_size=24,
        eval_resize_size=28,
        augment=dict(inception_crop=True),
    )
    train = next(iter(pipeline.TrainStream(config, global_batch_size=4, seed=0)))
    evals = next(pipeline.eval_dataset(config, global_batch_size=4).as_numpy_iterator())
    assert train["image"].shape == (4, 16, 16, 3) and evals["image"].shape == (4, 24, 24, 3)

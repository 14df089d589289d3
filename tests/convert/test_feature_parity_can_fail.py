"""The feature-map parity check (in tests/convert/test_parity.py, beside the logits') can fail:
a level read one block early differs from torchvision's node."""

import dataclasses

import numpy as np
import pytest

from cnn_flax.models import create_model
from tests.helpers import input_resolution

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnn_flax.convert import from_torchvision  # noqa: E402
from tests.convert.test_parity import torchvision_maps  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402


@pytest.mark.torch
def test_feature_parity_finds_a_wrong_node():
    name = "resnet18"
    res = input_resolution(name)
    tv = build_torchvision(name, torchvision, resolution=res)
    variables = from_torchvision(name, tv.state_dict())
    model = create_model(name, features_only=True, out_indices=(2,))
    images = np.random.default_rng(0).standard_normal((1, res, res, 3)).astype(np.float32)
    (level,) = model.levels
    theirs = torchvision_maps(tv, images, model.levels, family="resnet")[level.torchvision]
    (right,) = model.apply(variables, images, train=False)
    assert np.max(np.abs(np.asarray(right) - theirs)) < 1e-4
    early = model.clone(levels=(dataclasses.replace(level, module="stage2_block0"),))
    (wrong,) = early.apply(variables, images, train=False)
    assert np.max(np.abs(np.asarray(wrong) - theirs)) > 1e-2

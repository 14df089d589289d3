"""Parameter counts: torchvision's for models it has, the paper's for the others."""

import pytest

from cnn_flax.models import list_models, model_info
from tests.helpers import param_count, reference_rows

WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]
PAPER_ONLY = [n for n in list_models() if not model_info(n).torchvision]


@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_params_match_reference_csv(name):
    rows = reference_rows()
    tv_name = model_info(name).torchvision
    if tv_name not in rows:
        pytest.skip(f"{tv_name} is not in shared/reference/torchvision_models.csv")
    assert param_count(name) == int(rows[tv_name]["params_in_weights"])


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_params_match_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    from tests.convert.torch_reference import build_torchvision

    tv = build_torchvision(name, torchvision)
    expected = sum(p.numel() for p in tv.parameters())
    assert param_count(name) == expected


@pytest.mark.parametrize("name", PAPER_ONLY)
def test_params_match_paper(name):
    info = model_info(name)
    assert info.paper_params is not None, f"{name} needs paper_params in its registration"
    assert param_count(name) == info.paper_params

"""Parameter counts: torchvision's for models it has, the paper's for the others."""

import decimal

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
        pytest.skip(f"{tv_name} is not in tests/facts/torchvision_models.csv")
    # The default constructor's count (GoogLeNet's includes its two auxiliary classifiers).
    assert param_count(name) == int(rows[tv_name]["params_default_constructor"])


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_params_match_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    from tests.convert.torch_reference import build_torchvision

    tv = build_torchvision(name, torchvision)
    expected = sum(p.numel() for p in tv.parameters())
    assert param_count(name) == expected


def parse_paper_count(text: str) -> tuple[float, float]:
    """``"4.2M"`` -> (4.2e6, 0.05e6): the value and half a unit of its last printed digit."""
    number = decimal.Decimal(text.rstrip("MK"))
    scale = {"M": 1e6, "K": 1e3}[text[-1]]
    half_ulp = float(decimal.Decimal(1).scaleb(number.as_tuple().exponent)) / 2
    return float(number) * scale, half_ulp * scale


def test_parse_paper_count():
    assert parse_paper_count("4.2M") == pytest.approx((4.2e6, 0.05e6))
    assert parse_paper_count("0.27M") == pytest.approx((0.27e6, 0.005e6))


@pytest.mark.parametrize("name", PAPER_ONLY)
def test_params_match_paper(name):
    info = model_info(name)
    if info.paper_params is None:
        pytest.skip(f"{name}: the paper prints no parameter count (see its family's tests)")
    value, tolerance = parse_paper_count(info.paper_params)
    count = param_count(name)
    assert abs(count - value) <= tolerance, f"{name}: {count} vs paper {info.paper_params}"

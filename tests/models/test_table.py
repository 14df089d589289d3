"""`python -m cnn_flax.models`: the table, its MAC counter and torchvision's reference figures."""

import jax
import jax.numpy as jnp
import pytest

from cnn_flax.cli.models import main
from cnn_flax.models import list_models, model_info
from cnn_flax.models.counting import count_macs, describe
from tests.helpers import param_count, reference_rows

# One model per kind of layer the counter must handle: plain convs and dense layers (alexnet),
# bottlenecks (resnet50), grouped convs (resnext), depthwise convs with squeeze-excite
# (efficientnet_b0) and a model whose eval pass skips its aux heads.
GMACS_MODELS = [
    "alexnet",
    "resnet50",
    "resnext50_32x4d",
    "efficientnet_b0",
    "googlenet",
]


def _registered(names):
    return [n if n in list_models() else pytest.param(n, marks=pytest.mark.skip) for n in names]


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("groups", [1, 4])
def test_count_macs_counts_every_kernel_tap(padding, groups):
    # XLA's cost analysis skips taps on padding; torchvision's convention (and ours) counts them.
    x = jax.ShapeDtypeStruct((2, 9, 9, 8), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 8 // groups, 16), jnp.float32)
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x,
        w,
        (2, 2),
        ((padding, padding),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    out = (9 + 2 * padding - 3) // 2 + 1
    assert count_macs(conv, x, w) == 2 * out * out * 16 * 3 * 3 * (8 // groups)


def test_count_macs_sees_nested_and_dense():
    inner = jax.jit(lambda a, b: jnp.maximum(a @ b, 0.0))
    fn = lambda a, b: jax.nn.relu(inner(a, b)).sum() + jnp.einsum("ij,jk->ik", a, b).sum()
    a = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    b = jax.ShapeDtypeStruct((8, 5), jnp.float32)
    assert count_macs(fn, a, b) == 2 * 4 * 8 * 5


@pytest.mark.parametrize("name", _registered(GMACS_MODELS))
def test_gmacs_match_torchvision(name):
    row = describe(name)
    expected = float(reference_rows()[model_info(name).torchvision]["gmacs"])
    # torchvision prints three decimals; our count must agree to that rounding.
    assert row.gmacs == pytest.approx(expected, abs=6e-4), f"{name}: {row.gmacs:.4f} GMACs"


@pytest.mark.parametrize("name", _registered(["alexnet", "resnet20", "mobilenet_v1_050"]))
def test_params_match_param_count(name):
    row = describe(name)
    assert row.params == param_count(name, num_classes=row.num_classes)


def test_cifar_models_count_a_ten_way_head():
    if "resnet20" not in list_models():
        pytest.skip("resnet20 is not registered")
    row = describe("resnet20")
    assert (row.num_classes, round(row.params / 1e6, 2)) == (10, 0.27)  # He et al. 2016, Table 6


def test_table_for_one_family(capsys):
    assert main(["--family", "alexnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "classes"]
    assert lines[1].split() == [
        "alexnet",
        "alexnet",
        "1000",
        "61.10",
        "0.714",
        "224",
        "56.522",
        "(V1)",
    ]


def test_markdown_table(capsys):
    assert main(["--markdown", "--family", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "| alexnet | alexnet | 1000 | 61.10 | 0.714 | 224 | 56.522 (V1) |" in out.splitlines()


def test_unknown_family_is_one_clean_line(capsys):
    assert main(["--family", "transformer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "'transformer'" in err and "alexnet" in err


def test_default_weights_facts_match_the_reference_csv():
    """The facts the table prints, against torchvision 0.29.1's figures kept in tests/facts."""
    rows = reference_rows()
    checked = set()
    for name in list_models():
        info = model_info(name)
        ref = info.default_weights("torchvision")
        if ref is None or info.torchvision not in rows:
            continue  # tests/test_weights_facts.py checks every entry against torchvision itself
        row = rows[info.torchvision]
        assert (ref.tag, ref.top1, ref.top5, ref.gmacs, ref.params, ref.transform.crop) == (
            row["weights_entry"],
            float(row["top1"]),
            float(row["top5"]),
            float(row["gmacs"]),
            int(row["params_in_weights"]),
            int(row["eval_crop"]),
        ), name
        checked.add(info.torchvision)
    registered = {model_info(n).torchvision for n in list_models()}
    assert checked == registered & set(rows)


def test_names_lists_every_model_without_counting(capsys, monkeypatch):
    """``--names`` is the quick listing: the full table counts every model (minutes)."""
    import cnn_flax.cli.models as table

    def no_counting(*args, **kwargs):
        raise AssertionError("--names must not count parameters or MACs")

    monkeypatch.setattr(table, "describe", no_counting)
    assert main(["--names"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert lines[0].split()[1:] == [
        model_info(list_models()[0]).family,
        str(model_info(list_models()[0]).resolution),
    ]

"""The families' published weight sets against torchvision's and timm's own metadata.

torchvision ships the metadata of every weights entry in its code and timm its
``pretrained_cfgs`` (no download needed for either). Every model that names a torchvision
counterpart carries every entry of its ``*_Weights`` enum, torchvision's default first, each with
torchvision's URL, accuracy, parameter count, operations, file size and evaluation transform;
every timm row names a timm ImageNet-1k classifier on the Hub with timm's input size, crop, resize,
interpolation, mean and std, and the architectures the family's timm mapping reads are all there.
"""

import math

import pytest

from cnn_flax.models import list_models, model_info
from cnn_flax.models.registry import TORCHVISION_URL

torchvision = pytest.importorskip("torchvision")

WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]
WITH_TIMM = [n for n in list_models() if any(w.source == "timm" for w in model_info(n).weights)]


def _number(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _metadata(entry):
    transform = entry.transforms()
    metrics = entry.meta["_metrics"]["ImageNet-1K"]
    return {
        "url": entry.url,
        "top1": _number(metrics["acc@1"]),
        "top5": _number(metrics["acc@5"]),
        "params": entry.meta["num_params"],
        "gmacs": entry.meta["_ops"],
        "file_mb": entry.meta["_file_size"],
        "crop": transform.crop_size[0],
        "resize": transform.resize_size[0],
        "interpolation": transform.interpolation.value,
        "mean": tuple(transform.mean),
        "std": tuple(transform.std),
    }


def _ours(w):
    return {
        "url": w.url,
        "top1": w.top1,
        "top5": w.top5,
        "params": w.params,
        "gmacs": w.gmacs,
        "file_mb": w.file_mb,
        "crop": w.transform.crop,
        "resize": w.transform.resize,
        "interpolation": w.transform.interpolation,
        "mean": tuple(w.mean),
        "std": tuple(w.std),
    }


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_torchvision_weights_facts(name):
    info = model_info(name)
    entries = [w for w in info.weights if w.source == "torchvision"]
    enum = torchvision.models.get_model_weights(info.torchvision)
    assert entries, f"{name}: no torchvision weights entry"
    assert entries[0].tag == enum.DEFAULT.name, f"{name}: the first entry must be the default"
    assert sorted(w.tag for w in entries) == sorted(e.name for e in enum), f"{name}: every entry"
    for w in entries:
        assert _ours(w) == _metadata(enum[w.tag]), f"{name} {w.tag}"
        assert w.url.startswith(TORCHVISION_URL)
        # torch hub's file name carries the start of the file's SHA-256.
        assert len(w.sha256_prefix) >= 8 and w.url.split("/")[-1].count(w.sha256_prefix) == 1
    # The model's default evaluation transform is that of its default weights.
    assert info.transform == entries[0].transform


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TIMM)
def test_timm_weights_facts(name):
    timm = pytest.importorskip("timm")
    from timm.models import get_pretrained_cfg

    for w in (w for w in model_info(name).weights if w.source == "timm"):
        cfg = get_pretrained_cfg(w.tag)
        assert cfg is not None, f"{name}: timm has no {w.tag}"
        assert (w.hf_hub_id, cfg.num_classes) == (cfg.hf_hub_id, 1000)
        assert (w.transform.crop, w.transform.resize) == (
            cfg.input_size[-1],
            math.floor(cfg.input_size[-1] / cfg.crop_pct),
        ), w.tag
        assert w.transform.interpolation == cfg.interpolation, w.tag
        assert (tuple(w.mean), tuple(w.std)) == (tuple(cfg.mean), tuple(cfg.std)), w.tag
        assert w.url == "" and w.top1 is None  # timm ships no results table offline
    del timm


@pytest.mark.torch
def test_every_timm_classifier_of_the_mapped_architectures_is_listed():
    """The rows cover every ImageNet-1k classifier timm publishes for the architectures whose
    naming a family's timm mapping reads (cnn_flax.weights.published_tables names them)."""
    timm = pytest.importorskip("timm")
    from cnn_flax.weights.published_tables import TIMM_ARCHITECTURES, timm_rows

    for name in TIMM_ARCHITECTURES:
        ours = [w.tag for w in model_info(name).weights if w.source == "timm"]
        assert ours == [r["model"] for r in timm_rows(name)], name
    assert len(TIMM_ARCHITECTURES) == len(WITH_TIMM)
    del timm


def test_weights_listing(capsys):
    from cnn_flax.cli.models import main

    assert main(["--weights", "resnet50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "timm does not record" in lines[0]
    assert lines[1].split() == [
        "resnet50",
        "IMAGENET1K_V2",
        "80.858",
        "25.6M",
        "97.8",
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ]
    assert "timm:resnet50.a1_in1k" in lines[3]

"""The families' published-weights facts against torchvision's own weights metadata.

torchvision ships the metadata of every weights entry in its code (no download needed):
accuracy, parameter count, operations and the evaluation transform. Every ``Weights`` entry
with ``source="torchvision"`` must agree with it exactly, and every model that names a
torchvision counterpart must carry torchvision's default entry first.
"""

import pytest

from cnn_flax.models import list_models, model_info

torchvision = pytest.importorskip("torchvision")

WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]


def _metadata(tv_name: str, tag: str):
    entry = torchvision.models.get_model_weights(tv_name)[tag]
    transform = entry.transforms()
    metrics = entry.meta["_metrics"]["ImageNet-1K"]
    return {
        "top1": metrics["acc@1"],
        "top5": metrics["acc@5"],
        "params": entry.meta["num_params"],
        "gmacs": entry.meta["_ops"],
        "crop": transform.crop_size[0],
        "resize": transform.resize_size[0],
        "interpolation": transform.interpolation.value,
    }


@pytest.mark.torch
@pytest.mark.parametrize("name", WITH_TORCHVISION)
def test_torchvision_weights_facts(name):
    info = model_info(name)
    entries = [w for w in info.weights if w.source == "torchvision"]
    assert entries, f"{name}: no torchvision weights entry"
    default_tag = torchvision.models.get_model_weights(info.torchvision).DEFAULT.name
    assert entries[0].tag == default_tag, f"{name}: the first entry must be torchvision's default"
    for w in entries:
        ours = {
            "top1": w.top1,
            "top5": w.top5,
            "params": w.params,
            "gmacs": w.gmacs,
            "crop": w.transform.crop,
            "resize": w.transform.resize,
            "interpolation": w.transform.interpolation,
        }
        assert ours == _metadata(info.torchvision, w.tag), f"{name} {w.tag}"
    # The model's default evaluation transform is that of its default weights.
    assert info.transform == entries[0].transform

"""torchvision GoogLeNet -> cnn_flax GoogLeNet.

Accepts both layouts torchvision produces: the default constructor's state dict, with the two
auxiliary classifiers (``aux1.*``, ``aux2.*``), and that of ``googlenet(weights=...)``, whose
auxiliary heads are removed after loading. Weights without auxiliary heads need the model
overrides ``aux_logits=False`` (and, for the published IMAGENET1K_V1 weights,
``transform_input=True``)::

    variables = from_torchvision("googlenet", sd, aux_logits=False)
    model = create_model("googlenet", aux_logits=False, transform_input=True)
"""

from __future__ import annotations

from cnn_flax.convert.common import StateDictReader, dense_kernel_from_nchw_flatten
from cnn_flax.models import create_model

# Our branch name -> torchvision's BasicConv2d prefix inside an Inception module.
_BRANCHES = {
    "branch1": "branch1",
    "branch2_reduce": "branch2.0",
    "branch2": "branch2.1",
    "branch3_reduce": "branch3.0",
    "branch3": "branch3.1",
    "branch4_proj": "branch4.1",
}


def convert(name: str, sd: StateDictReader) -> dict:
    model = create_model(name)
    params: dict = {}
    stats: dict = {}

    def conv_bn(ours: tuple[str, ...], theirs: str) -> None:
        p, s = sd.conv_bn(f"{theirs}.conv", f"{theirs}.bn")
        _nest(params, ours, p)
        _nest(stats, ours, s)

    for stem in ("conv1", "conv2", "conv3"):
        conv_bn((stem,), stem)
    for i, stage in enumerate(model.stages):
        for j in range(len(stage)):
            block = f"inception{3 + i}{chr(ord('a') + j)}"
            for ours, theirs in _BRANCHES.items():
                conv_bn((block, ours), f"{block}.{theirs}")
    for aux in ("aux1", "aux2"):
        if not sd.has(f"{aux}.fc2.weight"):
            continue  # torchvision's published layout has no auxiliary heads
        conv_bn((aux, "conv"), f"{aux}.conv")
        params[aux]["fc1"] = {
            "kernel": dense_kernel_from_nchw_flatten(sd(f"{aux}.fc1.weight"), 128, 4, 4),
            "bias": sd(f"{aux}.fc1.bias"),
        }
        params[aux]["fc2"] = sd.dense(f"{aux}.fc2")
    params["head"] = sd.dense("fc")
    return {"params": params, "batch_stats": stats}


def _nest(tree: dict, path: tuple[str, ...], value: dict) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value

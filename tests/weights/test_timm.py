"""timm state dicts -> cnn_flax, against timm itself: every family with a "timm" mapping.

timm's random initialisation (BatchNorm statistics calibrated, constants randomised, as the
torchvision parity tests do), saved as timm publishes its files (.pth or .safetensors, named after
the timm model: torch hub and Hugging Face keep that name in the path), loaded through the one
entry point with the format detected from the keys, logits compared in eval mode. The TensorFlow
ports ("tf_") also check the padding switch end to end: cnn_flax.weights reads TF padding and
BatchNorm epsilon off the file name.
"""

import jax
import numpy as np
import pytest

from cnn_flax import weights
from cnn_flax.models import create_model
from tests.convert.torch_reference import realistic_random

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.torch

RES = 32
# (timm model, cnn_flax model, file name as timm's caches name it). Squeeze-and-excitation blocks
# (one shared reader for EfficientNet-B and MobileNet v3) are covered by MobileNet v3.
CASES = [
    ("tf_efficientnet_lite0", "efficientnet_lite0", "tf_efficientnet_lite0-0aa007d2.pth"),
    ("mobilenetv2_100", "mobilenet_v2", "mobilenetv2_100.ra_in1k/model.safetensors"),
    ("mobilenetv3_large_100", "mobilenet_v3_large", "mobilenetv3_large_100-427764d5.pth"),
    ("tf_mobilenetv3_small_100", "mobilenet_v3_small", "tf_mobilenetv3_small_100.in1k/m.pth"),
    ("resnet18", "resnet18", "resnet18.a1_in1k/model.safetensors"),
]


def _save(state_dict, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: v.numpy() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)


@pytest.mark.parametrize(("timm_name", "name", "file_name"), CASES)
def test_timm_logits(timm_name, name, file_name, tmp_path):
    torch.manual_seed(0)
    reference = realistic_random(
        timm.create_model(timm_name, pretrained=False, num_classes=10), seed=0, resolution=RES
    )
    path = tmp_path / file_name
    _save(reference.state_dict(), path)
    variables, provenance = weights.load(name, path)
    assert provenance.format in ("timm", "torchvision")  # ResNets: timm uses torchvision's names
    assert provenance.tensors == len(reference.state_dict())
    tf_port = timm_name.startswith("tf_")
    if name != "resnet18":
        assert provenance.format == "timm"
        assert provenance.overrides["padding"] == ("tf_same" if tf_port else "symmetric")
        assert provenance.overrides["bn_epsilon"] == (1e-3 if tf_port else 1e-5)

    x = np.random.default_rng(1).standard_normal((2, RES, RES, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    model = create_model(name, num_classes=10, **provenance.overrides)
    ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    scale = np.max(np.abs(theirs))
    assert scale > 0.1, "degenerate reference logits"
    assert np.max(np.abs(ours - theirs)) <= 1e-4 * max(1.0, scale), (ours, theirs)

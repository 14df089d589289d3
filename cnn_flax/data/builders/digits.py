"""scikit-learn's bundled 8x8 handwritten digits as a tfds dataset, for the offline quickstart.

The data (1,797 images, UCI "Optical Recognition of Handwritten Digits", Alpaydin & Kaynak 1998)
ships inside scikit-learn, so preparing this dataset needs no network. Images are stored as uint8
RGB PNGs: the 0..16 grey levels are scaled to 0..255, the 8x8 digit is enlarged by an integer
factor (nearest neighbour, so strokes stay crisp) and zero-padded to the configured size, like
MNIST's 20x20 digits padded into 28x28. The split is deterministic: every fifth image (index % 5
== 0) is the test split, the rest train (1,437 / 360).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

_TEST_EVERY = 5


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
    """Stored image side; the digit is enlarged by an integer factor and padded to it."""

    image_size: int = 32


def render_digit(pixels_0_16: np.ndarray, *, image_size: int) -> np.ndarray:
    """One 8x8 digit (values 0..16) -> uint8 RGB [image_size, image_size, 3].

    Args:
      pixels_0_16: the 8x8 array from `sklearn.datasets.load_digits().images`.
      image_size: output side, at least 8.

    Returns:
      The digit, scaled to 0..255, enlarged by `image_size // 8` and centred with zero padding.
    """
    if image_size < 8:
        raise ValueError(f"digits image_size must be >= 8, got {image_size}")
    grey = np.clip(np.rint(np.asarray(pixels_0_16, np.float64) * (255.0 / 16.0)), 0, 255)
    factor = image_size // 8
    big = np.kron(grey.astype(np.uint8), np.ones((factor, factor), np.uint8))
    out = np.zeros((image_size, image_size), np.uint8)
    top = (image_size - big.shape[0]) // 2
    out[top : top + big.shape[0], top : top + big.shape[1]] = big
    return np.repeat(out[:, :, None], 3, axis=2)


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits (10 classes) as RGB images; offline, deterministic split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        DigitsConfig(name=str(size), image_size=size, description=f"{size}x{size} RGB")
        for size in (32, 16, 64, 224)
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # offline: the data ships with scikit-learn
        return {
            "train": self._generate_examples(test=False),
            "test": self._generate_examples(test=True),
        }

    def _generate_examples(self, *, test: bool):
        from sklearn.datasets import load_digits

        digits = load_digits()
        size = self.builder_config.image_size
        for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
            if (index % _TEST_EVERY == 0) == test:
                yield index, {"image": render_digit(pixels, image_size=size), "label": int(label)}

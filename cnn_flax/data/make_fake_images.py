"""Writes an ImageNet-like folder of JPEGs for benchmarks and tests, from scikit-image's photos.

    python -m cnn_flax.data.make_fake_images --out=DIR --classes=10 --per-class=100

Each image is a random crop (15-100% of the area, aspect 3/4-4/3) of one of scikit-image's
bundled sample photos (skimage.data), resized to 400-500 px wide with ImageNet's typical 4:3-ish
shape, saved as a quality-90 JPEG: the sizes and decode cost of real ImageNet training files.
Class c draws from photo c mod (number of photos), so the labels carry some signal. With
--val-per-class > 0 the layout is DIR/train/<class>/ and DIR/val/<class>/, else DIR/<class>/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel", "horse",
)  # fmt: skip


def _photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in _PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(image[:, :, :3]).astype(np.uint8))
    return photos


def fake_image(photo: np.ndarray, rng: np.random.Generator):
    """A random crop of `photo` resized to 400-500 px wide (PIL image)."""
    from PIL import Image

    height, width = photo.shape[:2]
    for _ in range(20):
        area = rng.uniform(0.15, 1.0) * height * width
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))  # width / height
        w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if w <= width and h <= height:
            break
    else:
        w, h = width, height
    y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    out_w = int(rng.integers(400, 501))
    out_h = int(round(out_w * rng.uniform(0.66, 0.9)))
    crop = Image.fromarray(photo[y : y + h, x : x + w])
    return crop.resize((out_w, out_h), Image.BILINEAR)


def make_fake_images(
    out: str, *, classes: int, per_class: int, val_per_class: int = 0, seed: int = 0
) -> Path:
    """Writes the images (see module docstring) and returns the dataset root."""
    from tqdm import tqdm

    root = Path(out)
    photos = _photos()
    rng = np.random.default_rng(seed)
    splits = [("train", per_class), ("val", val_per_class)] if val_per_class else [("", per_class)]
    total = classes * (per_class + val_per_class)
    with tqdm(total=total, desc=f"Writing JPEGs to {root}", unit=" images") as bar:
        for split, count in splits:
            for c in range(classes):
                folder = root / split / f"class_{c:03d}" if split else root / f"class_{c:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    image = fake_image(photos[c % len(photos)], rng)
                    image.save(folder / f"{split or 'img'}_{c:03d}_{i:05d}.JPEG", quality=90)
                    bar.update(1)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_fake_images(
        args.out,
        classes=args.classes,
        per_class=args.per_class,
        val_per_class=args.val_per_class,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()

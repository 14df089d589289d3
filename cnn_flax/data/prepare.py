"""Prepares a dataset once, with progress bars, so training starts reading straight away.

    python -m cnn_flax.data.prepare imagenet2012 [--data_dir=DIR] [--manual_dir=DIR]
    python -m cnn_flax.data.prepare cifar10 | imagenette/320px-v2 | digits | folder:PATH

ImageNet needs the two archives from https://image-net.org in the manual dir
(default <data_dir>/downloads/manual): ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
"""

from __future__ import annotations

import argparse
import os
import sys
import types

from cnn_flax.data.datasets import SUPPORTED, resolve_data_dir

_IMAGENET_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def default_manual_dir(data_dir: str | None) -> str:
    root = data_dir or os.path.expanduser("~/tensorflow_datasets")
    return os.path.join(root, "downloads", "manual")


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None):
    """Builds `name` into `data_dir` (tfds' download_and_prepare, or the folder check)."""
    import tensorflow_datasets as tfds

    from cnn_flax.data import datasets

    data_dir = resolve_data_dir(data_dir)
    if name.startswith("folder:"):
        from cnn_flax.data.builders.folder import index_folder

        return index_folder(name[len("folder:") :], data_dir=data_dir)
    if name.partition("/")[0] == "digits":
        # get_source reads a data config's fields by attribute, as a recipe's config.data has them
        spec = types.SimpleNamespace(name=name, data_dir=data_dir, max_image_pixels=0)
        return datasets.get_source(spec)
    if name.partition("/")[0] not in ("imagenet2012", "imagenette", "cifar10", "cifar100"):
        raise ValueError(f"unknown dataset {name!r}; supported: " + "; ".join(SUPPORTED))
    download_config = None
    if name.startswith("imagenet2012"):
        manual_dir = manual_dir or default_manual_dir(data_dir)
        missing = [f for f in _IMAGENET_FILES if not os.path.exists(os.path.join(manual_dir, f))]
        if missing:
            raise FileNotFoundError(
                f"imagenet2012: {', '.join(missing)} not found in {manual_dir}; download them "
                "from https://image-net.org (ILSVRC2012) or pass --manual_dir"
            )
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="; ".join(SUPPORTED))
    parser.add_argument("--data_dir", default=None, help="default: $TFDS_DATA_DIR or tfds'")
    parser.add_argument("--manual_dir", default=None, help="ImageNet's archives")
    args = parser.parse_args(argv)
    try:
        prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"{args.name}: prepared")


if __name__ == "__main__":
    main()

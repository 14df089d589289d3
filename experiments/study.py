"""What a study is: a baseline config and variants that each change one thing.

A study folder (``experiments/<name>/``) holds ``config.py`` with ``STUDY``, a :class:`Study`.
The runner (:mod:`experiments.run`) trains every variant for every seed through the normal
training system and writes ``results.csv``, ``curves.csv``, ``summary.md`` and ``plot.png``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class Variant:
    """One arm of a study.

    Attributes:
      label: short name used in tables and plots.
      changes: config fields (dotted paths) this arm sets, e.g. ``{"model": "plain56"}``;
        the study's docstring says which single idea they change against the baseline.
      group: arms in the same group are compared with each other (e.g. "cifar", "imagenet").
    """

    label: str
    changes: Mapping[str, Any]
    group: str = ""


@dataclasses.dataclass(frozen=True)
class FullScale:
    """The study at the scale of its paper: ``python -m experiments.run NAME --scale=full``.

    A real data set at its native resolution, the paper's regime of epochs, batch, recipe and
    seeds; what the CPU design shrinks. The runner builds and validates every arm's config from it
    (``--plan`` prints them and the accelerator-hours estimate without training).

    Attributes:
      dataset: a ``cnn_flax.data`` name (``cifar10``, ``cifar100``, ``imagenette/320px-v2``).
      image_size: the data set's native resolution (or the paper's).
      train_images: images in the training split, for the steps and the estimate.
      num_classes: classes of the data set (for the counted heads).
      epochs: epochs per run; steps are ``epochs * train_images / batch_size``.
      batch_size: global batch.
      seeds: seeds per arm.
      basis: where the regime comes from (paper, table, section), said in the README.
      changes: config fields set for every arm after the arm's own changes (recipe, augmentation,
        normalisation), e.g. ``configs.recipes.CIFAR10_RESNET``.
      arm_changes: per arm label, fields set after ``changes`` (e.g. a ViT's patch size).
      variants: indices of the arms run at full scale (default: all).
      lr_sweep: rates tried per arm on a held-out part of the training split, as ``--lr-sweep``
        takes them (``"0.1"``, or ``"x2"`` for twice the arm's own), or ``None``.
      warmup_epochs: learning-rate warm-up, or ``None`` for the recipe's.
    """

    dataset: str
    image_size: int
    train_images: int
    num_classes: int
    epochs: float
    batch_size: int
    seeds: tuple[int, ...]
    basis: str
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    arm_changes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    variants: tuple[int, ...] | None = None
    lr_sweep: tuple[str, ...] | None = None
    warmup_epochs: float | None = None

    @property
    def steps(self) -> int:
        return max(1, round(self.epochs * self.train_images / self.batch_size))


@dataclasses.dataclass(frozen=True)
class Study:
    """A question, a baseline config and the variants that answer it.

    Attributes:
      name: folder name under ``experiments/``.
      question: one sentence.
      base_config: builds the baseline training config for a data set name and image size.
      variants: the arms.
      plot: ``"curves"`` (training loss against steps) or ``"bars"`` (accuracy with params/MACs).
      default_steps: training steps per run at small scale.
      full: the full-scale preset (``--scale=full``), or ``None`` where none is declared yet.
      metrics: the columns of ``results.csv`` whose intervals over seeds ``summary.md`` gives
        (the one the claim is about first).
    """

    name: str
    question: str
    base_config: Callable[..., ml_collections.ConfigDict]
    variants: tuple[Variant, ...]
    plot: str = "bars"
    default_steps: int = 150
    full: FullScale | None = None
    metrics: tuple[str, ...] = ("eval_top1",)


def set_path(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets ``config.a.b = value`` for ``path == "a.b"``.

    Only ``model_overrides`` may gain new fields (they are the model's own options); any other
    unknown path is an error, so a typo cannot silently leave the baseline unchanged.
    """
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise KeyError(f"config has no {part!r} on the way to {path!r}")
        node = node[part]
    if leaf not in node and parents != ["model_overrides"]:
        raise KeyError(f"config has no field {path!r}")
    with node.unlocked():
        node[leaf] = value


def digits_config(
    *,
    dataset: str = "digits",
    image_size: int | None = None,
    default_image_size: int = 16,
    train_percent: int | None = None,
) -> ml_collections.ConfigDict:
    """The small-scale baseline: the quickstart recipe (SGD, cosine) on an offline data set.

    Studies change the model (or one of its fields) on top of this; the runner sets steps, batch
    size and seed. ``train_percent`` trains on the first part of the digits' training split
    only (``train[:P%]``, at most 80 so that an lr sweep's held-out fifth stays unseen): the full
    1,437 images saturate near 99% in a few epochs, a tenth of them leaves room for arms to
    differ. A full-scale preset resets ``data.train_split`` with its recipe.
    """
    from cnn_flax.configs import get_config

    config = get_config("quickstart")
    config.data.name = dataset
    config.data.image_size = image_size or default_image_size
    if train_percent is not None and dataset.startswith("digits"):
        if not 0 < train_percent <= 80:
            raise ValueError(f"train_percent must be in (0, 80], got {train_percent}")
        config.data.train_split = f"train[:{train_percent}%]"
    return config


# Sizes at which the ``digits`` builder stores its images (cnn_flax/data/builders/digits.py).
_DIGITS_SIZES = (16, 32, 64, 224)


def match_stored_size(config: ml_collections.ConfigDict) -> None:
    """Points a plain ``digits`` data set at the stored size nearest above the image size.

    The digits builder stores the 8x8 digits enlarged to a few fixed sizes; reading the closest
    one keeps the strokes sharp and the resize (if any) small.
    """
    if config.data.name != "digits":
        return
    size = int(config.data.image_size)
    stored = next((s for s in _DIGITS_SIZES if s >= size), _DIGITS_SIZES[-1])
    config.data.name = f"digits/{stored}"


IMAGENETTE = "imagenette/320px-v2"
IMAGENETTE_TRAIN_IMAGES = 9_469


def imagenette_changes(**extra: Any) -> dict[str, Any]:
    """The config changes of a full-scale preset on Imagenette at 224 px (ImageNet's ten easy
    classes, the ImageNet papers' regime at a tenth of the images): the modern 90-epoch SGD
    recipe (``configs.recipes.RESNET_COSINE``: Nesterov, 5 warm-up epochs then cosine, label
    smoothing 0.1, no weight decay on BatchNorm and biases, 224 centre crop of a 256 resize),
    Inception crops and flips; ImageNet normalisation (the base's). ``extra`` comes last."""
    from cnn_flax.configs import recipes

    prefixes = ("optimizer.", "schedule.", "data.", "label_smoothing")
    changes = {
        k: v
        for k, v in recipes.RESNET_COSINE.items()
        if k.startswith(prefixes) and k != "data.image_size"  # arms may scale the size
    }
    changes.update(
        {
            "data.train_split": "train",
            "data.eval_split": "validation",
            "data.augment.inception_crop": True,
            "data.augment.flip": True,
        }
    )
    changes.update(extra)
    return changes


def imagenette_full(basis: str, **extra: Any) -> FullScale:
    """The full-scale preset the ImageNet-paper studies share: Imagenette at 224 px, 90 epochs of
    batch 128 (:func:`imagenette_changes`), 5 seeds, each arm at the best of 0.5x, 1x and 2x its
    rate. ``basis`` names the paper's regime and what differs; ``extra`` are the study's changes."""
    return FullScale(
        dataset=IMAGENETTE,
        image_size=224,
        train_images=IMAGENETTE_TRAIN_IMAGES,
        num_classes=10,
        epochs=90,
        batch_size=128,
        seeds=(0, 1, 2, 3, 4),
        basis=basis,
        changes=imagenette_changes(**extra),
        lr_sweep=("x0.5", "x1", "x2"),
    )

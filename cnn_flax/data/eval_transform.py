"""How a checkpoint's evaluation images are made, recorded so every reader makes them alike.

A weight set is only right on the inputs it was trained for: the same resize, centre crop and
normalisation. Two kinds of checkpoint record them differently:

* a training workdir: its ``config.json`` (``data.image_size``, ``eval_crop_size``,
  ``eval_resize_size``, ``eval_crop_ratio``, ``mean``, ``std``), read by :meth:`Preprocessing.
  from_config` and made by the data pipeline's own evaluation transform (``pipeline="cnn_flax"``);
* converted published weights: the ``preprocessing`` entry of ``model.json``, from the weights'
  facts in the registry (``Weights.transform``, ``mean``, ``std``), made the way their publisher
  evaluates them, torchvision's resize-then-crop with PIL (``pipeline="torchvision"``).

``predict``, ``evaluate`` and fine-tuning read it from the checkpoint
(:mod:`cnn_flax.training.checkpoint_record`); a config that disagrees with it is an
error (:func:`check_agrees`), not a silent default. No TensorFlow or torch here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cnn_flax.data.sizes import eval_sizes
from cnn_flax.models import model_info
from cnn_flax.models.layers import IMAGENET_MEAN, IMAGENET_STD

PIPELINES = ("cnn_flax", "torchvision")
# Normalisation is compared on the [0, 1] scale; configs hold it on the 0-255 scale.
_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform of a checkpoint.

    Attributes:
      resize: the shorter side is resized to this (conceptually: the data pipeline crops
        ``crop / resize`` of the shorter side and resizes that to ``crop``).
      crop: side of the centre crop the model sees.
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel standard deviation on the [0, 1] scale.
      interpolation: ``"bilinear"`` or ``"bicubic"`` (the torchvision pipeline; the data pipeline
        always resizes bilinearly with antialiasing).
      pipeline: ``"cnn_flax"`` (the training data pipeline's transform) or ``"torchvision"``.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    pipeline: str = "torchvision"

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline={self.pipeline!r} is not one of {PIPELINES}.")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"preprocessing needs 0 < crop <= resize, got {self}.")

    @property
    def crop_ratio(self) -> float:
        return self.crop / self.resize

    @classmethod
    def from_config(cls, config: Any) -> Preprocessing:
        """The evaluation transform of a training config (its ``data`` fields)."""
        sizes = eval_sizes(config.data)
        return cls(
            resize=sizes.resize,
            crop=sizes.crop,
            mean=_unit_scale(config.data.mean),
            std=_unit_scale(config.data.std),
            pipeline="cnn_flax",
        )

    @classmethod
    def from_weights(cls, weights: Any) -> Preprocessing:
        """The transform a published weight set (``registry.Weights``) is evaluated with."""
        t = weights.transform
        return cls(t.resize, t.crop, tuple(weights.mean), tuple(weights.std), t.interpolation)

    @classmethod
    def for_model(cls, name: str) -> Preprocessing:
        """What a checkpoint that records nothing gets: the model's default evaluation transform
        and its default weights' normalisation (the ImageNet statistics unless they differ)."""
        info = model_info(name)
        weights = info.default_weights()
        if weights is not None:
            return cls.from_weights(weights)
        t = info.transform
        return cls(t.resize, t.crop, IMAGENET_MEAN, IMAGENET_STD, t.interpolation)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Preprocessing:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields)
        if unknown:
            raise ValueError(f"preprocessing record has unknown fields {unknown}.")
        values = dict(record)
        for key in ("mean", "std"):
            values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def differences(self, other: Preprocessing) -> list[str]:
        """What the model would see differently under ``other``: sizes and normalisation.

        The resize method and pipeline are not compared: the training data pipeline has one of
        each, so a config cannot state another.
        """
        diffs = []
        for key in ("resize", "crop"):
            if getattr(self, key) != getattr(other, key):
                diffs.append(f"{key} {getattr(self, key)} vs {getattr(other, key)}")
        for key in ("mean", "std"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if any(abs(a - b) > _TOLERANCE for a, b in zip(mine, theirs, strict=True)):
                diffs.append(f"{key} {_on_255(mine)} vs {_on_255(theirs)} (0-255 scale)")
        return diffs

    def config_overrides(self) -> list[str]:
        """``--config.data.*`` flags that make a training config evaluate like this."""
        return [
            f"--config.data.image_size={self.crop}",
            f"--config.data.eval_resize_size={self.resize}",
            f"--config.data.mean='{_on_255(self.mean)}'",
            f"--config.data.std='{_on_255(self.std)}'",
        ]


def check_agrees(config: Any, recorded: Preprocessing, *, where: str) -> None:
    """Raises unless ``config`` evaluates images as the checkpoint at ``where`` records.

    Raises:
      ValueError: naming each difference and the flags that remove it.
    """
    ours = Preprocessing.from_config(config)
    diffs = recorded.differences(ours)
    if diffs:
        raise ValueError(
            f"{where} was trained/published with other evaluation preprocessing than the config "
            f"(checkpoint vs config: {'; '.join(diffs)}). Leave --config out to use the "
            f"checkpoint's own, or pass {' '.join(recorded.config_overrides())}."
        )


def _unit_scale(values: Any) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"data.mean/std need 3 channels, got {values}.")
    return tuple(v / 255.0 for v in values)


def _on_255(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v * 255.0, 4) for v in values)

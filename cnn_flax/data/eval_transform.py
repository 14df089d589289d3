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
from cnn_flax.models.registry import EvalTransform

PIPELINES = ("cnn_flax", "torchvision")
# Normalisation is compared on the [0, 1] scale; configs hold it on the 0-255 scale.
_TOLERANCE = 1e-6
_RECORD_FIELDS = ("resize", "crop", "mean", "std", "interpolation", "pipeline")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The evaluation inputs of a checkpoint: its transform and its normalisation.

    Attributes:
      transform: resize, centre crop and interpolation (the interpolation is the torchvision
        pipeline's; the data pipeline always resizes bilinearly with antialiasing, cropping
        ``crop_ratio`` of the shorter side and resizing that to ``crop``).
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel standard deviation on the [0, 1] scale.
      pipeline: ``"cnn_flax"`` (the training data pipeline's transform) or ``"torchvision"``.
    """

    transform: EvalTransform
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pipeline: str = "torchvision"

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline={self.pipeline!r} is not one of {PIPELINES}.")

    @property
    def resize(self) -> int:
        return self.transform.resize

    @property
    def crop(self) -> int:
        return self.transform.crop

    @property
    def crop_ratio(self) -> float:
        return self.transform.crop_ratio

    @property
    def interpolation(self) -> str:
        return self.transform.interpolation

    @classmethod
    def from_config(cls, config: Any) -> Preprocessing:
        """The evaluation inputs of a training config (its ``data`` fields)."""
        return cls(
            eval_sizes(config.data),
            mean=_unit_scale(config.data.mean),
            std=_unit_scale(config.data.std),
            pipeline="cnn_flax",
        )

    @classmethod
    def from_weights(cls, weights: Any) -> Preprocessing:
        """The inputs a published weight set (``registry.Weights``) is evaluated with."""
        return cls(weights.transform, tuple(weights.mean), tuple(weights.std))

    @classmethod
    def for_model(cls, name: str) -> Preprocessing:
        """What a checkpoint that records nothing gets: the model's default evaluation transform
        and its default weights' normalisation (the ImageNet statistics unless they differ)."""
        info = model_info(name)
        weights = info.default_weights()
        if weights is not None:
            return cls.from_weights(weights)
        return cls(info.transform, IMAGENET_MEAN, IMAGENET_STD)

    def to_json(self) -> dict:
        """The record in ``model.json`` and ``init_from.json`` (its fields unchanged since the
        record was introduced, so older checkpoints read back)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "pipeline": self.pipeline,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Preprocessing:
        unknown = sorted(set(record) - set(_RECORD_FIELDS))
        if unknown:
            raise ValueError(f"preprocessing record has unknown fields {unknown}.")
        transform = EvalTransform(
            int(record["crop"]),
            int(record["resize"]),
            record.get("interpolation", "bilinear"),
        )
        return cls(
            transform,
            mean=tuple(float(v) for v in record["mean"]),
            std=tuple(float(v) for v in record["std"]),
            pipeline=record.get("pipeline", "torchvision"),
        )

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

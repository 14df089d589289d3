"""RandAugment (Cubuk et al., 2020) and AutoAugment (Cubuk et al., 2019) with stateless
randomness, so a resumed pipeline draws exactly the same augmentations.

Magnitudes run from 0 to 10 and always make an op stronger (the "increasing" convention, as in
timm's RandAugment): Rotate up to +-30 degrees, ShearX/Y up to +-0.3, TranslateX/Y up to +-45%
of the side (100 px at 224), Color/Contrast/Brightness/Sharpness factors 1 +- 0.9, Posterize keeps
8 down to 4 bits, Solarize thresholds 256 down to 0, SolarizeAdd adds up to 110. The signs of
signed ops are random. AutoAugment "v0" uses the ImageNet sub-policy table released with the
TPU reference implementation, read with these same magnitude conventions (the TPU code's own
level mappings differ for Posterize, Solarize and the enhance ops).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from cnn_flax.data import augment_ops as ops

MAX_LEVEL = 10.0


def _signed(value: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    return tf.where(flip, -value, value)


def _apply(name: str, image: tf.Tensor, level: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One op at `level` in [0, 10]; `seed` draws the sign of signed ops."""
    frac = tf.cast(level, tf.float32) / MAX_LEVEL
    size = tf.cast(tf.shape(image)[0], tf.float32)
    enhance = 1.0 + _signed(0.9 * frac, seed)
    table = {
        "Identity": lambda: image,
        "AutoContrast": lambda: ops.autocontrast(image),
        "Equalize": lambda: ops.equalize(image),
        "Invert": lambda: ops.invert(image),
        "Rotate": lambda: ops.rotate(image, _signed(30.0 * frac, seed)),
        "Solarize": lambda: ops.solarize(image, 256 - tf.cast(256.0 * frac, tf.int32)),
        "SolarizeAdd": lambda: ops.solarize_add(image, tf.cast(110.0 * frac, tf.int32)),
        "Posterize": lambda: ops.posterize(image, 8 - tf.cast(4.0 * frac, tf.int32)),
        "Color": lambda: ops.color(image, enhance),
        "Contrast": lambda: ops.contrast(image, enhance),
        "Brightness": lambda: ops.brightness(image, enhance),
        "Sharpness": lambda: ops.sharpness(image, enhance),
        "ShearX": lambda: ops.shear_x(image, _signed(0.3 * frac, seed)),
        "ShearY": lambda: ops.shear_y(image, _signed(0.3 * frac, seed)),
        "TranslateX": lambda: ops.translate_x(image, tf.round(_signed(0.45 * frac * size, seed))),
        "TranslateY": lambda: ops.translate_y(image, tf.round(_signed(0.45 * frac * size, seed))),
    }
    return table[name]()


# The 14 transformations of the RandAugment paper (Sec. 3).
RANDAUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color", "Posterize",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
)  # fmt: skip

# AutoAugment's ImageNet policy: 25 sub-policies of two (op, probability, level).
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)
POLICIES = {"v0": POLICY_V0}


def randaugment(
    image: tf.Tensor, seed: tf.Tensor, *, num_layers: int, magnitude: float
) -> tf.Tensor:
    """`num_layers` ops drawn uniformly from RANDAUGMENT_OPS, each at `magnitude` (0..10)."""
    seeds = tf.random.experimental.stateless_split(seed, num=2 * num_layers)
    for layer in range(num_layers):
        choice = tf.random.stateless_uniform(
            [], seed=seeds[2 * layer], maxval=len(RANDAUGMENT_OPS), dtype=tf.int32
        )
        sign_seed = seeds[2 * layer + 1]
        branches = [
            (
                lambda name=name, im=image, sign_seed=sign_seed: _apply(
                    name, im, tf.constant(magnitude), sign_seed
                )
            )
            for name in RANDAUGMENT_OPS
        ]
        image = tf.ensure_shape(tf.switch_case(choice, branches), image.shape)
    return image


def autoaugment(image: tf.Tensor, seed: tf.Tensor, *, policy: str = "v0") -> tf.Tensor:
    """One sub-policy drawn uniformly; each of its ops applied with its probability."""
    if policy not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; available: {sorted(POLICIES)}")
    table = POLICIES[policy]
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    choice = tf.random.stateless_uniform([], seed=seeds[0], maxval=len(table), dtype=tf.int32)

    def sub_policy(steps):
        def run():
            out = image
            for i, (name, probability, level) in enumerate(steps):
                apply = tf.random.stateless_uniform([], seed=seeds[1 + 2 * i]) < probability
                out = tf.cond(
                    apply,
                    lambda out=out, name=name, level=level, i=i: _apply(
                        name, out, tf.constant(float(level)), seeds[2 + 2 * i]
                    ),
                    lambda out=out: out,
                )
            return out

        return run

    out = tf.switch_case(choice, [sub_policy(steps) for steps in table])
    return tf.ensure_shape(out, image.shape)


def from_config(data_config: Any):
    """(image uint8, seed) -> image for the configured policy, or None when none is on."""
    randaugment_config = data_config.augment.randaugment
    num_layers, magnitude = int(randaugment_config.num_layers), int(randaugment_config.magnitude)
    policy = data_config.augment.autoaugment
    trivial = bool(data_config.augment.trivial_augment_wide)
    chosen = {
        f"augment.randaugment.num_layers={num_layers}": bool(num_layers),
        f"augment.autoaugment={policy!r}": bool(policy),
        "augment.trivial_augment_wide=True": trivial,
    }
    if sum(chosen.values()) > 1:
        raise ValueError(
            "choose one augmentation policy, got "
            + " and ".join(name for name, on in chosen.items() if on)
            + "; set the others off"
        )
    if trivial:
        from cnn_flax.data.trivial_augment import trivial_augment_wide

        return trivial_augment_wide
    if not 0 <= magnitude <= MAX_LEVEL:
        raise ValueError(f"RandAugment magnitude must be in [0, 10], got {magnitude}")
    if num_layers:
        return lambda image, seed: randaugment(
            image, seed, num_layers=num_layers, magnitude=float(magnitude)
        )
    if policy:
        if policy not in POLICIES:
            raise ValueError(
                f"unknown AutoAugment policy {policy!r}; available: {sorted(POLICIES)}"
            )
        return lambda image, seed: autoaugment(image, seed, policy=policy)
    return None

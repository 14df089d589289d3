"""Stacked 3x3 convolutions vs one larger kernel with the same receptive field.

Simonyan and Zisserman 2015 ("Very Deep Convolutional Networks", sec. 2.3): two stacked 3x3
convolutions see 5x5 pixels and three see 7x7, with fewer weights (18C^2 and 27C^2 against 25C^2
and 49C^2) and more non-linearities in between. Arms: a small three-stage VGG (widths 32-64-128,
BatchNorm so that all arms train in the few steps of the small-scale run, global-pool
classifier) whose stages hold two 3x3 convolutions, against one 5x5 per stage (changes only the
kernel stack); and three 3x3 against one 7x7. At 32 px on the small-scale data.
"""

from experiments.study import Study, Variant, digits_config

_WIDTHS = (32, 64, 128)


def _vgg(num_convs: int, kernel: int) -> dict:
    return {
        "model": "vgg11_bn",
        # (features, num_convs, kernel_size) per stage; the VGG module reads plain tuples.
        "model_overrides.stages": tuple((w, num_convs, kernel) for w in _WIDTHS),
        "model_overrides.hidden_features": (),
        "model_overrides.pool_size": 1,
    }


STUDY = Study(
    name="vgg_kernels",
    question="Stacked 3x3 convolutions vs a single kernel with the same receptive field",
    base_config=lambda **kw: digits_config(**kw, default_image_size=32),
    variants=(
        Variant("2 x 3x3", _vgg(2, 3), group="receptive field 5"),
        Variant("1 x 5x5", _vgg(1, 5), group="receptive field 5"),
        Variant("3 x 3x3", _vgg(3, 3), group="receptive field 7"),
        Variant("1 x 7x7", _vgg(1, 7), group="receptive field 7"),
    ),
    default_steps=300,
)

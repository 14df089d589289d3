"""Stacked 3x3 convolutions vs one larger kernel with the same receptive field.

Simonyan and Zisserman 2015 ("Very Deep Convolutional Networks", sec. 2.3): two stacked 3x3
convolutions see 5x5 pixels and three see 7x7, with fewer weights (18C^2 and 27C^2 against 25C^2
and 49C^2) and more non-linearities in between. Arms: the 32-px VGG-13 and VGG-16 layouts
(BatchNorm, global-pool linear classifier, registered in cnn_flax.models.vgg) against the same
nets with each stack replaced by one convolution of the same receptive field
(``single_kernel_stages``): VGG-13's pairs become 5x5, VGG-16's triples 7x7 (its pairs 5x5).
Each arm changes only the kernel stack against its twin.
"""

from experiments.study import Study, Variant, digits_config

STUDY = Study(
    name="vgg_kernels",
    question="Stacked 3x3 convolutions vs a single kernel with the same receptive field",
    base_config=lambda **kw: digits_config(**kw, default_image_size=32),
    variants=(
        Variant("VGG-13: 2 x 3x3", {"model": "vgg13_bn_cifar"}, group="VGG-13"),
        Variant("VGG-13: 1 x 5x5", {"model": "vgg13_bn_cifar_5x5"}, group="VGG-13"),
        Variant("VGG-16: 3 x 3x3", {"model": "vgg16_bn_cifar"}, group="VGG-16"),
        Variant("VGG-16: 1 x 7x7", {"model": "vgg16_bn_cifar_5x5_7x7"}, group="VGG-16"),
    ),
    default_steps=150,
)

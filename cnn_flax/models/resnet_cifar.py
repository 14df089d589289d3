"""The CIFAR-10 ResNets of He et al. 2016 ("Deep Residual Learning for Image Recognition",
sec. 4.2) and their plain twins.

A 3x3 convolution with 16 filters on the 32x32 image, then three stages of ``n`` basic blocks
(two 3x3 convolutions each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global
average pooling and a Dense classifier: ``6n + 2`` weighted layers, n = 3, 5, 7, 9, 18 for
ResNet-20/32/44/56/110. Shortcuts are the paper's option A throughout: identity, and where a
stage halves the resolution and doubles the width, every second pixel with zero channels
appended, so they add no parameters. Zero channels go after the identity channels, as in the
authors' Torch code (fb.resnet.torch, shortcut type A); the paper does not say where they go
and their position does not change the function class.

These models have no torchvision counterpart. Pass ``num_classes=10`` for CIFAR-10 (the
registry's default is ImageNet's 1000), and ``width=`` to scale the 16-32-64 filters. The
parameter counts registered are the paper's Table 6 figures; for the plain twins they are the
same figures because the paper states (sec. 4.2) that with option A "our residual models have
exactly the same depth, width, and number of parameters as the plain counterparts".
"""

from __future__ import annotations

import functools

from cnn_flax.models.registry import register
from cnn_flax.models.resnet import BasicBlock, ResNet

# Depth 6n + 2 -> paper Table 6's parameter count, as printed.
_PAPER_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M"}
_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition, sec. 4.2 (CIFAR-10)"

cifar_resnet = functools.partial(
    ResNet, block=BasicBlock, width=16, stem="cifar", shortcut="zero_pad"
)
"""The CIFAR ResNet builder; ``stage_sizes=(n, n, n)`` gives depth ``6n + 2``."""

for _depth, _params in _PAPER_PARAMS.items():
    _n = (_depth - 2) // 6
    register(
        f"resnet{_depth}",
        functools.partial(cifar_resnet, stage_sizes=(_n, _n, _n)),
        family="resnet_cifar",
        reference=f"{_PAPER}, option A shortcuts",
        resolution=32,
        paper_params=_params,
    )
    register(
        f"plain{_depth}",
        functools.partial(cifar_resnet, stage_sizes=(_n, _n, _n), skip_connections=False),
        family="resnet_cifar",
        reference=f"{_PAPER}, plain baseline",
        resolution=32,
        paper_params=_params,
    )

"""torchvision's published ImageNet results, per torchvision model name.

Source: torchvision 0.29.1 weights metadata, i.e. for each model its default weights entry
``torchvision.models.get_model_weights(name)[weights]``: ``.meta["_metrics"]["ImageNet-1K"]``
(``acc@1``, ``acc@5``), ``.meta["_ops"]`` (what torchvision labels "GFLOPS": it counts the
multiply-accumulates of convolutions and linear layers, so it is GMACs), ``.meta["num_params"]``
and ``.transforms()`` (crop size, resize size and interpolation of the evaluation transform).
The figures match /work/shared/reference/torchvision_models.csv; a test cross-checks them.

The entries are data, copied once, so that ``python -m cnn_flax.models`` and
``python -m cnn_flax.predict`` need neither torch nor a network connection.
"""

from __future__ import annotations

import dataclasses

from cnn_flax.models.registry import model_info

TORCHVISION_VERSION = "0.29.1"


@dataclasses.dataclass(frozen=True)
class TorchvisionReference:
    """The published facts of one torchvision weights entry.

    Attributes:
      weights: the weights entry the figures belong to, e.g. ``"IMAGENET1K_V2"``.
      top1: ImageNet-1k validation top-1 accuracy in percent.
      top5: ImageNet-1k validation top-5 accuracy in percent.
      gmacs: multiply-accumulates of convolutions and linear layers at ``crop_size``, in billions.
      params: parameters in the weights (GoogLeNet's published weights lack the auxiliary heads).
      crop_size: evaluation centre-crop size in pixels.
      resize_size: the shorter side is resized to this before cropping.
      interpolation: resize interpolation, ``"bilinear"`` or ``"bicubic"``.
    """

    weights: str
    top1: float
    top5: float
    gmacs: float
    params: int
    crop_size: int
    resize_size: int
    interpolation: str


_R = TorchvisionReference
V1, V2 = "IMAGENET1K_V1", "IMAGENET1K_V2"

# fmt: off
# name: (weights, top1, top5, gmacs, params, crop, resize, interpolation)
TORCHVISION_REFERENCE: dict[str, TorchvisionReference] = {
    "alexnet": _R(V1, 56.522, 79.066, 0.714, 61_100_840, 224, 256, "bilinear"),
    "vgg11": _R(V1, 69.02, 88.628, 7.609, 132_863_336, 224, 256, "bilinear"),
    "vgg11_bn": _R(V1, 70.37, 89.81, 7.609, 132_868_840, 224, 256, "bilinear"),
    "vgg13": _R(V1, 69.928, 89.246, 11.308, 133_047_848, 224, 256, "bilinear"),
    "vgg13_bn": _R(V1, 71.586, 90.374, 11.308, 133_053_736, 224, 256, "bilinear"),
    "vgg16": _R(V1, 71.592, 90.382, 15.47, 138_357_544, 224, 256, "bilinear"),
    "vgg16_bn": _R(V1, 73.36, 91.516, 15.47, 138_365_992, 224, 256, "bilinear"),
    "vgg19": _R(V1, 72.376, 90.876, 19.632, 143_667_240, 224, 256, "bilinear"),
    "vgg19_bn": _R(V1, 74.218, 91.842, 19.632, 143_678_248, 224, 256, "bilinear"),
    "googlenet": _R(V1, 69.778, 89.53, 1.498, 6_624_904, 224, 256, "bilinear"),
    "resnet18": _R(V1, 69.758, 89.078, 1.814, 11_689_512, 224, 256, "bilinear"),
    "resnet34": _R(V1, 73.314, 91.42, 3.664, 21_797_672, 224, 256, "bilinear"),
    "resnet50": _R(V2, 80.858, 95.434, 4.089, 25_557_032, 224, 232, "bilinear"),
    "resnet101": _R(V2, 81.886, 95.78, 7.801, 44_549_160, 224, 232, "bilinear"),
    "resnet152": _R(V2, 82.284, 96.002, 11.514, 60_192_808, 224, 232, "bilinear"),
    "resnext50_32x4d": _R(V2, 81.198, 95.34, 4.23, 25_028_904, 224, 232, "bilinear"),
    "wide_resnet50_2": _R(V2, 81.602, 95.758, 11.398, 68_883_240, 224, 232, "bilinear"),
    "mobilenet_v2": _R(V2, 72.154, 90.822, 0.301, 3_504_872, 224, 232, "bilinear"),
    "mobilenet_v3_large": _R(V2, 75.274, 92.566, 0.217, 5_483_032, 224, 232, "bilinear"),
    "mobilenet_v3_small": _R(V1, 67.668, 87.402, 0.057, 2_542_856, 224, 256, "bilinear"),
    "efficientnet_b0": _R(V1, 77.692, 93.532, 0.386, 5_288_548, 224, 256, "bicubic"),
    "efficientnet_b1": _R(V2, 79.838, 94.934, 0.687, 7_794_184, 240, 255, "bilinear"),
    "efficientnet_b2": _R(V1, 80.608, 95.31, 1.088, 9_109_994, 288, 288, "bicubic"),
    "efficientnet_b3": _R(V1, 82.008, 96.054, 1.827, 12_233_232, 300, 320, "bicubic"),
    "efficientnet_b4": _R(V1, 83.384, 96.594, 4.394, 19_341_616, 380, 384, "bicubic"),
    "efficientnet_b5": _R(V1, 83.444, 96.628, 10.266, 30_389_784, 456, 456, "bicubic"),
    "efficientnet_b6": _R(V1, 84.008, 96.916, 19.068, 43_040_704, 528, 528, "bicubic"),
    "efficientnet_b7": _R(V1, 84.122, 96.908, 37.746, 66_347_960, 600, 600, "bicubic"),
}
# fmt: on


def torchvision_reference(name: str) -> TorchvisionReference | None:
    """The published torchvision figures for cnn_flax model ``name``, or ``None``.

    ``None`` for models without a torchvision counterpart (e.g. the CIFAR ResNets) and for
    torchvision models whose weights are not listed here.

    Raises:
      ValueError: if ``name`` is not a registered model.
    """
    torchvision_name = model_info(name).torchvision
    if torchvision_name is None:
        return None
    return TORCHVISION_REFERENCE.get(torchvision_name)

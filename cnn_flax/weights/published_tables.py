"""Writes the rows of the families' published weight tables from torchvision and timm.

    python -m cnn_flax.weights.published_tables resnet   # prints resnet's ``_PUBLISHED`` table
    python -m cnn_flax.weights.published_tables --all    # every family's, one after the other

The tables live in the family modules (``_PUBLISHED``: model -> its published sets, default
first), as timm keeps ``default_cfgs`` beside its models, so cnn_flax reads no torchvision or
timm at run time. This module is how the rows were made; tests/models/test_weights_facts.py checks
the committed rows against the same metadata, so an edited or stale row fails there. Needs
torchvision and timm (the ``[test]`` extra); both answer offline.

Per-family extras the metadata cannot know (GoogLeNet's ``transform_input``, ViT's
``image_size``, which recipe trained a set) are added in the family by hand.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from cnn_flax.models import list_families, list_models, model_info
from cnn_flax.models.registry import TORCHVISION_URL

# The timm architectures each registered model's "timm" mapping reads: its own implementation
# first, then its TensorFlow port ("tf_", TF padding and BatchNorm epsilon). Families without a
# "timm" mapping (ConvNeXt, RegNet, ...) have no timm rows.
TIMM_ARCHITECTURES = {
    **{f"resnet{d}": (f"resnet{d}",) for d in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": ("resnext50_32x4d",),
    "wide_resnet50_2": ("wide_resnet50_2",),
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", f"tf_efficientnet_b{i}") for i in range(8)},
    **{
        f"efficientnet_lite{i}": (f"efficientnet_lite{i}", f"tf_efficientnet_lite{i}")
        for i in range(5)
    },
    "mobilenet_v2": ("mobilenetv2_100",),
    "mobilenet_v3_large": ("mobilenetv3_large_100", "tf_mobilenetv3_large_100"),
    "mobilenet_v3_small": ("mobilenetv3_small_100", "tf_mobilenetv3_small_100"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_rows(torchvision_name: str) -> list[dict]:
    """Every entry of the model's ``*_Weights`` enum, torchvision's default first."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(torchvision_name)
    entries = [enum.DEFAULT, *(e for e in enum if e is not enum.DEFAULT)]
    rows = []
    for entry in entries:
        transform = entry.transforms()
        metrics = entry.meta.get("_metrics", {}).get("ImageNet-1K", {})
        top1, top5 = metrics.get("acc@1"), metrics.get("acc@5")
        rows.append(
            {
                "tag": entry.name,
                "url": entry.url,
                "crop": transform.crop_size[0],
                "resize": transform.resize_size[0],
                "interpolation": transform.interpolation.value,
                "top1": None if top1 is None or math.isnan(top1) else top1,
                "top5": None if top5 is None or math.isnan(top5) else top5,
                "gmacs": entry.meta.get("_ops"),
                "params": entry.meta["num_params"],
                "file_mb": entry.meta.get("_file_size"),
                "mean": tuple(transform.mean),
                "std": tuple(transform.std),
            }
        )
    return rows


def timm_rows(model: str) -> list[dict]:
    """timm's ImageNet-1k classifiers on the Hub for the architectures ``model``'s mapping
    reads (1000 classes; other label sets do not fit the model's head)."""
    import timm
    from timm.models import get_pretrained_cfg

    rows = []
    for arch in TIMM_ARCHITECTURES.get(model, ()):
        for full in timm.list_pretrained(f"{arch}.*"):
            cfg = get_pretrained_cfg(full)
            if cfg.num_classes != 1000 or not cfg.hf_hub_id:
                continue
            crop = cfg.input_size[-1]
            rows.append(
                {
                    "model": full,
                    "hf_hub_id": cfg.hf_hub_id,
                    "crop": crop,
                    "resize": math.floor(crop / cfg.crop_pct),
                    "interpolation": cfg.interpolation,
                    "mean": tuple(cfg.mean),
                    "std": tuple(cfg.std),
                }
            )
    return rows


def _number(x) -> str:
    return f"{x:_}" if isinstance(x, int) and x >= 10_000 else repr(x)


def _text(x) -> str:
    return '"' + x + '"'


def _call(function: str, args: list[str], indent: int = 8, width: int = 100) -> list[str]:
    """``function(args),`` packed into lines of at most ``width``, continuation lines aligned
    after the parenthesis (the table sits between ``# fmt: off`` and ``# fmt: on``)."""
    lines, line = [], " " * indent + function + "("
    hang = " " * len(line)
    for i, arg in enumerate(args):
        piece = arg + ("," if i < len(args) - 1 else "),")
        if len(line) + len(piece) + 1 > width and line.strip() != function + "(":
            lines.append(line.rstrip())
            line = hang
        line += piece + " "
    lines.append(line.rstrip())
    return lines


def _extra(row: dict) -> list[str]:
    extra = []
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        if tuple(row[key]) != default:
            extra.append(f"{key}=({', '.join(map(repr, row[key]))})")
    return extra


def family_table(family: str) -> str:
    """The ``_PUBLISHED`` table of one family, as Python source."""
    lines = ["# fmt: off", "_PUBLISHED = {"]
    for name in list_models(family):
        info = model_info(name)
        rows = []
        if info.torchvision:
            for r in torchvision_rows(info.torchvision):
                assert r["url"].startswith(TORCHVISION_URL), r["url"]
                args = (
                    [_text(r["tag"]), _text(r["url"][len(TORCHVISION_URL) :])]
                    + [_number(r[k]) for k in ("crop", "resize")]
                    + [_text(r["interpolation"])]
                    + [_number(r[k]) for k in ("top1", "top5", "gmacs", "params", "file_mb")]
                )
                rows += _call("torchvision_weights", args + _extra(r))
        for r in timm_rows(name):
            assert r["hf_hub_id"] == f"timm/{r['model']}", r
            args = [_text(r["model"]), str(r["crop"]), str(r["resize"]), _text(r["interpolation"])]
            rows += _call("timm_weights", args + _extra(r))
        if rows:
            lines += [f"    {_text(name)}: (", *rows, "    ),"]
    lines += ["}", "# fmt: on"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.weights.published_tables", description=__doc__.splitlines()[0]
    )
    parser.add_argument("family", nargs="?", help="a family name (cnn_flax.models.list_families)")
    parser.add_argument("--all", action="store_true", help="every family")
    args = parser.parse_args(argv)
    for family in list_families() if args.all else [args.family]:
        print(f"# {family}\n{family_table(family)}\n")


if __name__ == "__main__":
    main()

"""The model zoo as a table: ``python -m cnn_flax.models [--markdown] [--family=NAME]``.

``--names`` lists the names alone (with family and resolution) in a second, without counting.

For every registered model it prints the family, the parameter count, the multiply-accumulates
of one forward pass at the default resolution, the resolution, and the published top-1 accuracy
of its default weights where it has some (the family's facts, see
:mod:`cnn_flax.models.registry`).

Both counts come from shapes alone, with no arrays allocated and nothing compiled: parameters
from ``jax.eval_shape`` of ``init``, multiply-accumulates from the jaxpr of ``apply``. The
multiply-accumulates are counted the way torchvision (and the papers) count them: every kernel tap
of every convolution and every matrix product, padding included, nothing else (no BatchNorm,
activations or pooling). XLA's cost analysis (:mod:`cnn_flax.perf.flops`) is not used here because
it skips kernel taps that land on padding and adds the elementwise work, which puts it about 8%
under torchvision's figure for AlexNet; the count here matches torchvision's to its rounding.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from cnn_flax.models.counting import count_macs
from cnn_flax.models.registry import (
    TORCHVISION_VERSION,
    create_model,
    list_families,
    list_models,
    model_info,
)


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One line of the model table.

    Attributes:
      name: registry name.
      family: family module.
      num_classes: classifier outputs counted: 1000, or 10 for the CIFAR models.
      params: trainable parameters of the default constructor (GoogLeNet: with its aux heads).
      gmacs: billions of multiply-accumulates of one image at ``resolution``.
      resolution: default input resolution in pixels.
      top1: the default weights' published ImageNet top-1 (%), or ``None``.
      weights: the weights entry ``top1`` belongs to, e.g. ``"IMAGENET1K_V2"``.
    """

    name: str
    family: str
    num_classes: int
    params: int
    gmacs: float
    resolution: int
    top1: float | None
    weights: str | None


def default_num_classes(name: str) -> int:
    """The classifier size of the model's dataset: 10 for CIFAR models, else ImageNet's 1000.

    The registry has no dataset field; models registered at CIFAR's 32 pixels are the CIFAR-10
    models of their papers, whose published parameter counts include a 10-way head.
    """
    return 10 if model_info(name).resolution == 32 else 1000


def describe(
    name: str, *, num_classes: int | None = None, resolution: int | None = None
) -> ModelRow:
    """Counts parameters and multiply-accumulates of model ``name`` (shapes only, no compile).

    Args:
      name: a registered model name.
      num_classes: classifier size; ``None`` takes :func:`default_num_classes`.
      resolution: square input size; ``None`` takes the model's default resolution.
    """
    info = model_info(name)
    res = resolution or info.resolution
    num_classes = num_classes or default_num_classes(name)
    # XLA's own convolutions: the count reads convolution and matrix-product operations, which the
    # CPU implementations a model picks by default partly write as shifted multiply-adds.
    model = create_model(name, num_classes=num_classes, conv="xla")
    images = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    macs = count_macs(lambda v, x: model.apply(v, x, train=False), variables, images)
    ref = info.default_weights()
    return ModelRow(
        name=name,
        family=info.family,
        num_classes=num_classes,
        params=params,
        gmacs=macs / 1e9,
        resolution=res,
        top1=ref.top1 if ref else None,
        weights=ref.tag if ref else None,
    )


_HEADER = (
    "model",
    "family",
    "classes",
    "params (M)",
    "GMACs",
    "resolution",
    "published top-1 (%)",
)


def _cells(row: ModelRow) -> tuple[str, ...]:
    top1 = (
        "-" if row.top1 is None else f"{row.top1:.3f} ({row.weights.removeprefix('IMAGENET1K_')})"
    )
    return (
        row.name,
        row.family,
        str(row.num_classes),
        f"{row.params / 1e6:.2f}",
        f"{row.gmacs:.3f}",
        str(row.resolution),
        top1,
    )


def _text_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # Names left-aligned, numbers right-aligned.
    parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
    return "  ".join(parts).rstrip()


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _list_weights(name: str) -> int:
    """The published sets by the name ``weights.load`` / ``--weights`` / ``init_from`` take."""
    if name and name not in list_models():
        print(f"error: unknown model {name!r}; `python -m cnn_flax.models` lists them.")
        return 2
    print(
        "# model  weights-name  top-1  params  MB  source (MB: torchvision's recorded file size; "
        "timm does not record its Hub files' sizes offline, nor top-1: '-')"
    )
    for model in [name] if name else list_models():
        for w in model_info(model).weights:
            cells = (
                model,
                w.name,
                f"{w.top1:.3f}" if w.top1 is not None else "-",
                f"{w.params / 1e6:.1f}M" if w.params else "-",
                f"{w.file_mb:.1f}" if w.file_mb else "-",
                w.url or (f"hf://{w.hf_hub_id}" if w.hf_hub_id else "a file its package ships"),
            )
            print("  ".join(cells))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.models",
        description="List the registered models: parameters, GMACs at the default resolution and "
        "the published top-1 of their default weights.",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--family", help="only this family, e.g. resnet")
    parser.add_argument(
        "--names",
        action="store_true",
        help="only the names, family and resolution (instant; the full table counts every "
        "model and takes minutes)",
    )
    parser.add_argument(
        "--weights",
        nargs="?",
        const="",
        metavar="NAME",
        help="list the published weight sets (of one model, if named) instead of the models",
    )
    args = parser.parse_args(argv)
    if args.weights is not None:
        return _list_weights(args.weights)

    if args.family is not None and args.family not in list_families():
        print(
            f"error: unknown family {args.family!r}; choose one of {', '.join(list_families())}.",
            file=sys.stderr,
        )
        return 2
    names = list_models(args.family)
    if args.names:
        width = max(len(n) for n in names)
        for name in names:
            info = model_info(name)
            print(f"{name.ljust(width)}  {info.family.ljust(14)}  {info.resolution}")
        return 0
    # Rows are printed as they are counted, so the column widths are fixed up front.
    widths = [max(len(_HEADER[0]), *(len(n) for n in names)), max(len(_HEADER[1]), 12)]
    widths += [len(_HEADER[2]), len(_HEADER[3]), 7, len(_HEADER[5]), len(_HEADER[6])]
    if args.markdown:
        print(_markdown_line(_HEADER))
        print("|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|")
    else:
        print(_text_line(_HEADER, widths))
    for name in names:
        cells = _cells(describe(name))
        print(_markdown_line(cells) if args.markdown else _text_line(cells, widths), flush=True)
    if args.markdown:
        print(
            f"\nGMACs: multiply-accumulates of convolutions and matrix products for one image at "
            f"the listed resolution, counted by cnn_flax. Top-1: ImageNet-1k validation accuracy "
            f"of the default published weights (torchvision {TORCHVISION_VERSION}'s entry V1 or "
            f"V2), which these models load with `python -m cnn_flax.convert`."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

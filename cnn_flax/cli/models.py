"""The model zoo as a table: ``python -m cnn_flax.models [--markdown] [--family=NAME]``.

``--names`` lists the names alone (with family and resolution) in a second, without counting;
``--weights [MODEL]`` lists the published weight sets.

For every registered model it prints the family, the parameter count, the multiply-accumulates
of one forward pass at the default resolution, the resolution, and the published top-1 accuracy
of its default weights where it has some (the family's facts, see
:mod:`cnn_flax.models.registry`). The counts are :func:`cnn_flax.models.counting.describe`'s,
from shapes alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cnn_flax.models import list_families, list_models, model_info
from cnn_flax.models.counting import ModelRow, describe
from cnn_flax.models.registry import TORCHVISION_VERSION

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

"""Evaluate a checkpoint: top-1 and top-5 on the complete validation split.

    python -m cnn_flax.evaluate --workdir=runs/r50                    # latest checkpoint, + EMA
    python -m cnn_flax.evaluate --config=resnet50 --checkpoint=converted/resnet50

``--workdir`` takes a training workdir (its ``config.json`` is the default config); ``--checkpoint``
takes any checkpoint: a variables checkpoint (e.g. converted torchvision weights), a workdir or a
step folder inside one. ``--config`` (recipe name or file, plus ``--config.x=y`` overrides) sets
the data set; for a converted checkpoint the model comes from its metadata. The evaluation
preprocessing (resize, crop, normalisation) must be the checkpoint's where it records one (a
workdir's config.json, a published file's model.json entry): a config that disagrees is refused
with the flags that make it agree, rather than evaluated on inputs the weights never saw.
Every example of the split is counted exactly once. A checkpoint with EMA weights is evaluated
twice, raw and EMA.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

import ml_collections

from cnn_flax.configs import split_config_args
from cnn_flax.data.eval_transform import check_agrees
from cnn_flax.training import checkpoint, checkpoint_record, parallel
from cnn_flax.training.checkpoint import CheckpointError
from cnn_flax.training.config_checks import load_config
from cnn_flax.training.eval_loop import Evaluator
from cnn_flax.training.model_builder import build_model


def evaluate(
    config: ml_collections.ConfigDict,
    checkpoint_dir: str | pathlib.Path,
    *,
    data_source=None,
) -> dict[str, float]:
    """Evaluates every weight set of ``checkpoint_dir`` on ``config``'s eval split.

    Returns:
      ``{"top1", "top5", "loss", "num_examples"}`` and, when the checkpoint has EMA weights, the
      same with an ``ema_`` prefix.
    """
    step = evaluated_step(checkpoint_dir, config)
    if data_source is None:
        from cnn_flax import data as data_source
    num_classes, _, _ = data_source.get_dataset_info(config.data)
    meta = checkpoint.find_model_meta(checkpoint_dir)
    if int(meta["num_classes"]) != num_classes:
        raise checkpoint.CheckpointError(
            f"{checkpoint_dir} has {meta['num_classes']} classes but data set "
            f"{config.data.name!r} has {num_classes}; evaluate on the data set it was trained on."
        )
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = meta["model"]
    with config.model_overrides.unlocked():
        for key, value in (meta.get("overrides") or {}).items():
            config.model_overrides[key] = tuple(value) if isinstance(value, list) else value
    config.bn_mode = "global"  # evaluation uses running statistics; BN mode does not matter
    mesh = parallel.create_mesh()
    model = build_model(config, num_classes=num_classes, num_devices=mesh.size)
    evaluator = Evaluator(
        model,
        config=config,
        num_classes=num_classes,
        mesh=mesh,
        data_source=data_source,
        batch_size=_eval_batch_size(int(config.batch_size), mesh.size),
    )
    results = {}
    for prefix, ema in (("", False), ("ema_", True)):
        try:
            variables = checkpoint.load_variables(checkpoint_dir, ema=ema)
        except checkpoint.CheckpointError:
            if ema:
                continue  # no EMA weights in this checkpoint
            raise
        variables = parallel.replicate(variables, mesh)
        results.update({prefix + k: v for k, v in evaluator.run(variables).items()})
    if step is not None:
        results["step"] = step
    return results


def evaluated_step(checkpoint_dir: str | pathlib.Path, config: ml_collections.ConfigDict):
    """The training step (optimizer updates) of the checkpoint ``checkpoint_dir`` designates,
    ``None`` for a variables checkpoint (converted weights have no step).

    Raises:
      CheckpointError: a training workdir with no checkpoint yet (a run that has not reached its
        first save), said as such rather than as a folder that is no checkpoint at all.
    """
    directory = pathlib.Path(checkpoint_dir)
    if checkpoint.is_variables_checkpoint(directory):
        return None
    step_dir = checkpoint.training_step_dir(directory)
    if step_dir is None:
        if (directory / checkpoint_record.CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{directory} is a training workdir with no checkpoint yet (its run saves one "
                "every checkpoint interval and at the end); if it is still training, evaluate "
                f"again once {checkpoint.CHECKPOINTS_DIR}/ holds a step folder."
            )
        return None  # load_variables names what is missing
    return int(step_dir.name) // max(1, int(config.get("grad_accum_steps") or 1))


def _check_preprocessing(config: ml_collections.ConfigDict, source: str) -> None:
    """A config that evaluates the checkpoint on other inputs than it records is an error."""
    recorded = checkpoint_record.read(source).preprocessing
    if recorded is not None:
        check_agrees(config, recorded, where=source)


def _eval_batch_size(batch_size: int, num_devices: int) -> int:
    # Any multiple of the device count works: the eval iterator pads and masks the last batch.
    return max(num_devices, batch_size // num_devices * num_devices)


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m cnn_flax.evaluate``; user errors become one line and exit status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m cnn_flax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="recipe name, model name or .py file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training workdir (latest checkpoint)")
    source.add_argument("--checkpoint", help="variables checkpoint, workdir or step folder")
    try:
        rest, overrides = split_config_args(list(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(rest)
        source = args.workdir or args.checkpoint
        config = load_config(args.config, overrides, workdir=source)
        _check_preprocessing(config, source)
        results = evaluate(config, source)
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    at = f" at step {results['step']}" if "step" in results else " (no training step)"
    for prefix, label in (("", "raw"), ("ema_", "EMA")):
        if prefix + "top1" in results:
            print(
                f"{label}{at}: top-1 {100 * results[prefix + 'top1']:.2f}%  "
                f"top-5 {100 * results[prefix + 'top5']:.2f}%  "
                f"loss {results[prefix + 'loss']:.4f}  "
                f"({int(results[prefix + 'num_examples'])} examples)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(cli())

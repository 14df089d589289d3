"""Train a model: ``python -m cnn_flax.train --config=NAME_OR_PATH --workdir=DIR [--config.x=y]``.

Examples::

    python -m cnn_flax.train --config=quickstart --workdir=/tmp/quickstart
    python -m cnn_flax.train --config=resnet50 --workdir=runs/r50 --config.batch_size=512
    python -m cnn_flax.train --config=my_recipe.py --workdir=runs/x --profile
    python -m cnn_flax.train --config=resnet50_v2 --dry_run  # config, schedule and its plot

Rerunning the same command on an existing workdir resumes from its latest checkpoint. Multi-host:
under SLURM or on Cloud TPU the processes find each other on their own; elsewhere pass
``--coordinator_address=host:port --num_processes=N --process_id=I`` to every process.

``--config.a.b=v`` overrides are taken out of the command line before the flags are parsed and
applied with type checks, so a mistyped key or value fails in one line before anything is
compiled.
"""

from __future__ import annotations

import argparse
import errno
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from absl import logging

from cnn_flax import configs
from cnn_flax.cli.dry_run import dry_run
from cnn_flax.training import checkpoint, parallel, trainer
from cnn_flax.training.checkpoint import CheckpointError
from cnn_flax.training.config_checks import load_config
from cnn_flax.training.trainer import TrainingError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnn_flax.train", add_help=False)
    add = parser.add_argument
    add("--config", help="Recipe name, model name or path to a .py config.")
    add("--workdir", help="Output folder (resumed if it holds checkpoints).")
    add("--profile", action="store_true", help="Capture a jax.profiler trace into WORKDIR/profile.")
    add("--coordinator_address", help="Multi-host: host:port of process 0.")
    add("--num_processes", type=int, help="Multi-host: number of processes.")
    add("--process_id", type=int, help="Multi-host: index of this process.")
    add(
        "--config_change",
        choices=("refuse", "allow"),
        default="refuse",
        help="A workdir that has trained with another config: refuse to resume it, or allow the "
        "change (recorded in WORKDIR/config_history.jsonl).",
    )
    add(
        "--dry_run",
        action="store_true",
        help="Print the resolved config and schedule, plot it; compile and read nothing.",
    )
    add("--num_train", type=int, help="Dry run: training examples, when the metadata lacks them.")
    add("--verbosity", type=int, help="absl logging level (default: warnings only).")
    return parser


class UsageError(ValueError):
    """A command-line mistake; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, CheckpointError, TrainingError]
    try:
        from cnn_flax.data.datasets import DatasetNotPreparedError

        errors.append(DatasetNotPreparedError)
    except ImportError:
        pass
    return tuple(errors)


# A full disk or quota, a read-only file system, missing permissions, a file-size limit.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _disk_error(err: OSError) -> str:
    return (
        f"Cannot write {err.filename or 'to the workdir'}: {err.strerror}. Free space (or fix "
        "the permissions) and rerun the same command: it resumes from the last complete "
        "checkpoint."
    )


def _out_of_memory(err: Exception) -> bool:
    """Whether ``err`` is XLA running out of device (or host) memory."""
    return isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(err)


def _out_of_memory_message(config, err: Exception) -> str:
    detail = str(err).splitlines()[0].removeprefix("RESOURCE_EXHAUSTED: ")[:160]
    accum = int(config.grad_accum_steps)
    return (
        f"Out of memory at batch_size {config.batch_size} (grad_accum_steps {accum}) for "
        f"{config.model} at {config.data.image_size} px ({detail}). Lower --config.batch_size, "
        f"or keep it and pass --config.grad_accum_steps={2 * accum} (smaller micro-batches), "
        "or --config.dtype=bfloat16; the rerun resumes from the last checkpoint."
    )


def main(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """Runs training from parsed flags; returns the exit status."""
    if args.verbosity is None:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
        checkpoint.silence_background_write_errors()  # each is raised, and said, once
    else:
        logging.set_verbosity(args.verbosity)
    if not args.config:
        raise UsageError("--config is required, e.g. --config=quickstart.")
    config = load_config(args.config, overrides)
    if args.dry_run:
        dry_run(config, workdir=args.workdir, num_train=args.num_train)
        return 0
    if not args.workdir:
        raise UsageError("--workdir is required, e.g. --workdir=/tmp/run.")
    parallel.initialize_distributed(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    try:
        result = trainer.train(
            config,
            args.workdir,
            profile=args.profile,
            allow_config_change=args.config_change == "allow",
        )
    except Exception as err:
        if not _out_of_memory(err):
            raise
        raise UsageError(_out_of_memory_message(config, err)) from None
    if result.signal is not None:
        # The trainer said where it stopped; a scheduler must not read this as finished.
        return 128 + result.signal
    if result.stopped.interrupted:
        print(f"Interrupted at step {result.step}; rerun the same command to resume.")
    elif result.eval_metrics:
        top1 = 100 * result.eval_metrics["eval_top1"]
        ema = result.eval_metrics.get("eval_ema_top1")
        averaged = "" if ema is None else f"; averaged (EMA) weights {100 * ema:.2f}%"
        print(
            f"Done: {result.step} steps, eval top-1 {top1:.2f}% (raw weights{averaged}). "
            f"Workdir: {args.workdir}"
        )
    return 0


_HELP_FLAGS = ("--help", "-h", "--helpshort")


def _wants_help(argv: Sequence[str]) -> bool:
    return any(arg in _HELP_FLAGS for arg in argv[1:])


def _help(rest: list[str], overrides: list[str]) -> str:
    """The help: this module's docstring, the flags, then the recipes, or the keys of the
    ``--config`` in ``rest`` when given, overrides applied: the keys one can set. A parser's own
    ``--help`` knows nothing of the recipes or of ``--config.x=y`` keys, hence this.

    ``rest`` is parsed for ``--config`` alone, so any other flag may be wrong.

    Raises:
      ValueError: the config or an override is unknown (the caller prints it in one line).
    """
    config_name = next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), None)
    flags_help = _parser().format_help().partition("options:")[2]
    # The flags alone, without a usage line or heading.
    flag_lines = [line for line in flags_help.splitlines() if line.startswith(" ")]
    parts = [__doc__.strip(), "Flags:\n" + "\n".join(flag_lines)]
    if config_name:
        config = configs.apply_overrides(configs.get_config(config_name), list(overrides))
        keys = "\n".join(f"  --config.{key}={value!r}" for key, value in _flat(config))
        parts.append(f"Keys of --config={config_name} (set any with --config.KEY=VALUE):\n{keys}")
    else:
        recipes = ", ".join(configs.list_recipes())
        by_model = ", ".join(sorted(configs.model_recipe_names()))
        parts.append(f"Recipes (--config=NAME): {recipes}.")
        parts.append(
            textwrap.fill(
                f"Model recipes (a model's name trains it with its published recipe): {by_model}.",
                width=100,
                subsequent_indent="  ",
            )
        )
        parts.append("A config's keys and values: python -m cnn_flax.train --config=NAME --help")
    return "\n\n".join(parts) + "\n"


def _flat(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in sorted(config.keys()):
        value = config[key]
        if hasattr(value, "keys") and value.keys():
            yield from _flat(value, prefix=f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value.to_dict() if hasattr(value, "to_dict") else value


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point (also ``cnn-flax-train``). User errors become one line and exit status 2."""
    argv = list(sys.argv if argv is None else argv)  # argv[0]: the program, as sys.argv
    try:
        rest, overrides = configs.split_config_args(argv)
        if _wants_help(rest):
            print(_help(rest, overrides), end="")
            return 0
        args, unexpected = _parser().parse_known_args(rest[1:])
        if unexpected:
            raise UsageError(f"Unexpected arguments {unexpected}; see --help.")
        return main(args, overrides)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _DISK_ERRNOS:
            raise  # not the user's disk: a bug, keep its traceback
        print(f"error: {_disk_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())

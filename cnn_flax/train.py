"""Train a model: ``python -m cnn_flax.train --config=NAME_OR_PATH --workdir=DIR [--config.x=y]``.

Examples::

    python -m cnn_flax.train --config=quickstart --workdir=/tmp/quickstart
    python -m cnn_flax.train --config=resnet50 --workdir=runs/r50 --config.batch_size=512
    python -m cnn_flax.train --config=my_recipe.py --workdir=runs/x --profile
    python -m cnn_flax.train --config=resnet50_v2 --dry_run  # config, schedule and its plot

Rerunning the same command on an existing workdir resumes from its latest checkpoint. Multi-host:
under SLURM or on Cloud TPU the processes find each other on their own; elsewhere pass
``--coordinator_address=host:port --num_processes=N --process_id=I`` to every process.

``--config.a.b=v`` overrides are taken out of the command line before absl parses it and applied
with type checks, so a mistyped key or value fails in one line before anything is compiled.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from cnn_flax import train_help

_CONFIG = flags.DEFINE_string("config", None, "Recipe name, model name or path to a .py config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (resumed if it holds checkpoints).")
_PROFILE = flags.DEFINE_bool("profile", False, "Capture a jax.profiler trace into WORKDIR/profile.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
_CONFIG_CHANGE = flags.DEFINE_enum(
    "config_change",
    "refuse",
    ["refuse", "allow"],
    "A workdir that has trained with another config: refuse to resume it, or allow the change "
    "(recorded in WORKDIR/config_history.jsonl).",
)
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the resolved config and schedule, plot it; compile and read nothing."
)
_NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "Dry run: training examples, when the data set's metadata lacks them."
)

_OVERRIDES: list[str] = []


class UsageError(ValueError):
    """A command-line mistake; printed as one line."""


def load_config(name_or_path: str | None, overrides: Sequence[str]):
    """The config with its overrides applied; every mistake is a ``ValueError`` (no compute)."""
    from cnn_flax import configs, finetune
    from cnn_flax.config_checks import check_config

    if not name_or_path:
        raise UsageError("--config is required, e.g. --config=quickstart.")
    config = configs.get_config(name_or_path)
    config = configs.apply_overrides(config, list(overrides))
    config = finetune.take_published_normalisation(config, overrides)
    check_config(config)
    return config


def _user_errors() -> tuple[type[BaseException], ...]:
    from cnn_flax.checkpoint import CheckpointError
    from cnn_flax.trainer import TrainingError

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


def main(argv: Sequence[str]) -> int:
    """Runs training from parsed flags; returns the exit status."""
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {list(argv[1:])}; see --help.")
    from cnn_flax import checkpoint, parallel, trainer

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
        checkpoint.silence_background_write_errors()  # each is raised, and said, once
    config = load_config(_CONFIG.value, _OVERRIDES)
    if _DRY_RUN.value:
        from cnn_flax.dry_run import dry_run

        dry_run(config, workdir=_WORKDIR.value, num_train=_NUM_TRAIN.value)
        return 0
    if not _WORKDIR.value:
        raise UsageError("--workdir is required, e.g. --workdir=/tmp/run.")
    parallel.initialize_distributed(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    result = trainer.train(
        config,
        _WORKDIR.value,
        profile=_PROFILE.value,
        allow_config_change=_CONFIG_CHANGE.value == "allow",
    )
    if result.signal is not None:
        # The trainer said where it stopped; a scheduler must not read this as finished.
        return 128 + result.signal
    if result.stopped == "interrupted":
        print(f"Interrupted at step {result.step}; rerun the same command to resume.")
    elif result.eval_metrics:
        top1 = 100 * result.eval_metrics["eval_top1"]
        print(f"Done: {result.step} steps, eval top-1 {top1:.2f}%. Workdir: {_WORKDIR.value}")
    return 0


def _help(rest: list[str], overrides: list[str]) -> str:
    """The help for ``rest`` (parsed for ``--config`` alone, so any other flag may be wrong)."""
    config = next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), None)
    return train_help.help_text(
        usage=__doc__,
        flags_help=flags.FLAGS.module_help(sys.modules[__name__]),
        config_name=config,
        overrides=overrides,
    )


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point (also ``cnn-flax-train``). User errors become one line and exit status 2."""
    from cnn_flax.configs import split_config_args

    argv = list(sys.argv if argv is None else argv)
    # absl keeps flag values between parses: without this, a second call in one process (a test,
    # a notebook) would silently reuse the previous call's --workdir.
    flags.FLAGS.unparse_flags()
    try:
        rest, overrides = split_config_args(argv)
        if train_help.wants_help(rest):
            print(_help(rest, overrides), end="")
            return 0
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _OVERRIDES[:] = overrides

    def run(parsed: Sequence[str]) -> None:
        try:
            code = main(parsed)
        except _user_errors() as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise  # not the user's disk: a bug, keep its traceback
            print(f"error: {_disk_error(err)}", file=sys.stderr)
            code = 2
        sys.exit(code)

    try:
        app.run(run, argv=rest)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())

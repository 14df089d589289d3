"""``python -m cnn_flax.train --help``: the flags, every recipe, and how to see a config's keys.

A parser's own ``--help`` knows nothing of the recipes or of ``--config.x=y`` keys, so the train
entry point answers ``--help`` here (exit status 0). With ``--config=NAME``
the help lists that config's keys with their values, overrides applied: the keys one can set.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

HELP_FLAGS = ("--help", "-h", "--helpshort")


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv[1:])


def help_text(*, usage: str, flags_help: str, config_name: str | None, overrides: list[str]) -> str:
    """The help: ``usage`` (the module docstring), the flags, then the recipes, or the keys of
    ``config_name`` when given.

    Raises:
      ValueError: ``config_name`` or an override is unknown (the caller prints it in one line).
    """
    from cnn_flax import configs

    # The flags alone, without a usage line or heading.
    flag_lines = [line for line in flags_help.splitlines() if line.startswith(" ")]
    parts = [usage.strip(), "Flags:\n" + "\n".join(flag_lines)]
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

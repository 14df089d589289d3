"""Training recipes: ``ml_collections`` ``get_config()`` files, resolved by name or path.

``get_config(NAME)`` accepts

* a named recipe module of this package (``quickstart``, ``finetune``), with an argument after a
  colon where its ``get_config`` takes one (``finetune:resnet50``),
* any registered model name (``vgg16``, ``efficientnet_b3``, ``resnet20``): the recipe its family
  states for it (:class:`cnn_flax.models.registry.Recipe`, built by
  :func:`cnn_flax.configs.recipes.model_config`), or ``<model>_<key>`` for one of the model's
  alternative recipes (``resnet50_v2``),
* a path to a ``.py`` file defining ``get_config()``.

``apply_overrides(config, ["a.b=value", ...])`` then changes fields, checking every key and type
before any compute.

>>> config = get_config("resnet18")
>>> config = apply_overrides(config, ["batch_size=512", "optimizer.lr=0.2"])

Why not ``ml_collections.config_flags``: measured with ml_collections 1.1.0, it loads files only
(``--config=quickstart`` is "Failed loading config file"), reports an unknown key as a 50-line
``AttributeError`` traceback naming the leaf only (``lr`` for ``optimizer.lrr``; nothing for a key
in the wrong group), accepts ``abc`` for a tuple field as ``('abc',)``, cannot set a typed
placeholder back to ``None``, refuses new ``model_overrides`` keys unless every typo is accepted
everywhere, and needs process-global absl flags (``evaluate`` uses argparse). Its int, float and
bool parsing matches this module's. Field values are checked afterwards, once, by
:func:`cnn_flax.training.config_checks.check_config`.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import json
import pathlib
import pkgutil
from collections.abc import Sequence

import ml_collections
from ml_collections import config_dict

from cnn_flax.errors import one_line

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
_NOT_RECIPES = frozenset({"base", "recipes"})


def list_recipes() -> list[str]:
    """Names of the named recipe modules in this package, sorted."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(_PACKAGE_DIR)])
        if not m.name.startswith("_") and m.name not in _NOT_RECIPES
    )


def model_recipe_names() -> dict[str, tuple[str, str]]:
    """Every config name a registered model gives: ``name -> (model, recipe key)``.

    ``resnet50 -> ("resnet50", "")`` for each model with a default recipe, and
    ``resnet50_v2 -> ("resnet50", "v2")`` for each alternative recipe.
    """
    from cnn_flax.models import list_models, model_info

    names: dict[str, tuple[str, str]] = {}
    for model in list_models():
        for key in model_info(model).recipes:
            names[f"{model}_{key}" if key else model] = (model, key)
    return names


def _load_file(path: pathlib.Path) -> ml_collections.ConfigDict:
    if not path.is_file():
        raise ValueError(f"Config file {str(path)!r} does not exist.")
    spec = importlib.util.spec_from_file_location(f"_cnn_flax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"Cannot import config file {str(path)!r}; is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure of the user's file is one clean line
        raise ValueError(f"Config file {str(path)!r} failed to import: {_describe(err)}") from None
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {str(path)!r} defines no get_config() function.")
    try:
        config = module.get_config()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"get_config() of {str(path)!r} raised {_describe(err)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"get_config() of {str(path)!r} returned a {type(config).__name__}, not an "
            "ml_collections.ConfigDict; start from cnn_flax.configs.base.get_base_config()."
        )
    return config


def _describe(err: Exception) -> str:
    """``Type: message`` on one line, with the file and line where it was raised when known."""
    import traceback

    where = ""
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})"
    if isinstance(err, SyntaxError) and err.lineno:
        where = f" (at {err.filename}:{err.lineno})"
    return f"{type(err).__name__}: {one_line(err)}{where}"


def get_config(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads a recipe by recipe name, registered model name or file path.

    Args:
      name_or_path: e.g. ``"quickstart"``, ``"resnet50"``, ``"efficientnet_b3"`` or
        ``"my_configs/run.py"``.

    Returns:
      A fresh, unlocked ``ConfigDict``.

    Raises:
      ValueError: for an unknown name (listing the closest recipe and model names) or a file
        without ``get_config()``.
    """
    from cnn_flax.configs import recipes as model_recipes
    from cnn_flax.models import list_models

    if name_or_path.endswith(".py") or "/" in name_or_path:
        return _load_file(pathlib.Path(name_or_path))
    recipes = list_recipes()
    recipe, colon, argument = name_or_path.partition(":")
    if recipe in recipes:
        module = importlib.import_module(f"cnn_flax.configs.{recipe}")
        if not colon:
            return module.get_config()
        takes = [p for p in inspect.signature(module.get_config).parameters.values()]
        if not takes:
            raise ValueError(f"Recipe {recipe!r} takes no argument; use --config={recipe}.")
        return module.get_config(argument)
    by_model = model_recipe_names()
    if name_or_path in by_model:
        return model_recipes.model_config(*by_model[name_or_path])
    if name_or_path in list_models():
        raise ValueError(
            f"Model {name_or_path!r} has no training recipe; pass --config=path/to/recipe.py."
        )
    close = difflib.get_close_matches(name_or_path, recipes + list(by_model), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown config {name_or_path!r}.{hint} Use a recipe ({', '.join(recipes)}), a model "
        "name from cnn_flax.models.list_models(), or a path to a .py file with get_config()."
    )


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{full}."))
    return keys


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ValueError:
    keys = _flat_keys(config)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, keys, n=5, cutoff=0.6)
    close += [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k not in close]
    hint = f" Did you mean: {', '.join(close[:5])}?" if close else ""
    return ValueError(f"Unknown config key {key!r}.{hint}")


def _parse_literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"Config key {key!r} is a bool; got {text!r}. Use true or false.")


def _parse_sequence(key: str, text: str, field_type: type, current: object) -> object:
    """A tuple/list field from ``"(30, 60)"`` or one bare number; its elements keep the kind of
    the current ones (numbers stay numbers), so ``abc`` is refused here, not by a TypeError later.
    """
    value = _parse_literal(text)
    if _is_number(value):
        value = (value,)
    example = tuple(current) if isinstance(current, (tuple, list)) and current else (30, 60)
    if not isinstance(value, (tuple, list)):
        raise ValueError(
            f"Config key {key!r} is a tuple; cannot read {text!r} as one. Use e.g. "
            f"--config.{key}='{example}'."
        )
    if isinstance(current, (tuple, list)) and current and all(_is_number(c) for c in current):
        bad = [v for v in value if not _is_number(v)]
        if bad:
            raise ValueError(
                f"Config key {key!r} is a tuple of numbers; {bad[0]!r} in {text!r} is not one. "
                f"Use e.g. --config.{key}='{example}'."
            )
    return field_type(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_value(
    key: str, text: str, field_type: type | None, *, nullable: bool, current: object = None
) -> object:
    """Converts the override text to the field's type, or raises naming key, value and type."""
    if text.strip().lower() == "none":
        if nullable:
            return None
        raise ValueError(f"Config key {key!r} cannot be None; give a {field_type.__name__} value.")
    if field_type is None:
        return _parse_literal(text)
    if field_type is bool:
        return _parse_bool(key, text)
    try:
        if field_type is int:
            return int(text)
        if field_type is float:
            return float(text)
    except ValueError:
        raise ValueError(
            f"Config key {key!r} is an {field_type.__name__}; cannot read {text!r} as one."
        ) from None
    if field_type is str:
        return text
    if field_type in (tuple, list):
        return _parse_sequence(key, text, field_type, current)
    raise ValueError(
        f"Config key {key!r} has type {field_type.__name__}, which cannot be set from the command "
        "line; edit the recipe instead."
    )


def _is_reference(node: ml_collections.ConfigDict, leaf: str) -> bool:
    """Whether ``leaf`` is a typed placeholder (a FieldReference), which may be set to None."""
    fields = getattr(node, "_fields", {})  # ml_collections keeps references here, unresolved
    return isinstance(fields.get(leaf), config_dict.FieldReference)


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets ``config.<key>`` (dotted) from its command-line text, in place, type-checked."""
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            raise _unknown_key(config, ".".join(parents[: i + 1]) if child is None else key)
        node = child
    if leaf not in node:
        # model_overrides is open: new keys are module fields that create_model checks by name.
        if parents and parents[0] == "model_overrides" and len(parents) == 1:
            with node.unlocked():
                node[leaf] = _parse_literal(text)
            return
        raise _unknown_key(config, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ValueError(f"Config key {key!r} is a group; set one of its fields, e.g. {key}.x=...")
    ref_type = node.get_type(leaf)
    is_placeholder = current is None or _is_reference(node, leaf)
    field_type = ref_type if ref_type is not type(None) else None
    if parents and parents[0] == "model_overrides":
        field_type = type(current) if current is not None else None
    value = _parse_value(
        key, text, field_type, nullable=is_placeholder or field_type is None, current=current
    )
    try:
        node[leaf] = value
    except TypeError as err:
        raise ValueError(f"Config key {key!r}: {err}") from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies ``"a.b=value"`` overrides to ``config`` (in place) and returns it.

    Values are read according to the field's type: ints, floats, bools (true/false), strings,
    tuples (``"(30, 60)"``) and ``None`` for placeholder fields. Keys under ``model_overrides``
    may be new; their values are read as Python literals.

    Raises:
      ValueError: for a malformed override, an unknown key (naming the closest keys) or a value
        that does not fit the field's type.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().removeprefix("--config.").removeprefix("config.")
        if not sep or not key:
            raise ValueError(
                f"Override {item!r} is not of the form key=value, e.g. batch_size=256."
            )
        apply_override(config, key, text)
    return config


def load(
    name_or_path: str | None = None,
    overrides: Sequence[str] = (),
    *,
    workdir: str | pathlib.Path | None = None,
) -> ml_collections.ConfigDict:
    """The one way a command gets its config: ``name_or_path`` (:func:`get_config`) if given, else
    the training workdir's ``config.json``; then ``overrides`` (``["a.b=value", ...]``).

    Fields are not checked here (:func:`cnn_flax.training.config_checks.load_config` checks).

    Raises:
      ValueError: neither is given, an unknown recipe, or a bad override.
    """
    saved = pathlib.Path(workdir) / "config.json" if workdir else None
    if name_or_path:
        config = get_config(name_or_path)
    elif saved is not None and saved.is_file():
        # Every key a run saved comes back, over the base of any recipe (quickstart's).
        config = get_config("quickstart")
        _merge(config, json.loads(saved.read_text()))
    else:
        raise ValueError("Pass --config=NAME_OR_PATH (the workdir holds no config.json).")
    return apply_overrides(config, list(overrides))


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
    """Writes a saved ``config.json`` over a base config (unlocked, so every key comes back)."""
    with config.unlocked():
        for key, value in saved.items():
            if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
                _merge(config[key], value)
            else:
                config[key] = tuple(value) if isinstance(value, list) else value


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits ``--config.a.b=v`` arguments out of ``argv``.

    Returns:
      ``(rest, overrides)``: the other arguments unchanged, and the overrides as ``"a.b=v"``.
      ``--config.a.b v`` (value as the next argument) is accepted too.
    """
    rest: list[str] = []
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--config."):
            body = arg[len("--config.") :]
            if "=" not in body:
                if i + 1 >= len(args):
                    raise ValueError(f"{arg} needs a value: {arg}=VALUE.")
                body = f"{body}={args[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


__all__ = [
    "apply_override",
    "apply_overrides",
    "get_config",
    "list_recipes",
    "load",
    "model_recipe_names",
    "split_config_args",
]

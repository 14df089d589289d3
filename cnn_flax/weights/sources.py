"""Where weights come from: a local file, or a URL downloaded once into a cache folder.

The cache is ``$CNN_FLAX_CACHE`` or ``~/.cache/cnn_flax/weights``; a URL's file goes to
``<cache>/<first 12 hex of sha1(url)>/<file name>``, so two URLs with the same file name do not
collide and the name (which carries the publisher's hash prefix, see below) is kept. A download is
written to a temporary file and renamed when complete and verified, so an interrupted one never
leaves a file that looks finished.

Integrity: a full SHA-256 given by the caller must match; otherwise a file name of the form
``name-<hex>.ext`` (torch hub's convention, which torchvision and timm URLs follow: the hex is the
start of the file's SHA-256) must match that prefix.

``CNN_FLAX_WEIGHTS_MIRROR`` (``https://mirror.example``) replaces the scheme and host of every
published URL (:func:`mirrored`), for sites that mirror download hosts. Files on the Hugging Face
Hub go through ``huggingface_hub`` (:func:`hub_file`): its cache, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import urllib.parse
import urllib.request

from cnn_flax.errors import one_line
from cnn_flax.weights.convert import WeightsError

CACHE_ENV = "CNN_FLAX_CACHE"
MIRROR_ENV = "CNN_FLAX_WEIGHTS_MIRROR"
_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_SCHEMES = ("http", "https", "file")


def cache_dir(explicit: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights cache folder: ``explicit``, else ``$CNN_FLAX_CACHE``, else the default."""
    chosen = explicit or os.environ.get(CACHE_ENV) or "~/.cache/cnn_flax/weights"
    return pathlib.Path(chosen).expanduser()


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in _SCHEMES


def mirrored(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$CNN_FLAX_WEIGHTS_MIRROR``, if set."""
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return mirror + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))


def hub_file(repo_id: str, filename: str = "model.safetensors") -> pathlib.Path:
    """A file of a Hugging Face Hub repository, through ``huggingface_hub`` and its cache.

    Raises:
      WeightsError: in one line, naming the repository and what failed (offline, not found).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsError(
            f"{repo_id} is on the Hugging Face Hub: `pip install huggingface_hub` to download it."
        ) from None
    try:
        # HF_ENDPOINT and the cache read now, not when huggingface_hub was first imported.
        endpoint = os.environ.get("HF_ENDPOINT") or None
        hub_cache = os.environ.get("HF_HUB_CACHE") or (
            os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
        )
        return pathlib.Path(
            hf_hub_download(repo_id, filename, endpoint=endpoint, cache_dir=hub_cache)
        )
    except Exception as err:  # its errors: offline, 404s, connection errors, ...
        reason = one_line(err)[:200]
        raise WeightsError(
            f"cannot download {filename} of {repo_id} from the Hugging Face Hub "
            f"({type(err).__name__}: {reason}); check the network, HF_ENDPOINT or HF_HUB_OFFLINE, "
            "or pass a local file."
        ) from None


def expected_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a torch-hub style file name promises, or ``None``."""
    found = _HASH_PREFIX.search(file_name)
    return found.group(1) if found else None


def fetch(
    url: str,
    *,
    cache: str | os.PathLike | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """The local path of ``url``'s file, downloading it into the cache unless it is there.

    Raises:
      WeightsError: the download failed or the file's hash is not the expected one (nothing is
        left in the cache then).
    """
    name = pathlib.PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise WeightsError(f"URL {url} names no file; give the URL of the weights file itself.")
    folder = cache_dir(cache) / hashlib.sha1(url.encode()).hexdigest()[:12]
    target = folder / name
    if target.is_file():
        try:
            _verify(target, _digest_of(target), sha256=sha256, url=url)
            return target
        except WeightsError:
            target.unlink()  # a damaged cache entry: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.{os.getpid()}.part"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with _progress(name, total) as bar:
                for chunk in iter(lambda: _read(response), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise WeightsError(
                f"download of {url} was interrupted at {received} of {total} bytes; nothing was "
                "kept: run again to restart it."
            )
        _verify(partial, digest.hexdigest(), sha256=sha256, url=url)
    except WeightsError:
        partial.unlink(missing_ok=True)
        raise
    except OSError as err:  # URLError, HTTPError, timeouts, a full disk
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"cannot download {url}: {one_line(err)} (offline? set "
            f"{MIRROR_ENV} to a mirror, or pass a local file)"
        ) from None
    os.replace(partial, target)
    return target


def _read(response) -> bytes:
    try:
        return response.read(1 << 20)
    except http.client.IncompleteRead as err:  # the server closed mid-file
        return err.partial


def _progress(name: str, total: int | None):
    """A progress bar on stderr: MB done, rate and time left (tqdm's)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.5
    )


def _digest_of(path: pathlib.Path) -> str:
    from cnn_flax.weights.files import sha256 as file_sha256

    return file_sha256(path)


def _verify(path: pathlib.Path, digest: str, *, sha256: str | None, url: str) -> None:
    expected = sha256 or expected_prefix(pathlib.PurePosixPath(url).name)
    if expected and not digest.startswith(expected.lower()):
        raise WeightsError(
            f"{url} downloaded with SHA-256 {digest[:16]}..., expected {expected[:16]}...: the "
            f"file is corrupt or not the one published; {path} was not kept."
        )

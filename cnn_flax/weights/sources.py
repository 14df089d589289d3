"""Where weights come from: a local file, or a URL downloaded once into a cache folder.

The cache is ``$CNN_FLAX_CACHE`` or ``~/.cache/cnn_flax/weights``; a URL's file goes to
``<cache>/<first 12 hex of sha1(url)>/<file name>``, so two URLs with the same file name do not
collide and the name (which carries the publisher's hash prefix, see below) is kept. A download is
written to a temporary file and renamed when complete and verified, so an interrupted one never
leaves a file that looks finished.

Integrity: a full SHA-256 given by the caller must match; otherwise a file name of the form
``name-<hex>.ext`` (torch hub's convention, which torchvision and timm URLs follow: the hex is the
start of the file's SHA-256) must match that prefix.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import urllib.parse
import urllib.request

from cnn_flax.weights.convert import WeightsError

CACHE_ENV = "CNN_FLAX_CACHE"
_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
_SCHEMES = ("http", "https", "file")


def cache_dir(explicit: str | os.PathLike | None = None) -> pathlib.Path:
    """The weights cache folder: ``explicit``, else ``$CNN_FLAX_CACHE``, else the default."""
    chosen = explicit or os.environ.get(CACHE_ENV) or "~/.cache/cnn_flax/weights"
    return pathlib.Path(chosen).expanduser()


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in _SCHEMES


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
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
        _verify(partial, digest.hexdigest(), sha256=sha256, url=url)
    except WeightsError:
        partial.unlink(missing_ok=True)
        raise
    except OSError as err:  # URLError, HTTPError, timeouts, a full disk
        partial.unlink(missing_ok=True)
        raise WeightsError(f"cannot download {url}: {' '.join(str(err).split())}") from None
    os.replace(partial, target)
    return target


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

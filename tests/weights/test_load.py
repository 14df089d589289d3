"""`cnn_flax.weights.load`: files, format detection, strictness, provenance, URLs, the cache."""

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading

import chex
import numpy as np
import pytest

from cnn_flax import weights
from cnn_flax.convert import from_torchvision

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

pytestmark = pytest.mark.torch

MODEL = "mobilenet_v3_small"  # small, and it has torchvision and timm names


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()


@pytest.fixture(scope="module")
def files(state_dict, tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    arrays = {k: v.numpy() for k, v in state_dict.items()}
    paths = {"pth": folder / "mnv3.pth", "safetensors": folder / "mnv3.safetensors"}
    torch.save(state_dict, paths["pth"])
    safetensors_numpy.save_file(arrays, str(paths["safetensors"]))
    extra = dict(arrays, **{"extra.weight": np.zeros(3, np.float32)})
    paths["extra"] = folder / "extra.safetensors"
    safetensors_numpy.save_file(extra, str(paths["extra"]))
    return paths


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_both_containers_give_the_torchvision_conversion(kind, files, state_dict):
    variables, provenance = weights.load(MODEL, files[kind])
    chex.assert_trees_all_equal(variables, from_torchvision(MODEL, state_dict))
    assert provenance.container == ("torch" if kind == "pth" else "safetensors")
    assert provenance.format == "torchvision"
    assert provenance.mapping == "cnn_flax.models.mobilenet_v3.from_torchvision"
    assert provenance.sha256 == hashlib.sha256(files[kind].read_bytes()).hexdigest()
    assert provenance.tensors == len(state_dict) and provenance.url is None
    # Not a published file (random weights): assumed to be torchvision's default, as before,
    # but no preprocessing is claimed for it.
    assert provenance.published["match"] == "assumed" and provenance.preprocessing is None
    json.dumps(provenance.to_json())  # the record is JSON as it stands


def test_both_containers_load_without_torch(files):
    """In a process where importing torch fails, a .safetensors and a torch.save file convert."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from cnn_flax import weights\n"
        f"v, p = weights.load({MODEL!r}, {str(files['safetensors'])!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(p.format, p.container, len(v['params']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["torchvision", "safetensors"]
    # ... and so does the torch.save file, read with numpy.
    code = code.replace(str(files["safetensors"]), str(files["pth"]))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["torchvision", "torch"]


def test_leftover_tensors_are_named(files):
    with pytest.raises(weights.WeightsError, match=r"not used, e.g. \['extra.weight'\]"):
        weights.load(MODEL, files["extra"])


def test_no_format_fits_names_each_attempt(files, tmp_path):
    # torchvision MobileNet v3 tensors are no EfficientNet in any naming the family reads.
    with pytest.raises(weights.WeightsError) as err:
        weights.load("efficientnet_b0", files["safetensors"])
    message = str(err.value)
    for fmt in ("torchvision:", "timm:", "efficientnet_lite_pytorch:"):
        assert fmt in message
    with pytest.raises(weights.WeightsError, match="has no 'onnx' weight mapping"):
        weights.load(MODEL, files["safetensors"], format="onnx")
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.load(MODEL, tmp_path / "missing.pth")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 over tmp_path/www that counts its requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_url_is_downloaded_once_and_verified(server, files, tmp_path):
    root, base, hits = server
    data = files["safetensors"].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"mnv3-{digest[:8]}.safetensors"  # torch hub's naming: the hash prefix is checked
    (root / name).write_bytes(data)
    cache = tmp_path / "cache"
    url = f"{base}/{name}"
    first, provenance = weights.load(MODEL, url, cache=cache)
    assert provenance.url == url and provenance.sha256 == digest
    assert provenance.file.startswith(str(cache))
    second, _ = weights.load(MODEL, url, cache=cache)
    assert hits == [f"/{name}"]  # the second load came from the cache
    chex.assert_trees_all_equal(first, second)

    bad = "mnv3-00000000.safetensors"
    (root / bad).write_bytes(data)
    with pytest.raises(weights.WeightsError, match="expected 00000000"):
        weights.load(MODEL, f"{base}/{bad}", cache=cache)
    assert not any(p.name.startswith(("mnv3-0000", ".mnv3-0000")) for p in cache.rglob("*"))
    with pytest.raises(weights.WeightsError, match="cannot download"):
        weights.load(MODEL, f"{base}/missing.safetensors", cache=cache)

"""torch.save files read with numpy (cnn_flax.weights.torch_zip) equal torch.load's reading,
tensor for tensor, with torch unimportable while reading; anything but tensors is refused."""

import collections
import subprocess
import sys

import numpy as np
import pytest

from cnn_flax.weights import WeightsError, torch_zip

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch


def _state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    sd = collections.OrderedDict()
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        sd[f"w.{dtype}".replace("torch.", "")] = torch.randn(3, 4, generator=g).to(dtype)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        sd[f"i.{dtype}".replace("torch.", "")] = torch.randint(0, 2, (5,), generator=g).to(dtype)
    sd["shared.a"] = base  # one storage, several tensors
    sd["shared.view"] = base[2:4]  # an offset view
    sd["shared.transposed"] = base.t()  # non-contiguous strides
    sd["shared.strided"] = base[:, ::3]
    sd["scalar"] = torch.tensor(3.5)
    sd["num_batches_tracked"] = torch.tensor(7)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    return sd


def _torch_reading(value):
    return value.float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()


def test_equal_to_torch_load(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(_state_dict(), path)
    expected = torch.load(path, weights_only=True)
    ours = torch_zip.read(path)
    assert list(ours) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], _torch_reading(value), err_msg=key)
        assert ours[key].dtype == _torch_reading(value).dtype, key
        assert ours[key].shape == tuple(value.shape), key


def test_reads_without_torch(tmp_path):
    """A child process with torch made unimportable reads the file and the weights loader
    converts it; the arrays equal torch.load's."""
    path = tmp_path / "sd.pth"
    torch.save(_state_dict(), path)
    expected = {k: _torch_reading(v) for k, v in torch.load(path, weights_only=True).items()}
    np.savez(tmp_path / "expected.npz", **expected)
    code = f"""
import sys
sys.modules["torch"] = None  # import torch raises ImportError
import numpy as np
from cnn_flax.weights import torch_zip
ours, expected = torch_zip.read({str(path)!r}), np.load({str(tmp_path / "expected.npz")!r})
assert sorted(ours) == sorted(expected.files)
for k in expected.files:
    np.testing.assert_array_equal(ours[k], expected[k])
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok", len(ours))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_any_other_global(tmp_path, capsys):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2), "extra": _Evil()}, path)
    with pytest.raises(WeightsError, match=r"pickles a builtins\.print object"):
        torch_zip.read(path)
    assert "pwned" not in capsys.readouterr().out
    whole = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(WeightsError, match=r"torch\.nn\.modules\.linear\.Linear object"):
        torch_zip.read(whole)


def test_refuses_the_legacy_format(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="legacy format of torch < 1.6"):
        torch_zip.read(path)

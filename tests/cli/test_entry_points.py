"""Every command has a console script and keeps its documented ``python -m`` path."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

PYPROJECT = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"
# [project.scripts] read with a pattern: tomllib is not in Python 3.10's standard library.
_SECTION = PYPROJECT.read_text().split("[project.scripts]")[1].split("\n[")[0]
SCRIPTS = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', _SECTION, flags=re.M))
DOCUMENTED = (
    "cnn_flax.train",
    "cnn_flax.evaluate",
    "cnn_flax.predict",
    "cnn_flax.benchmark",
    "cnn_flax.convert",
    "cnn_flax.models",
    "cnn_flax.export",
    "cnn_flax.data.prepare",
    "cnn_flax.data.make_fake_images",
    "cnn_flax.data.benchmark",
)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_is_a_callable(script):
    assert len(SCRIPTS) >= 9
    module, _, name = SCRIPTS[script].partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_every_command_module_has_a_console_script():
    targets = {target.partition(":")[0] for target in SCRIPTS.values()}
    commands = {
        f"cnn_flax.cli.{p.stem}"
        for p in pathlib.Path(PYPROJECT.parent, "cnn_flax", "cli").glob("*.py")
    }
    commands -= {"cnn_flax.cli.__init__", "cnn_flax.cli.dry_run"}
    assert commands <= targets, sorted(commands - targets)


@pytest.mark.parametrize("path", DOCUMENTED)
def test_documented_module_path_still_runs(path):
    spec = importlib.util.find_spec(path)
    assert spec is not None
    if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
        assert importlib.util.find_spec(f"{path}.__main__") is not None


@pytest.mark.parametrize(
    "path, flag",
    [
        ("cnn_flax.predict", "--checkpoint"),
        ("cnn_flax.convert", "--torchvision-checkpoint"),
        ("cnn_flax.models", "--names"),
        ("cnn_flax.export", "--with-preprocessing"),
    ],
)
def test_old_path_runs_the_command(path, flag):
    """The ``python -m`` paths of commands that moved into cli/ forward to them."""
    done = subprocess.run([sys.executable, "-m", path, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert flag in done.stdout


def test_models_names_through_its_old_path():
    done = subprocess.run(
        [sys.executable, "-m", "cnn_flax.models", "--names", "--family=alexnet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:3] == ["alexnet", "alexnet", "224"]

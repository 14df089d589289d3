"""The benchmark command end to end, at tiny sizes: report, table, torch comparison, errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from cnn_flax.cli import benchmark

TINY = ["--batch-size=2", "--resolution=32", "--steps=2", "--windows=1", "--warmup=1"]
_KEYS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir")


@pytest.fixture(autouse=True)
def restore_jax_config():
    saved = {k: getattr(jax.config, k) for k in _KEYS}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_all_prints_a_table_row_per_model(monkeypatch, capsys, tmp_path):
    import cnn_flax.models

    monkeypatch.setattr(cnn_flax.models, "list_models", lambda: ["resnet20", "no_such_model"])
    md = tmp_path / "table.md"
    args = ["--all", "--mode=train", "--compilation-cache-dir=", f"--markdown={md}", *TINY]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "throughput:" in out and "GFLOP/s" in out and "peak memory:" in out
    assert "GFLOPs per step (3x forward)" in out and "cnn_flax.training.steps" in out
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model |")
    assert rows[1].startswith("| resnet20 | train | float32 | model | 2 | 32 |")
    assert rows[2].startswith("| no_such_model |") and "error" in rows[2]


@pytest.mark.torch
def test_compare_torch_prints_each_variant_and_the_ratio(monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")

    def broken_compile(model):
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(torch, "compile", broken_compile)
    args = [
        "--model=resnet18",
        "--mode=infer",
        "--compare=torch",
        "--compilation-cache-dir=",
        *TINY,
    ]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "  eager: " in out and "img/s" in out.split("  eager: ")[1].splitlines()[0]
    assert "  channels_last: " in out
    assert "  compile: n/a: RuntimeError: no compiler in this test" in out
    ratio = [line for line in out.splitlines() if line.startswith("ratio: ")]
    assert len(ratio) == 1 and float(ratio[0].split()[1]) > 0


def test_unknown_model_is_one_clean_line(capsys):
    assert benchmark.main(["--model=resnet51", "--compilation-cache-dir=", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown model 'resnet51'") and "resnet50" in err


def test_benchmark_imports_neither_torch_nor_tensorflow():
    code = (
        "import sys, cnn_flax.cli.benchmark, cnn_flax.perf.jax_bench, cnn_flax.perf.flops\n"
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compile_only_reports_a_cold_miss_then_a_warm_hit(capsys):
    args = ["--model=resnet20", "--compile-only", "--batch-size=1", "--resolution=8"]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| resnet20 |")][:1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["resnet20", "train", "float32", "model", "1", "8"]
    cold, warm = cells[7], cells[8]
    assert cold.endswith("(miss)") and warm.endswith("(hit)")
    assert float(warm.split()[0]) < float(cold.split()[0])


def test_bad_real_data_folder_fails_before_compiling(tmp_path, capsys):
    args = ["--model=resnet20", f"--data=folder:{tmp_path / 'missing'}", *TINY]
    assert benchmark.main(args) == 2
    captured = capsys.readouterr()
    assert "compiled in" not in captured.out
    assert captured.err.startswith("error: --data=folder:") and "make_fake_images" in captured.err


def test_compile_only_refuses_step_timing_options(capsys):
    assert benchmark.main(["--model=resnet20", "--compile-only", "--compare=torch"]) == 2
    assert "--compile-only times no steps; drop --compare" in capsys.readouterr().err


def _bench_model(**settings):
    from cnn_flax.perf import jax_bench
    from cnn_flax.training.model_builder import build_model

    config = jax_bench.model_config(jax_bench.Settings(**settings))
    return build_model(config, num_classes=1000, num_devices=1)


def test_conv_preset_becomes_the_models_conv_field():
    from cnn_flax.models import depthwise

    model = _bench_model(model="mobilenet_v2", conv="cpu", dtype="float32")
    assert model.conv.func is depthwise.Conv
    assert model.conv.keywords == depthwise.PRESETS["cpu"]
    assert model.dtype == jnp.float32
    with pytest.raises(ValueError, match="Unknown convolution preset 'fast'"):
        _bench_model(model="mobilenet_v2", conv="fast")


def test_the_benchmark_builds_its_model_with_the_trainers_builder(monkeypatch):
    """One model builder: the benchmark times the network the trainer would build."""
    from cnn_flax.perf import jax_bench
    from cnn_flax.training import model_builder

    built = []

    def builder(config, *, num_classes, num_devices):
        built.append((config.model, config.dtype, num_classes, num_devices))
        raise RuntimeError("built")

    monkeypatch.setattr(model_builder, "build_model", builder)
    with pytest.raises(RuntimeError, match="built"):
        jax_bench.prepare(jax_bench.Settings(model="resnet20", mode="infer", dtype="float32"))
    assert built == [("resnet20", "float32", 1000, 1)]

"""The per-direction layer timings and the interleaved step timings run and report."""

import pytest

from cnn_flax.perf import conv_ops, interleaved


def test_conv_ops_times_every_direction_of_each_implementation():
    layers = [
        conv_ops.Layer("dw", 8, 4, 4, 3, 2, 4),
        conv_ops.Layer("1x1", 8, 4, 6, 1),
        conv_ops.Layer("3x3", 8, 16, 4, 3),
    ]
    rows = conv_ops.run(layers, batch=2, repeats=1)
    body = [r for r in rows[2:]]
    assert [r.split("|")[2].strip() for r in body] == list(conv_ops.DIRECTIONS) * 3
    for row in body:
        xla_ms, ours_ms = (float(c) for c in row.split("|")[3:5])
        assert xla_ms > 0 and ours_ms > 0


def test_conv_ops_refuses_an_unknown_layer(capsys):
    assert conv_ops.main(["--layers=no_such_layer"]) == 2
    assert "matches none of" in capsys.readouterr().err


def test_interleaved_reports_each_variant(capsys):
    args = ["--model=resnet20", "--resolution=8", "--batch-size=1", "--conv=cpu", "--rounds=2"]
    assert interleaved.main(args) == 0
    out = capsys.readouterr().out
    assert "resnet20, batch 1, 8 px, float32 train step, 2 rounds, 1-minute load" in out
    line = [x for x in out.splitlines() if "cnn_flax conv=cpu" in x and "img/s" in x]
    assert len(line) == 1 and line[0].count(",") == 1  # two step times


def test_interleaved_refuses_an_unknown_preset(capsys):
    assert interleaved.main(["--model=resnet20", "--conv=fast"]) == 2
    assert "Unknown convolution preset 'fast'" in capsys.readouterr().err


@pytest.mark.torch
def test_interleaved_refuses_torch_for_a_model_without_torchvision(capsys):
    pytest.importorskip("torchvision")
    assert interleaved.main(["--model=resnet20", "--resolution=8", "--torch", "--rounds=1"]) == 2
    assert "no torchvision counterpart" in capsys.readouterr().err

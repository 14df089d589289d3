"""Fine-tuning through the trainer (``config.init_from``): what starts from the weights, what is
re-initialised, frozen or refused, exact resume, and the records predict reads from the workdir.

The tiny CNN and the fake data set of the training tests; the real-weights path (EfficientNet-Lite0)
is checked in tests/test_finetune.py.
"""

from __future__ import annotations

import json

import chex
import jax
import numpy as np
import pytest

from cnn_flax.training import checkpoint, finetune, trainer
from cnn_flax.training.checkpoint_record import CLASSES_FILE
from tests.training import fakes

CLASS_NAMES = ["top-left", "top-right", "bottom-left", "bottom-right"]


class NamedFakeData(fakes.FakeData):
    """The fake data set with class names, as the real data API has them."""

    @staticmethod
    def get_class_names(data_config):
        return list(CLASS_NAMES)


def _params(tree) -> dict:
    return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 3-step run of the tiny CNN: the 'published weights' the tests fine-tune from."""
    workdir = tmp_path_factory.mktemp("pretrained")
    config = fakes.tiny_config(total_steps=3, eval_every_steps=3, checkpoint_every_steps=0)
    result = trainer.train(config, workdir, data_source=NamedFakeData(), show_progress=False)
    return workdir, result


def _config(init_from, **changes):
    config = fakes.tiny_config(total_steps=2, eval_every_steps=2, checkpoint_every_steps=0)
    config.init_from = str(init_from)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def test_starts_from_a_workdir_with_its_head_when_the_classes_match(pretrained, tmp_path):
    source, before = pretrained
    # lr 0 and frozen statistics: the run's state is exactly the state it started from.
    config = _config(source, **{"optimizer.lr": 0.0, "finetune.freeze_bn_stats": True})
    result = trainer.train(config, tmp_path, data_source=NamedFakeData(), show_progress=False)
    chex.assert_trees_all_equal(_params(result.state.params), _params(before.state.params))
    chex.assert_trees_all_equal(
        _params(result.state.batch_stats), _params(before.state.batch_stats)
    )
    record = json.loads((tmp_path / finetune.INIT_RECORD).read_text())
    assert record["kind"] == "training workdir" and record["step"] == 3
    assert record["source"] == str(source) and record["head"] == "kept from the weights"
    classes = json.loads((tmp_path / CLASSES_FILE).read_text())
    assert classes["names"] == CLASS_NAMES


def _variables_checkpoint(path, variables, *, model=fakes.TINY_MODEL, overrides=None):
    classes = int(np.shape(variables["params"]["head"]["kernel"])[-1])
    meta = {"model": model, "num_classes": classes, "overrides": overrides or {}}
    checkpoint.save_variables(path, variables, meta=meta)
    return path


def test_new_head_for_another_class_count(pretrained, tmp_path):
    _, before = pretrained
    variables = _params(before.state.variables())
    rng = np.random.default_rng(0)
    width = variables["params"]["head"]["kernel"].shape[0]
    variables["params"]["head"] = {
        "kernel": rng.standard_normal((width, 7)).astype(np.float32),
        "bias": rng.standard_normal(7).astype(np.float32),
    }
    source = _variables_checkpoint(tmp_path / "seven", variables)
    config = _config(source, **{"optimizer.lr": 0.0, "finetune.freeze_bn_stats": True})
    result = trainer.train(
        config, tmp_path / "run", data_source=fakes.FakeData(), show_progress=False
    )
    params = _params(result.state.params)
    backbone = {k: v for k, v in params.items() if k != "head"}
    chex.assert_trees_all_equal(
        backbone, {k: v for k, v in variables["params"].items() if k != "head"}
    )
    assert params["head"]["kernel"].shape == (width, fakes.NUM_CLASSES)
    assert not np.any(params["head"]["kernel"]) and not np.any(params["head"]["bias"])
    record = json.loads((tmp_path / "run" / finetune.INIT_RECORD).read_text())
    assert record["kind"] == "variables checkpoint"
    assert record["head"] == "new, zeros (class count differs: 7 -> 4 classes)"
    assert not (tmp_path / "run" / CLASSES_FILE).exists()  # FakeData names no classes


def test_reset_head_even_when_the_classes_match(pretrained, tmp_path):
    source, _ = pretrained
    config = _config(source, **{"optimizer.lr": 0.0, "finetune.reset_head": True})
    result = trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    assert not np.any(_params(result.state.params)["head"]["kernel"])


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        ("shape", r"do not fit this model \(shape mismatch \['params'\]\['conv0'\]\['kernel'\]: "),
        ("missing", r"missing \[\"\['batch_stats'\]\['bn1'\]"),
        ("model", r"holds 'resnet18' weights but config.model is 'test_tiny_cnn'"),
    ],
)
def test_weights_that_do_not_fit_are_refused_before_anything_is_written(
    pretrained, tmp_path, break_it, message
):
    _, before = pretrained
    variables = _params(before.state.variables())
    model = fakes.TINY_MODEL
    if break_it == "shape":
        variables["params"]["conv0"]["kernel"] = np.zeros((5, 5, 3, 8), np.float32)
    elif break_it == "missing":
        del variables["params"]["bn1"], variables["batch_stats"]["bn1"]
    else:
        model = "resnet18"
    source = _variables_checkpoint(tmp_path / "bad", variables, model=model)
    with pytest.raises(finetune.FinetuneError, match=message):
        trainer.train(
            _config(source), tmp_path / "run", data_source=fakes.FakeData(), show_progress=False
        )
    assert checkpoint.training_step_dir(tmp_path / "run") is None
    assert not (tmp_path / "run" / finetune.INIT_RECORD).exists()


def test_linear_probe_trains_only_the_head(pretrained, tmp_path):
    source, before = pretrained
    config = _config(source, **{"finetune.trainable": "head", "optimizer.lr": 0.5})
    result = trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    params, start = _params(result.state.params), _params(before.state.params)
    chex.assert_trees_all_equal(
        {k: v for k, v in params.items() if k != "head"},
        {k: v for k, v in start.items() if k != "head"},
    )
    # A probe freezes the backbone's BatchNorm statistics too.
    chex.assert_trees_all_equal(
        _params(result.state.batch_stats), _params(before.state.batch_stats)
    )
    assert np.max(np.abs(params["head"]["kernel"] - start["head"]["kernel"])) > 1e-4


def test_frozen_batch_norm_statistics(pretrained, tmp_path):
    source, before = pretrained
    config = _config(source, **{"finetune.freeze_bn_stats": True, "optimizer.lr": 0.5})
    result = trainer.train(config, tmp_path, data_source=fakes.FakeData(), show_progress=False)
    chex.assert_trees_all_equal(
        _params(result.state.batch_stats), _params(before.state.batch_stats)
    )
    moved = (
        _params(result.state.params)["conv0"]["kernel"]
        - _params(before.state.params)["conv0"]["kernel"]
    )
    assert np.max(np.abs(moved)) > 1e-4  # the backbone itself still trains


def test_resume_of_a_finetuning_run_is_exact(pretrained, tmp_path):
    source, _ = pretrained
    config = _config(source, **{"total_steps": 4, "finetune.backbone_lr_mult": 0.1})
    config.checkpoint_every_steps = 2
    whole = trainer.train(
        config, tmp_path / "whole", data_source=fakes.FakeData(), show_progress=False
    )
    first = trainer.train(
        config, tmp_path / "split", data_source=fakes.FakeData(), show_progress=False, stop_after=2
    )
    assert first.stopped is trainer.StopReason.STOP_AFTER
    resumed = trainer.train(
        config, tmp_path / "split", data_source=fakes.FakeData(), show_progress=False
    )
    assert resumed.step == 4
    chex.assert_trees_all_equal(_params(resumed.state.params), _params(whole.state.params))


def test_overrides_and_normalisation_the_weights_need(pretrained):
    source, before = pretrained
    loaded = finetune.Pretrained(
        variables=_params(before.state.variables()),
        model=fakes.TINY_MODEL,
        overrides={"width": 16},
        preprocessing=None,
        record={},
    )
    with pytest.raises(finetune.FinetuneError, match=r"--config.model_overrides.width=16"):
        finetune.check_fits(loaded, _config(source), "W")
    from cnn_flax.data.eval_transform import Preprocessing
    from cnn_flax.models import EvalTransform

    other = Preprocessing(EvalTransform(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    loaded = finetune.Pretrained(loaded.variables, fakes.TINY_MODEL, {}, other.to_json(), {})
    with pytest.raises(finetune.FinetuneError, match=r"normalised otherwise.*data.mean='\(127.5"):
        finetune.check_fits(loaded, _config(source), "W")


def test_predict_from_a_workdir_uses_the_runs_preprocessing_and_class_names(
    pretrained, tmp_path, capsys
):
    """predict on a training workdir: the run's eval transform (config.json) and normalisation,
    the data set's class names (classes.json), the same logits as the eval step computes."""
    from PIL import Image

    from cnn_flax.cli import predict
    from cnn_flax.data.mixing import normalize
    from cnn_flax.models import create_model

    workdir, result = pretrained
    config = json.loads((workdir / "config.json").read_text())
    images = fakes.EVAL[0][:4]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"eval{i}.png"))
        Image.fromarray(image).save(paths[-1])
    assert predict.main([f"--checkpoint={workdir}", "--top-k=2", *paths]) == 0
    captured = capsys.readouterr()
    rows = captured.out.splitlines()
    assert config["ema_decay"] is None and "raw weights" not in captured.err  # no EMA: no note

    model = create_model(fakes.TINY_MODEL, num_classes=fakes.NUM_CLASSES)
    x = normalize(images, mean=config["data"]["mean"], std=config["data"]["std"])
    logits = np.asarray(model.apply(_params(result.state.variables()), x, train=False))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for i, path in enumerate(paths):
        at = rows.index(path)
        prob, index, label = rows[at + 1].split(maxsplit=2)
        best = int(np.argmax(logits[i]))
        assert (int(index), label) == (best, CLASS_NAMES[best])
        assert float(prob) == pytest.approx(probs[i, best], abs=1e-4)


def test_evaluate_refuses_a_config_with_other_preprocessing(pretrained, capsys):
    from cnn_flax.cli import evaluate

    workdir, _ = pretrained
    code = evaluate.cli(
        ["--config=quickstart", f"--checkpoint={workdir}", "--config.data.image_size=12"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "crop 8 vs 12" in err and "--config.data.image_size=8" in err


def test_predict_names_the_raw_weights_of_a_run_that_kept_ema(tmp_path, capsys):
    """A run with averaged weights: predict says it uses the raw ones, which the trainer's Done
    line names first, so its numbers are not taken for the EMA figure."""
    from PIL import Image

    from cnn_flax.cli import predict

    config = fakes.tiny_config(total_steps=2, eval_every_steps=2, checkpoint_every_steps=0)
    config.ema_decay = 0.5
    trainer.train(config, tmp_path / "run", data_source=NamedFakeData(), show_progress=False)
    Image.fromarray(fakes.EVAL[0][0]).save(tmp_path / "x.png")
    capsys.readouterr()
    assert predict.main([f"--checkpoint={tmp_path / 'run'}", str(tmp_path / "x.png")]) == 0
    err = capsys.readouterr().err
    assert "Predicting with the raw weights" in err and "EMA" in err, err

"""The one validation of a training config (training.config_checks), from the library and from
the command line: each bad value is one line naming its field, before any data or compile."""

from __future__ import annotations

import textwrap

import pytest

from cnn_flax import configs
from cnn_flax.cli import train
from cnn_flax.configs import base
from cnn_flax.training.config_checks import check_config


def _quickstart(**changes):
    config = configs.get_config("quickstart")
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def test_every_recipe_passes():
    for recipe in configs.list_recipes():
        check_config(configs.get_config(recipe))
    check_config(base.get_base_config())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"total_steps": 0}, r"total_steps=0 must be an integer >= 1"),
        ({"total_steps": -5}, r"^total_steps=-5"),  # names total_steps, not the warm-up
        ({"num_epochs": 0.0}, r"num_epochs=0.0"),
        ({"grad_accum_steps": 0}, r"grad_accum_steps=0"),
        ({"grad_accum_steps": 5}, r"grad_accum_steps=5 must divide batch_size=32"),
        ({"data__mean": (1.0, 2.0)}, r"data.mean=\(1.0, 2.0\) needs 3 numbers"),
        ({"data__std": (1.0, 0.0, 1.0)}, r"data.std=.*all > 0"),
        ({"data__image_size": 0}, r"data.image_size=0 must be an integer >= 1"),
        ({"data__image_size": -3}, r"data.image_size=-3"),
        ({"schedule__warmup_epochs": 20.0}, r"schedule.warmup_epochs=20.0 is longer"),
        ({"schedule__name": "cosin"}, r"schedule.name='cosin'.*Did you mean 'cosine'"),
        ({"optimizer__name": "sgdd"}, r"optimizer.name='sgdd'"),
        ({"optimizer__lr_scaling": "sqrt"}, r"optimizer.lr_scaling='sqrt'"),
        ({"schedule__boundaries_epochs": (60.0, 30.0)}, r"increasing order"),
        ({"bn_mode": "sync"}, r"bn_mode='sync'"),
        ({"dtype": "float64"}, r"dtype='float64'"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0"),
        ({"data__num_parallel_calls": 0}, r"data.num_parallel_calls=0"),
        ({"ema_every_steps": 0}, r"ema_every_steps=0 must be an integer >= 1"),
        ({"ema_warmup": True, "ema_copy_in_warmup": True}, r"two warm-ups of the EMA"),
        ({"finetune__trainable": "backbone"}, r"finetune.trainable='backbone'"),
        ({"finetune__backbone_lr_mult": -1.0}, r"finetune.backbone_lr_mult=-1.0"),
        ({"finetune__weights_format": "keras"}, r"finetune.weights_format='keras' is not one"),
        ({"optimizer__lr": -0.1}, r"optimizer.lr=-0.1"),
    ],
)
def test_bad_values_name_their_field(changes, message):
    with pytest.raises(ValueError, match=message):
        check_config(_quickstart(**changes))


def test_schema_typos_in_a_file_are_refused():
    config = _quickstart()
    with config.unlocked():
        config.batch_sise = 8
    with pytest.raises(ValueError, match="'batch_sise'.*Did you mean: batch_size"):
        check_config(config)
    config = _quickstart()
    with config.unlocked():
        del config.optimizer["momentum"]
    with pytest.raises(ValueError, match="'optimizer.momentum' is missing"):
        check_config(config)


def test_not_a_config_dict_is_refused():
    with pytest.raises(ValueError, match="dict, not an ml_collections.ConfigDict"):
        check_config({"batch_size": 8})


# --- the command line: one line, exit status 2, nothing written ----------------------------------


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("total_steps=0", "total_steps=0 must be an integer >= 1"),
        ("total_steps=-5", "total_steps=-5 must be an integer >= 1"),
        ("schedule.boundaries_epochs=abc", "'schedule.boundaries_epochs' is a tuple"),
        ("schedule.boundaries_epochs=(30, abc)", "'schedule.boundaries_epochs' is a tuple"),
        ("schedule.boundaries_epochs=('a', 'b')", "is a tuple of numbers; 'a'"),
        ("data.mean=(1,2)", "data.mean=(1, 2) needs 3 numbers"),
        ("data.image_size=0", "data.image_size=0 must be an integer >= 1"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(override, message, capsys, tmp_path):
    argv = ["train", "--config=quickstart", f"--config.{override}", f"--workdir={tmp_path / 'w'}"]
    assert train.cli(argv) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1 / 0\n", "failed to import: ZeroDivisionError: division by zero (at "),
        ("def get_config():\n    return {'batch_size': 8}\n", "returned a dict, not an"),
        ("def get_config():\n    raise KeyError('model')\n", "get_config() of"),
        ("def get_config(:\n", "failed to import: SyntaxError"),
    ],
)
def test_cli_broken_config_file_is_one_line(body, message, capsys, tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text(textwrap.dedent(body))
    argv = ["train", f"--config={path}", f"--workdir={tmp_path / 'w'}"]
    assert train.cli(argv) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "w").exists()


def test_tuple_overrides_keep_working():
    config = configs.apply_overrides(
        configs.get_config("quickstart"),
        ["schedule.boundaries_epochs=(30, 60, 80)", "data.mean=(1.0, 2.0, 3.0)"],
    )
    assert config.schedule.boundaries_epochs == (30, 60, 80)
    assert config.data.mean == (1.0, 2.0, 3.0)
    configs.apply_overrides(config, ["schedule.boundaries_epochs=50"])
    assert config.schedule.boundaries_epochs == (50,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.eval_crop_size=0", "data.eval_crop_size"),
        ("data.eval_resize_size=100", "smaller than the eval crop"),
        ("data.repeated_augmentation=0", "data.repeated_augmentation"),
        ("data.augment.random_erasing=1.5", "data.augment.random_erasing"),
        ("data.max_image_pixels=0", "data.max_image_pixels"),
    ],
)
def test_data_pipeline_fields_are_checked(override, message):
    from cnn_flax import configs
    from cnn_flax.training.config_checks import check_config

    config = configs.apply_overrides(configs.get_config("resnet50"), [override])
    with pytest.raises(ValueError, match=message):
        check_config(config)

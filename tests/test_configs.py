"""Recipes load, every registered model resolves to a recipe, overrides are checked."""

from __future__ import annotations

import importlib
import textwrap

import ml_collections
import pytest

from cnn_flax import configs
from cnn_flax.configs import base, recipes
from cnn_flax.models import create_model, list_models, model_info

REQUIRED_KEYS = ("total_steps", "batch_size", "seed", "checkpoint_every_steps", "eval_every_steps")


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if isinstance(value, ml_collections.ConfigDict) and key != "model_overrides":
            keys |= _flat(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize("recipe", configs.list_recipes())
def test_recipe_loads_with_schema_and_docstring(recipe):
    config = configs.get_config(recipe)
    for key in REQUIRED_KEYS:
        assert key in config, f"{recipe} lacks {key}"
    # Recipes change values, never the schema the trainer and data pipeline read.
    assert _flat(config) == _flat(base.get_base_config())
    create_model(config.model, num_classes=10, **config.model_overrides)
    doc = importlib.import_module(f"cnn_flax.configs.{recipe}").__doc__
    assert "python -m cnn_flax.train --config=" in doc
    assert "top-1" in doc.lower() or "accuracy" in doc.lower() or "%" in doc


@pytest.mark.parametrize("name", list_models())
def test_every_model_resolves_to_its_family_recipe(name):
    config = configs.get_config(name)
    info = model_info(name)
    assert config.model == name
    # Recipes change values, never the schema the trainer and data pipeline read.
    assert _flat(config) == _flat(base.get_base_config())
    # The model's resolution unless the recipe or its base trains at another size (FixRes).
    if "data.image_size" not in {**recipes.BASES[info.recipe.base], **info.recipe.overrides}:
        assert config.data.image_size == info.resolution
    # The overrides the recipe passes are fields the model accepts.
    create_model(name, num_classes=10, **config.model_overrides)
    # Every recipe names its source; models with published weights have a target top-1.
    assert info.recipe.source and config.recipe.startswith(name)
    # Models with published weights have a target top-1, or say why there is none.
    if info.weights:
        assert info.recipe.target_source, name
        assert config.target_top1 is not None or "none" in info.recipe.target_source, name


def test_family_recipes_reach_the_config():
    assert configs.get_config("resnet20").data.name == "cifar10"
    assert configs.get_config("resnet110").schedule.warmup_shape == "constant"
    assert configs.get_config("resnet56").schedule.warmup_shape == "linear"
    assert configs.get_config("resnet50").optimizer.nesterov is True
    effnet = configs.get_config("efficientnet_b3")
    assert effnet.model_overrides.drop_path == 0.2
    assert effnet.optimizer.name == "rmsprop"
    assert (effnet.data.image_size, effnet.target_top1) == (300, 81.6)
    assert configs.get_config("googlenet").aux_loss_weight == 0.3
    assert configs.get_config("vgg16").optimizer.lr == 0.01
    assert configs.get_config("vgg16_bn").optimizer.lr == 0.1
    assert configs.get_config("quickstart").data.name.startswith("digits")


def test_load_from_file(tmp_path):
    path = tmp_path / "my_run.py"
    path.write_text(
        textwrap.dedent(
            """
            from cnn_flax import configs

            def get_config():
                config = configs.get_config("resnet18")
                config.batch_size = 64
                return config
            """
        )
    )
    config = configs.get_config(str(path))
    assert (config.model, config.batch_size) == ("resnet18", 64)
    quickstart = configs.__file__.replace("__init__", "quickstart")
    assert configs.get_config(quickstart).model == "resnet20"


def test_unknown_names_list_close_ones(tmp_path):
    with pytest.raises(ValueError, match="resnet50"):
        configs.get_config("resnt50")
    with pytest.raises(ValueError, match="does not exist"):
        configs.get_config(str(tmp_path / "missing.py"))


def test_overrides_of_every_type():
    config = configs.get_config("resnet50")
    configs.apply_overrides(
        config,
        [
            "batch_size=512",
            "optimizer.lr=0.2",
            "optimizer.nesterov=false",
            "schedule.name=step",
            "schedule.boundaries_epochs=(30, 60, 80)",
            "total_steps=1000",
            "data.augment.autoaugment=v0",
            "--config.seed=3",
            "model_overrides.zero_init_residual=True",
        ],
    )
    assert config.batch_size == 512 and isinstance(config.batch_size, int)
    assert config.optimizer.lr == 0.2
    assert config.optimizer.nesterov is False
    assert config.schedule.name == "step"
    assert config.schedule.boundaries_epochs == (30, 60, 80)
    assert config.total_steps == 1000
    assert config.data.augment.autoaugment == "v0"
    assert config.seed == 3
    assert config.model_overrides.zero_init_residual is True
    configs.apply_overrides(config, ["total_steps=None", "optimizer.weight_decay=0"])
    assert config.total_steps is None
    assert config.optimizer.weight_decay == 0.0 and isinstance(config.optimizer.weight_decay, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lrr=1", "Unknown config key 'optimizer.lrr'.*optimizer.lr"),
        ("warmup_epochs=1", "schedule.warmup_epochs"),
        ("optimzer.lr=1", "Unknown config key 'optimzer'.*optimizer"),
        ("batch_size=1.5", "batch_size.*int"),
        ("optimizer.lr=fast", "optimizer.lr.*float"),
        ("optimizer.nesterov=maybe", "bool"),
        ("batch_size=None", "cannot be None"),
        ("optimizer=sgd", "group"),
        ("batch_size", "key=value"),
    ],
)
def test_bad_overrides_fail_with_clear_message(override, message):
    with pytest.raises(ValueError, match=message):
        configs.apply_overrides(configs.get_config("quickstart"), [override])


def test_split_config_args():
    rest, overrides = configs.split_config_args(
        ["--workdir=/tmp/x", "--config.batch_size=8", "--config.optimizer.lr", "0.5", "-v"]
    )
    assert rest == ["--workdir=/tmp/x", "-v"]
    assert overrides == ["batch_size=8", "optimizer.lr=0.5"]


def test_finetune_recipe_names_its_model_after_a_colon():
    lite = configs.get_config("finetune")
    assert lite.model == "efficientnet_lite0" and lite.finetune.backbone_lr_mult == 0.1
    # The model's published weights' inputs: Lite's TF normalisation, 224 of a 256 resize.
    assert lite.data.mean == (127.0,) * 3 and lite.data.std == (128.0,) * 3
    assert (lite.data.image_size, round(lite.data.image_size / lite.data.eval_crop_ratio)) == (
        224,
        256,
    )
    resnet = configs.get_config("finetune:resnet50")
    assert resnet.model == "resnet50" and resnet.data.mean == base.IMAGENET_MEAN
    assert round(224 / resnet.data.eval_crop_ratio) == 232  # torchvision's V2 weights
    with pytest.raises(ValueError, match="Unknown model .resnet5.. Did you mean: .*resnet50"):
        configs.get_config("finetune:resnet5")
    with pytest.raises(ValueError, match="takes no argument"):
        configs.get_config("quickstart:resnet50")


def test_model_recipes_take_the_default_weights_normalisation():
    assert configs.get_config("efficientnet_lite0").data.mean == (127.0,) * 3
    # Lite3's only published set is timm's port of the Lite release (mean 0.5, std 0.5).
    assert configs.get_config("efficientnet_lite3").data.mean == (127.5,) * 3
    assert configs.get_config("plain18").data.mean == base.IMAGENET_MEAN  # no weights
    assert configs.get_config("mobilenet_v2").data.std == base.IMAGENET_STD

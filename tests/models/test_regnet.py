"""RegNet specifics the registry-wide tests do not cover: the design-space derivation of stage
widths and depths (against torchvision's own ``BlockParams``, for every variant and for random
points of the design space), squeeze-and-excitation placement, and the recipe groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import configs
from cnn_flax.models import create_model, list_models, model_info
from cnn_flax.models.regnet import design_stages

REGNETS = list_models("regnet")


def _torchvision_stages(*, depth, w_0, w_a, w_m, group_width, bottleneck_ratio=1.0):
    block_params = pytest.importorskip("torchvision.models.regnet").BlockParams
    bp = block_params.from_init_params(
        depth=depth,
        w_0=w_0,
        w_a=w_a,
        w_m=w_m,
        group_width=group_width,
        bottleneck_multiplier=bottleneck_ratio,
    )
    return [
        (w, d, g, b)
        for w, d, g, b in zip(
            bp.widths, bp.depths, bp.group_widths, bp.bottleneck_multipliers, strict=True
        )
    ]


def _ours(stages):
    return [(s.width, s.depth, s.group_width, s.bottleneck_ratio) for s in stages]


def test_every_torchvision_regnet_is_registered():
    torchvision = pytest.importorskip("torchvision")
    assert sorted(REGNETS) == sorted(torchvision.models.list_models(include="regnet*"))


@pytest.mark.torch
@pytest.mark.parametrize("name", REGNETS)
def test_stages_match_torchvision_block_params(name):
    model = create_model(name)
    design = {
        "depth": model.depth,
        "w_0": model.w_0,
        "w_a": model.w_a,
        "w_m": model.w_m,
        "group_width": model.group_width,
        "bottleneck_ratio": model.bottleneck_ratio,
    }
    assert _ours(model.stages) == _torchvision_stages(**design)
    assert len(model.stages) == 4  # every torchvision RegNet has four stages


@pytest.mark.torch
def test_random_design_points_match_torchvision_block_params():
    """The derivation, not just 15 points of it: random designs (the paper's sampling ranges,
    Sec. 4: d < 64, w_0 and w_a < 256, 1.5 <= w_m <= 3, g from 1 to 32, b in {1, 2, 4}ths)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        design = {
            "depth": int(rng.integers(1, 64)),
            "w_0": int(rng.integers(1, 32)) * 8,
            "w_a": round(float(rng.uniform(0, 256)), 2),
            "w_m": round(float(rng.uniform(1.5, 3)), 2),
            "group_width": int(rng.choice([1, 2, 4, 8, 16, 24, 32])),
            "bottleneck_ratio": float(rng.choice([1.0, 0.5, 0.25])),
        }
        assert _ours(design_stages(**design)) == _torchvision_stages(**design), design


def test_design_fields_drive_the_model():
    """Overriding a design-space field changes the network the way the derivation says."""
    model = create_model("regnet_x_400mf", num_classes=10, w_m=2.0, depth=12)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    params = variables["params"]
    for s, stage in enumerate(model.stages, start=1):
        blocks = [k for k in params if k.startswith(f"stage{s}_block")]
        assert len(blocks) == stage.depth
        conv2 = params[f"stage{s}_block0"]["conv2"]["conv"]["kernel"]
        assert conv2.shape == (3, 3, stage.group_width, stage.bottleneck_width)
        assert params[f"stage{s}_block0"]["conv3"]["conv"]["kernel"].shape[-1] == stage.width
    assert sum(s.depth for s in model.stages) == 12


@pytest.mark.parametrize(
    "design",
    [
        {"w_0": 20},  # not a multiple of 8
        {"w_m": 1.0},
        {"w_a": -1.0},
        {"depth": 0},
    ],
)
def test_designs_outside_the_space_are_refused(design):
    full = {"depth": 16, "w_0": 48, "w_a": 27.89, "w_m": 2.09, "group_width": 8, **design}
    with pytest.raises(ValueError, match="outside the design space"):
        design_stages(**full)


def test_squeeze_excite_only_in_regnet_y_at_a_quarter_of_the_block_input():
    def shapes(name):
        model = create_model(name, num_classes=10)
        return jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
        )["params"]

    y = shapes("regnet_y_400mf")  # stages of 48, 104, 208, 440 channels; stem 32
    se = y["stage1_block0"]["se"]
    assert se["fc1"]["kernel"].shape == (1, 1, 48, 8)  # round(0.25 * 32) of the 48-wide 3x3
    assert se["fc2"]["kernel"].shape == (1, 1, 8, 48)
    assert y["stage2_block1"]["se"]["fc1"]["kernel"].shape == (1, 1, 104, 26)  # 0.25 * 104
    # Projection shortcuts exactly where the shape changes: each stage's first block.
    assert all(("shortcut" in v) == k.endswith("_block0") for k, v in y.items() if "stage" in k)
    x = shapes("regnet_x_400mf")
    assert not any("se" in v for k, v in x.items() if k.startswith("stage"))


# torchvision's README commands: (batch per GPU x 8 GPUs, --lr) per model group, and the
# exception it notes for regnet_y_400mf.
README_COMMANDS = {
    "regnet_x_400mf": (1024, 0.8),
    "regnet_y_400mf": (1024, 0.4),
    "regnet_y_1_6gf": (1024, 0.8),
    "regnet_x_3_2gf": (512, 0.4),
    "regnet_y_8gf": (512, 0.4),
    "regnet_x_16gf": (512, 0.4),
    "regnet_x_32gf": (256, 0.2),
    "regnet_y_16gf": (256, 0.2),
    "regnet_y_32gf": (256, 0.2),
}


@pytest.mark.parametrize(("name", "command"), README_COMMANDS.items())
def test_recipe_groups_follow_torchvision_commands(name, command):
    batch, peak_lr = command
    config = configs.get_config(name)
    assert config.batch_size == batch
    # The config's rate is per 256 images (linear scaling); torchvision's --lr is the peak.
    assert config.optimizer.lr * batch / 256 == pytest.approx(peak_lr)
    assert (config.num_epochs, config.optimizer.weight_decay) == (100.0, 5e-5)
    assert (config.schedule.name, config.schedule.warmup_epochs) == ("cosine", 5.0)
    assert config.schedule.warmup_init_factor == 0.1
    assert config.data.eval_crop_ratio == 0.875  # 224 of 256, the V1 evaluation
    # The command reproduces torchvision's V1 weights: their top-1 is the target.
    v1 = next(w for w in model_info(name).weights if w.tag == "IMAGENET1K_V1")
    assert config.target_top1 == v1.top1

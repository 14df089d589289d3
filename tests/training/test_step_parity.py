"""One-step training parity: cnn_flax's train step against the same step written in torch.

The train step (``cnn_flax.steps.make_train_step``) is run for two updates on ResNet-18 under
torchvision's V2 recipe (``configs.recipes.TORCHVISION_V2``: cross-entropy with label smoothing
0.1, SGD with momentum 0.9, nesterov off, weight decay 2e-5 on everything but the norm layers,
an EMA of weights and BatchNorm statistics) and compared with torch doing what torchvision's
reference script (references/classification/train.py) does from the same state: the
``F.cross_entropy(label_smoothing=)`` loss, ``torch.optim.SGD`` with two parameter groups (torch
adds the weight decay to the gradient before the momentum) and the EMA update ``ema = d * ema +
(1 - d) * current`` over parameters and buffers (``ExponentialMovingAverage(use_buffers=True)``).
Augmentations that draw random numbers (mixup, cutmix, random erasing) are off: the two
frameworks cannot draw the same ones. The learning rate and EMA decay come from cnn_flax's
schedule and plan at those steps (their arithmetic has its own tests against torchvision's
formulas): this test is about what a step does with them.

``python -m tests.training.test_step_parity`` prints the figures.
"""

from __future__ import annotations

import copy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnn_flax.configs import get_config  # noqa: E402
from cnn_flax.configs.recipes import TORCHVISION_V2  # noqa: E402
from cnn_flax.convert import from_torchvision  # noqa: E402
from cnn_flax.models import create_model  # noqa: E402
from cnn_flax.training import optim, steps  # noqa: E402
from cnn_flax.training.run_plan import make_run_plan  # noqa: E402
from cnn_flax.training.state import create_train_state  # noqa: E402
from tests.convert.test_train_parity import relative_errors  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402

NAME = "resnet18"
RES = 32
BATCH = 8
NUM_CLASSES = 1000
NUM_TRAIN = 800  # 100 updates per epoch: the EMA's "every 32 iterations" counts within it
# Both compute in float64 (the step casts the logits to float32 for the loss, by design, so the
# gradients carry float32 rounding of the loss: about 1e-7); changes (new - old) are compared,
# each relative to its own scale.
RTOL = 1e-5


def _config():
    config = get_config("quickstart")
    for path, value in TORCHVISION_V2.items():
        node = config
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    config.model = NAME
    config.dtype = "float32"
    config.batch_size = BATCH
    config.total_steps = 600  # one update per recipe epoch: warm-up = 5 updates
    config.data.image_size = RES
    config.data.augment.mixup_alpha = 0.0
    config.data.augment.cutmix_alpha = 0.0
    config.data.augment.random_erasing = 0.0
    config.ema_every_steps = 1
    # From step 0 (where a fresh optimiser state's count is): no warm-up, so that the EMA
    # averages (the recipe copies the weights through its warm-up) and the rate is the peak's.
    config.schedule.warmup_epochs = 0.0
    config.ema_copy_in_warmup = False
    # A decay whose complement is exact in binary: the EMA's decay is a float32 scalar (1 - d
    # for the recipe's adjusted d = 1 - 2.7e-7 rounds to 2.4e-7 there), and two updates of a
    # 0.99998-average move too little for float64 to resolve against the weights.
    config.ema_decay = 0.75
    config.ema_adjust = False
    return config


def _batches(num: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.integers(0, 256, (BATCH, RES, RES, 3), dtype=np.uint8),
            "label": rng.integers(0, NUM_CLASSES, (BATCH,)).astype(np.int32),
        }
        for _ in range(num)
    ]


def _torch_layout(name: str, tv, values: dict) -> dict:
    """``values`` (torch parameter name -> tensor) laid out as cnn_flax's params, through the
    family's own mapping; buffers fill the keys the mapping also needs."""
    sd = {k: v.detach().clone() for k, v in tv.state_dict().items()}
    sd.update({k: v.detach() for k, v in values.items()})
    return from_torchvision(name, sd)


def run_both(num_steps: int = 2) -> dict:
    """Both steps ``num_steps`` times from the same state; relative errors of what changed."""
    steps.DTYPES.setdefault("float64", jnp.float64)  # for this comparison only
    try:
        with jax.enable_x64(True):
            return _run_both(num_steps)
    finally:
        steps.DTYPES.pop("float64", None)


def _run_both(num_steps: int) -> dict:
    config = _config()
    config.dtype = "float64"
    plan = make_run_plan(config, num_train=NUM_TRAIN)
    schedule = optim.create_learning_rate_schedule(config, plan)
    tv = build_torchvision(NAME, torchvision, resolution=RES)
    start = jax.tree.map(
        lambda a: np.asarray(a, np.float64), from_torchvision(NAME, tv.state_dict())
    )
    tv = tv.double()
    start_sd = {k: v.clone() for k, v in tv.state_dict().items()}
    batches = _batches(num_steps)

    # cnn_flax
    model = create_model(NAME, num_classes=NUM_CLASSES, dtype=jnp.float64)
    tx = optim.create_optimizer(config, plan)
    state = create_train_state(start, tx, use_ema=True, ema_batch_stats=True)
    step = jax.jit(
        steps.make_train_step(
            model, tx, config=config, num_classes=NUM_CLASSES, ema=plan.ema, learning_rate_fn=None
        )
    )
    for batch in batches:
        state, _ = step(state, jax.tree.map(jnp.asarray, batch))

    # torch, as references/classification/train.py
    tv.train()
    ema = copy.deepcopy(tv)
    norm_params = {
        id(p)
        for m in tv.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False)
    }
    decay = [p for p in tv.parameters() if id(p) not in norm_params]
    no_decay = [p for p in tv.parameters() if id(p) in norm_params]
    opt = config.optimizer
    sgd = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": opt.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=0.0,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
    )
    mean = torch.tensor(config.data.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(config.data.std, dtype=torch.float64).view(1, 3, 1, 1)
    for i, batch in enumerate(batches):
        update = i
        for group in sgd.param_groups:
            group["lr"] = float(schedule(update))
        images = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).astype(np.float64))
        logits = tv((images - mean) / std)
        loss = torch.nn.functional.cross_entropy(
            logits,
            torch.from_numpy(batch["label"]).long(),
            label_smoothing=config.label_smoothing,
        )
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        assert plan.ema.is_update(update) and update > plan.ema.copy_through, "no averaging"
        d = plan.ema.decay
        with torch.no_grad():
            for e, p in zip(ema.state_dict().values(), tv.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(p, alpha=1 - d)

    def torch_changes(module):
        # Differences taken in torch's float64: the mapping hands out float32, whose rounding
        # of the weights themselves would swamp a step's change.
        return from_torchvision(
            NAME,
            {
                k: v - start_sd[k] if v.dtype.is_floating_point else v
                for k, v in module.state_dict().items()
            },
        )

    params_t = torch_changes(tv)
    momentum_t = _torch_layout(
        NAME, tv, {k: sgd.state[p]["momentum_buffer"] for k, p in tv.named_parameters()}
    )["params"]
    ema_t = torch_changes(ema)
    trace = optax.tree_utils.tree_get(state.opt_state, "trace")

    def changed(tree, base):
        return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b), tree, base)

    def worst(ours, theirs):
        errors = relative_errors(ours, theirs)
        leaf = max(errors, key=errors.get)
        return errors[leaf], leaf

    p0, s0 = start["params"], start["batch_stats"]
    return {
        "params (change)": worst(changed(state.params, p0), params_t["params"]),
        "momentum buffer": worst(trace, momentum_t),
        "batch_stats (change)": worst(changed(state.batch_stats, s0), params_t["batch_stats"]),
        "EMA params (change)": worst(changed(state.ema_params, p0), ema_t["params"]),
        "EMA batch_stats (change)": worst(changed(state.ema_batch_stats, s0), ema_t["batch_stats"]),
        "lr": [float(schedule(i)) for i in range(num_steps)],
        "ema_decay": plan.ema.decay,
    }


@pytest.mark.torch
def test_two_train_steps_match_torch():
    """Parameters, momentum buffers, BatchNorm statistics and the EMA of both after two updates
    of torchvision's V2 recipe, within float32 rounding of each other."""
    result = run_both()
    report = "; ".join(
        f"{k} {v[0]:.2g} ({v[1]})" for k, v in result.items() if isinstance(v, tuple)
    )
    print(report)
    for value in result.values():
        if isinstance(value, tuple):
            assert value[0] < RTOL, report


if __name__ == "__main__":
    result = run_both(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    for key, value in result.items():
        print(f"{key}: {value}")

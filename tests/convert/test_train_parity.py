"""Training-mode parity with torchvision: logits, every parameter's gradient, and the BatchNorm
running statistics after one train-mode forward pass.

Eval-mode parity (``test_parity.py``) cannot see what only training does: batch statistics in the
forward pass, the backward pass, and how the running statistics move. Here both models start from
the same realistic random weights (``torch_reference.build_torchvision``), run in training mode in
float64 (so that rounding cannot hide a structural difference) with dropout and stochastic depth
off, and differentiate the same scalar: a fixed random linear function of the logits, which
reaches every parameter. torchvision's gradients, an ordinary ``state_dict`` of tensors, are
converted with the family's own mapping (``from_torchvision``), so a mapping that transposes,
splits or reorders weights is checked in the same layout as the weights themselves.

``python -m tests.convert.test_train_parity [NAME ...]`` prints the table for the default
selection (each family's first model plus ``tests.helpers.OTHER_CODE_PATHS``), with the running
variance error under Flax's biased convention beside torch's (``bn_running_var``).
"""

from __future__ import annotations

import copy
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import create_model, list_models, model_info
from tests.helpers import input_resolution, is_representative

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnn_flax.convert import from_torchvision  # noqa: E402
from cnn_flax.models import norm as norm_lib  # noqa: E402
from cnn_flax.weights import model_overrides  # noqa: E402
from tests.convert.torch_reference import build_torchvision  # noqa: E402

WITH_TORCHVISION = [n for n in list_models() if model_info(n).torchvision]
BATCH = 4
# Relative errors (to each tensor's own scale) allowed in float64. The measurement found
# 7e-8 on logits and 1.3e-7 on gradients; float64 leaves room for deep nets' accumulation.
RTOL = 1e-6
# Models whose train-mode set-up differs from the eval-mode test's: Inception v3's auxiliary head
# needs 299-pixel inputs (17x17 maps out of Mixed_6e); without it, 75 pixels train the main tower.
NO_AUX = {"inception_v3": 75}
# The default run: one model per kind of block whose training-mode behaviour differs (the nine of
# issue 18: plain and bottleneck residual blocks, grouped convolutions, inverted residuals with
# squeeze-excitation and hard-swish, MBConv with stochastic depth, RegNet's SE blocks, channel
# shuffles, LayerNorm ConvNeXt blocks, Transformer blocks). Each costs about 34 s of CPU here
# (float64, jitted, compile included), so the other representatives of OTHER_CODE_PATHS (all of
# which pass, see the README's table) run with `-m variants`, with every other variant.
# One model per kind of block the default run must cover (BatchNorm bottleneck, grouped
# convolution, depthwise + squeeze-excite, LayerNorm + layer scale, attention); the other models,
# resnet18, mobilenet_v3_small, regnet_y_400mf and shufflenet among them, run with -m variants.
TRAIN_DEFAULT = frozenset(
    {"resnet50", "resnext50_32x4d", "efficientnet_b0", "convnext_tiny", "vit_b_16"}
)


def _train_params() -> list:
    return [
        pytest.param(n, id=n, marks=[] if n in TRAIN_DEFAULT else [pytest.mark.variants])
        for n in WITH_TORCHVISION
    ]


def _no_randomness(model: nn.Module) -> dict:
    """Overrides that switch dropout and stochastic depth off in a cnn_flax model."""
    names = ("dropout", "attention_dropout", "drop_path", "aux_dropout")
    return {n: 0.0 for n in names if getattr(model, n, None)}


def _torch_train_mode_without_randomness(tv: torch.nn.Module) -> torch.nn.Module:
    """torchvision's model in training mode (batch statistics, auxiliary heads) with every
    dropout and stochastic-depth probability at 0."""
    tv.train()
    for module in tv.modules():
        if isinstance(module, torch.nn.Dropout | torchvision.ops.StochasticDepth):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
        for attr in ("attention_dropout", "dropout"):  # Swin's attention: plain floats
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
    return tv


def _main_logits(output):
    # GoogLeNet and Inception v3 return (logits, aux...) in training mode.
    return output[0] if isinstance(output, tuple) else output


# A leaf's error is relative to its own scale, or to this fraction of the largest leaf's, when
# larger: some gradients are exactly zero in theory and only rounding noise in both frameworks
# (the bias of a BatchNorm whose output feeds, without a shortcut, a convolution and another
# training-mode BatchNorm, which removes any per-channel shift).
FLOOR = 1e-3


def relative_errors(ours, theirs) -> dict[str, float]:
    """Per leaf: max |ours - theirs| / max(max |theirs|, FLOOR * the largest leaf's scale)."""
    pairs = []
    for path, expected in jax.tree_util.tree_leaves_with_path(theirs):
        got = ours
        for key in path:
            got = got[key.key]
        pairs.append((path, np.asarray(expected, np.float64), np.asarray(got, np.float64)))
    largest = max((float(np.max(np.abs(e))) for _, e, _ in pairs if e.size), default=0.0)
    out = {}
    for path, expected, got in pairs:
        if not expected.size:
            continue
        scale = max(float(np.max(np.abs(expected))), FLOOR * largest)
        err = float(np.max(np.abs(got - expected)))
        out[jax.tree_util.keystr(path)] = err / scale if scale > 0 else err
    return out


def train_mode_parity(name: str, *, with_biased: bool = False) -> dict:
    """One train-mode step of ``name`` in both frameworks, float64, from the same weights.

    Returns the worst relative errors of the logits, the gradients and the running statistics
    (``"stats"``: torch's convention, the default; ``"stats_biased"`` with Flax's biased
    running variance when ``with_biased``), with the leaves they came from.
    """
    res = NO_AUX.get(name, input_resolution(name))
    tv_kwargs = {}
    if name in NO_AUX:
        tv_kwargs = {"aux_logits": False}
    tv = _build(name, res, tv_kwargs)
    variables = from_torchvision(name, tv.state_dict())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, res, res, 3))

    tv64 = _torch_train_mode_without_randomness(copy.deepcopy(tv).double())
    logits_t = _main_logits(tv64(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())))
    weights = rng.standard_normal(tuple(logits_t.shape))
    (logits_t * torch.from_numpy(weights)).sum().backward()
    # Gradients as a state_dict: parameters' gradients, buffers as they are (the mapping needs
    # every key); the mapping then lays them out as cnn_flax's parameters.
    grad_sd = {k: v.detach().clone() for k, v in tv64.state_dict().items()}
    for key, param in tv64.named_parameters():
        grad_sd[key] = param.grad.detach() if param.grad is not None else torch.zeros_like(param)
    grads_t = from_torchvision(name, grad_sd)["params"]
    stats_t = from_torchvision(name, tv64.state_dict()).get("batch_stats", {})

    overrides = model_overrides(name, variables)
    if name in NO_AUX:
        overrides["aux_logits"] = False
    num_classes = int(logits_t.shape[-1])
    with jax.enable_x64(True):
        model = create_model(name, num_classes=num_classes, dtype=jnp.float64, **overrides)
        model = model.clone(**_no_randomness(model))
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        logits, grads, stats = _ours(model, v64, images, weights)
        result = {
            "logits": float(
                np.max(np.abs(logits - logits_t.detach().numpy()))
                / np.max(np.abs(logits_t.detach().numpy()))
            ),
            "grads": _worst(relative_errors(grads, grads_t)),
            "stats": _worst(relative_errors(stats, stats_t)) if stats_t else None,
            "num_params": len(jax.tree.leaves(grads_t)),
            "num_stats": len(jax.tree.leaves(stats_t)),
        }
        if with_biased and stats_t:
            biased = norm_lib.biased_running_var(model)
            _, _, stats_b = _ours(biased, v64, images, weights, grad=False)
            result["stats_biased"] = _worst(relative_errors(stats_b, stats_t))
    return result


def _build(name: str, res: int, kwargs: dict) -> torch.nn.Module:
    if not kwargs:
        return build_torchvision(name, torchvision, resolution=res)
    from tests.convert import torch_reference

    saved = dict(torch_reference.TORCHVISION_KWARGS.get(name, {}))
    torch_reference.TORCHVISION_KWARGS[name] = {**saved, **kwargs}
    try:
        return build_torchvision(name, torchvision, resolution=res)
    finally:
        torch_reference.TORCHVISION_KWARGS[name] = saved


def _worst(errors: dict[str, float]) -> tuple[float, str]:
    leaf = max(errors, key=errors.get)
    return errors[leaf], leaf


def _ours(model, variables, images, weights, *, grad: bool = True):
    """Float64 logits (taken from the last Dense layer, before the model's float32 cast), the
    gradient of ``sum(logits * weights)`` for every parameter, and the new running statistics.

    Jitted: op by op costs three times as much CPU on these small inputs (Flax's dispatch), and
    the representatives' float64 depthwise convolutions, which XLA:CPU rewrites as dense ones
    (test_parity.ours_in_float64), stay small at these widths and resolutions."""
    last_dense = []

    def record_dense(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            last_dense[:] = [out]
        return out

    def loss(params):
        with nn.intercept_methods(record_dense):
            out, updates = model.apply(
                {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
            )
        # SqueezeNet's classifier is a 1x1 convolution followed by ReLU and pooling: its last
        # Dense-like layer is not the logits, so the (float32-cast) output is compared instead.
        logits = last_dense[0] if last_dense and last_dense[0].shape == out.shape else out
        logits = logits.astype(jnp.float64)
        return jnp.sum(logits * weights), (logits, updates.get("batch_stats", {}))

    if not grad:
        _, (logits, stats) = jax.jit(loss)(variables["params"])
        return np.asarray(logits), None, stats
    grads, (logits, stats) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    return np.asarray(logits), grads, stats


def _report(name: str, result: dict) -> str:
    line = f"train-mode parity {name}: logits {result['logits']:.2g}, "
    line += f"grads {result['grads'][0]:.2g} (worst {result['grads'][1]})"
    if result["stats"] is not None:
        line += f", stats {result['stats'][0]:.2g} (worst {result['stats'][1]})"
    return line


@pytest.mark.torch
@pytest.mark.parametrize("name", _train_params())
def test_train_mode_matches_torchvision(name):
    """Logits, every gradient and every running statistic within 1e-6 of torchvision's (relative
    to each tensor's scale), in float64, after one training-mode step."""
    result = train_mode_parity(name)
    report = _report(name, result)
    print(report)
    assert result["logits"] < RTOL, report
    assert result["grads"][0] < RTOL, report
    if result["stats"] is not None:
        assert result["stats"][0] < RTOL, report


@pytest.mark.torch
def test_train_mode_check_finds_a_planted_gradient_bug():
    """The gradient comparison must be able to fail: a stop_gradient slipped into one block
    (a frozen branch is invisible in eval mode, where logits still match) is found."""
    name = "resnet18"
    res = input_resolution(name)
    tv = build_torchvision(name, torchvision, resolution=res)
    variables = from_torchvision(name, tv.state_dict())
    images = np.random.default_rng(0).standard_normal((BATCH, res, res, 3))
    weights = np.random.default_rng(1).standard_normal((BATCH, 1000))
    with jax.enable_x64(True):
        model = create_model(name, num_classes=1000, dtype=jnp.float64)
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)

        def freeze_block(next_fun, args, kwargs, context):
            path = context.module.scope.path if context.module.scope is not None else ()
            if path == ("stage2_block0",) and context.method_name == "__call__":
                return jax.lax.stop_gradient(next_fun(*args, **kwargs))
            return next_fun(*args, **kwargs)

        _, good, _ = _ours(model, v64, images, weights)
        with nn.intercept_methods(freeze_block):
            _, bad, _ = _ours(model, v64, images, weights)
    assert _worst(relative_errors(bad, good))[0] > 1e-2


@pytest.mark.torch
def test_dropout_and_drop_path_keep_rate_and_scale():
    """With dropout and stochastic depth on, as torch's Dropout and StochasticDepth(mode="row"):
    each is kept with probability 1 - p (checked within 5 binomial standard deviations) and the
    kept values are scaled by 1 / (1 - p), so the expectation equals the evaluation output."""
    from cnn_flax.models import layers

    model = create_model("efficientnet_b0", num_classes=10, dropout=0.5, drop_path=0.5)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 32, 32, 3)), jnp.float32)
    from tests.helpers import random_variables

    variables = random_variables(model, x)
    seen = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, nn.Dropout | layers.DropPath):
            seen.append((type(module).__name__, module.rate, np.asarray(args[0]), np.asarray(out)))
        return out

    with nn.intercept_methods(record):
        model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
    kinds = {kind for kind, *_ in seen}
    assert kinds == {"Dropout", "DropPath"}, kinds
    for kind in kinds:
        kept = total = expected = var = 0.0
        for k, rate, inp, out in seen:
            if k != kind or rate == 0:
                continue
            if kind == "DropPath":  # one draw per example
                inp, out = inp.reshape(len(inp), -1), out.reshape(len(out), -1)
                alive = np.any(out != 0, axis=1)
                np.testing.assert_allclose(out[alive], inp[alive] / (1 - rate), rtol=1e-5)
                n = len(alive)
            else:  # one draw per value
                alive = out != 0
                np.testing.assert_allclose(out[alive], inp[alive] / (1 - rate), rtol=1e-5)
                alive, n = alive.ravel(), alive.size
            kept += alive.sum()
            total += n
            expected += n * (1 - rate)
            var += n * rate * (1 - rate)
        assert total > 0
        assert abs(kept - expected) < 5 * np.sqrt(var), (kind, kept, expected)


def main(names: list[str]) -> None:
    names = names or [n for n in WITH_TORCHVISION if is_representative(n)]
    print("| model | logits | gradients | running stats (torch's var) | (Flax's biased var) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        r = train_mode_parity(name, with_biased=True)
        stats = f"{r['stats'][0]:.1e}" if r["stats"] else "no BN"
        biased = f"{r['stats_biased'][0]:.1e}" if r.get("stats_biased") else "no BN"
        print(f"| {name} | {r['logits']:.1e} | {r['grads'][0]:.1e} | {stats} | {biased} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])

"""Builds torchvision reference models for parity tests."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cnn_flax.models import model_info

# Constructor arguments that make torchvision's default model match the cnn_flax default
# (and the published weights), per cnn_flax model name.
TORCHVISION_KWARGS: dict[str, dict] = {
    # Their default; passing it explicitly silences torchvision's FutureWarning.
    "googlenet": {"init_weights": True},
    "inception_v3": {"init_weights": True},
}


# Constructor arguments a family's torchvision model needs at the test resolution (e.g. a grid
# of position embeddings fixed when the model is built), keyed by family.
AT_RESOLUTION: dict[str, Callable[[int | None], dict]] = {
    "vit": lambda res: {} if res is None else {"image_size": res},
}


def randomise_constants(model: torch.nn.Module, *, seed: int) -> list[str]:
    """Replaces every parameter that holds one value throughout with random values around it.

    torchvision starts some tensors at a constant: zero classifier heads and class tokens (ViT),
    layer scales of 1e-6 (ConvNeXt), unit/zero LayerNorm affines, zero biases (VGG). A parity
    check on them passes with broken blocks (a block scaled by 1e-6 vanishes, a zero head hides
    everything before it), so each becomes ``c + s * N(0, 1)`` with ``s = max(|c|, 0.1)``.
    BatchNorm's own tensors are randomised separately. Returns the names replaced.
    """
    gen = torch.Generator().manual_seed(seed)
    replaced = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            if flat.numel() < 2 or not bool(torch.all(flat == flat[0])):
                continue
            value = float(flat[0])
            noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
            param.copy_(value + max(abs(value), 0.1) * noise)
            replaced.append(name)
    return replaced


def build_torchvision(
    name: str, torchvision, *, seed: int = 0, resolution: int | None = None
) -> torch.nn.Module:
    """torchvision's model for cnn_flax ``name`` in eval mode, with realistic random BatchNorm.

    torchvision's fresh running statistics (mean 0, variance 1) do not match the activations of
    a random network: deep nets then blow their logits up to 1e5 (ResNet-152), or saturate so the
    logits no longer depend on the input (GoogLeNet), and a parity check on them proves little.
    So the statistics are first calibrated on one train-mode pass over random images at the test
    ``resolution`` (cumulative average), then perturbed, and the affine parameters randomised:
    every BatchNorm then carries distinct, non-trivial values that the converter must move over.
    Every other constant-initialised tensor is randomised first (:func:`randomise_constants`).
    """
    torch.manual_seed(seed)
    info = model_info(name)
    kwargs = dict(TORCHVISION_KWARGS.get(name, {}))
    kwargs.update(AT_RESOLUTION.get(info.family, lambda res: {})(resolution))
    model = torchvision.models.get_model(info.torchvision, weights=None, **kwargs)
    return realistic_random(model, seed=seed, resolution=resolution)


def realistic_random(
    model: torch.nn.Module, *, seed: int = 0, resolution: int | None = None
) -> torch.nn.Module:
    """Any torch classifier (torchvision's, timm's) randomised as :func:`build_torchvision` says,
    in eval mode."""
    randomise_constants(model, seed=seed + 2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    gen = torch.Generator().manual_seed(seed + 1)
    # The calibration below changes each BatchNorm's momentum; its own (torchvision's MobileNetV3
    # and EfficientNet use 0.01) is put back at the end, for the train-mode tests.
    momenta = [module.momentum for module in norms]
    with torch.no_grad():
        for module in norms:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.75)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        if norms and resolution is not None:
            for module in norms:
                module.reset_running_stats()
                module.momentum = None  # cumulative moving average: the batch's statistics
            # Only BatchNorm in train mode: dropout and stochastic depth stay off, so the
            # statistics describe the network that eval mode runs.
            model.eval()
            for module in norms:
                module.train()
            model(torch.randn(32, 3, resolution, resolution, generator=gen))
            # Channels that a random net leaves (nearly) constant get a variance near 0, and
            # BatchNorm then multiplies rounding noise by up to 1/sqrt(eps); keep every variance
            # at least a tenth of its layer's mean, as a trained net's statistics would be.
            for module in norms:
                floor = 0.1 * module.running_var.mean()
                module.running_var.clamp_(min=float(floor))
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
            std = module.running_var.sqrt()
            noise = torch.randn(module.running_mean.shape, generator=gen)
            module.running_mean.add_(0.1 * std * noise)
            module.running_var.mul_(torch.rand(module.running_var.shape, generator=gen) * 0.4 + 0.8)
        if resolution is not None:
            # Keep the logits at the few-units scale of a trained classifier: random deep nets can
            # reach |logit| ~ 1e2-1e3, where float32 rounding alone exceeds any useful tolerance.
            # Only the last Linear layer is rescaled (SqueezeNet's classifier, a 1x1 convolution
            # before ReLU and pooling, has none: its last convolution then); the rest of the
            # network is untouched. Done last, on the perturbed statistics, so that it bounds the
            # logits the test sees.
            model.eval()
            scale = model(torch.randn(8, 3, resolution, resolution, generator=gen)).abs().max()
            linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
            head = (linears or [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)])[-1]
            if scale > 4.0:
                head.weight.mul_(4.0 / scale)
                head.bias.mul_(4.0 / scale)
    return model.eval()

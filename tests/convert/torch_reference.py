"""Builds torchvision reference models for parity tests."""

from __future__ import annotations

import torch

from cnn_flax.models import model_info

# Constructor arguments that make torchvision's default model match the cnn_flax default
# (and the published weights), per cnn_flax model name.
TORCHVISION_KWARGS: dict[str, dict] = {
    # Its default; passing it explicitly silences torchvision's FutureWarning.
    "googlenet": {"init_weights": True},
}


def build_torchvision(name: str, torchvision, *, seed: int = 0) -> torch.nn.Module:
    """torchvision's model for cnn_flax ``name``, randomly initialised, BN statistics randomised.

    Running means and variances are drawn away from torchvision's 0/1 defaults so the parity test
    also checks that statistics are carried over and used.
    """
    torch.manual_seed(seed)
    info = model_info(name)
    model = torchvision.models.get_model(
        info.torchvision, weights=None, **TORCHVISION_KWARGS.get(name, {})
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(
                    torch.randn(module.running_mean.shape, generator=gen) * 0.1
                )
                module.running_var.copy_(
                    torch.rand(module.running_var.shape, generator=gen) * 0.5 + 0.75
                )
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model.eval()

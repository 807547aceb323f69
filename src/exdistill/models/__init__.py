"""Model zoo. Every model is registered in ``MODELS`` and built through ``build_model``.

Contract for every registered builder ``fn(channels, num_classes, image_size, **options)``:
  - returns an ``nn.Module`` whose ``forward(x)`` maps ``(B, C, H, W)`` floats to ``(B, classes)``
    logits, and whose ``embed(x)`` returns the ``(B, D)`` features fed to the final linear layer
    (named ``classifier``);
  - works for every image size from 8×8 up to 128×128 (pooling stops before the map vanishes);
  - is deterministic given the global-free ``torch.Generator`` passed to ``build_model``.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from exdistill.errors import ConfigError
from exdistill.models.kernels import set_fused
from exdistill.registry import Registry

MODELS: Registry = Registry("model")

# Width of every network in the ``quick`` presets and the ``*-quick`` protocols: distillation,
# expert, feature, filter and evaluation networks, on every dataset. One number for every
# method so that suite rows compare at equal cost. 32, not the literature's 128: a ConvNet-3
# training step at 28/32 px is 2-3x cheaper than at width 64 (`python
# benchmarks/width_step_time.py`, batch 64, one thread, 2026-11-29: 54-57 vs 145-170 ms at
# 28 px, 56-74 vs 119-149 ms at 32 px over two runs), and the ``cpu`` suite must fit in 4 hours
# on 2 cores (docs/benchmarks.md, "Budget").
QUICK_WIDTH = 32


def quick_model_options() -> dict[str, int]:
    """The ``model_options`` of every quick preset: a new dict each call (presets get merged)."""
    return {"width": QUICK_WIDTH}


def build_model(
    name: str,
    channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
    fused: bool = True,
    **options,
) -> nn.Module:
    """Build a registered model; with ``generator`` its initial weights are reproducible.

    ``fused=False`` keeps every layer on PyTorch's own implementation (``models.kernels``: the
    fused instance norm and pooling only ever act on large CPU tensors).

    Raises:
        ConfigError: unknown model name, unknown option, or an impossible option value.
    """
    builder = MODELS.get(name)
    image_size = tuple(image_size)
    signature = inspect.signature(builder)
    try:
        signature.bind(channels, num_classes, image_size, **options)
    except TypeError as err:  # e.g. "got an unexpected keyword argument 'widht'"
        choices = [*list(signature.parameters)[3:], "fused"]
        raise ConfigError(f"model '{name}': {err}; options are: {', '.join(choices)}") from None
    model = set_fused(builder(channels, num_classes, image_size, **options), fused)
    if generator is not None:
        init_parameters(model, generator)
    return model


def init_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every conv/linear layer with PyTorch's default scheme, from ``generator``.

    Builders initialise from the global RNG; this makes a model reproducible without ever
    reseeding it. Norm layers get weight 1, bias 0 (their default, needs no randomness).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # Default of both: kaiming_uniform_(a=sqrt(5)) ⇒ bound = 1/sqrt(fan_in).
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(
                module, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d)
            ):
                if getattr(module, "weight", None) is not None:
                    module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
    return model


from exdistill.models import alexnet, convnet, mlp, resnet, vgg  # noqa: E402,F401  (registration)

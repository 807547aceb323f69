"""Building blocks shared by the model zoo: norms, activations, pools, downsampling rule.

Norms, activations and pools are looked up by name in small registries, so an unknown name is a
``ConfigError`` that lists the choices, and adding a kind is one line.

Example:
    >>> norm = make_norm("instance", 16)
    >>> isinstance(norm, nn.GroupNorm), norm.num_groups
    (True, 16)
    >>> can_halve((8, 8)), can_halve((3, 3)), can_halve((3, 3), last=True)
    (True, False, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from exdistill.errors import ConfigError
from exdistill.models.kernels import AvgPool2x2, InstanceNorm
from exdistill.registry import Registry

Size = tuple[int, int]

NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
POOLS: Registry[Callable[[], nn.Module]] = Registry("pool")

# "instance" is GroupNorm with one group per channel, as the DC/DSA/DM and IDC code write it:
# the same statistics as InstanceNorm2d, with a per-channel affine and no running stats.
# kernels.InstanceNorm is that GroupNorm with a fused second derivative on large CPU tensors.
NORMS.add("instance", lambda c: InstanceNorm(c))
NORMS.add("batch", lambda c: nn.BatchNorm2d(c))
# DC's "layernorm" is nn.LayerNorm over (C, H, W), whose affine depends on the resolution;
# GroupNorm(1, C) normalises over the same values with a per-channel affine, at any size.
NORMS.add("layer", lambda c: nn.GroupNorm(1, c, affine=True))
NORMS.add("none", lambda c: nn.Identity())

ACTIVATIONS.add("relu", lambda: nn.ReLU())
ACTIVATIONS.add("leakyrelu", lambda: nn.LeakyReLU(negative_slope=0.01))
ACTIVATIONS.add("sigmoid", lambda: nn.Sigmoid())
ACTIVATIONS.add("gelu", lambda: nn.GELU())

POOLS.add("avg", lambda: AvgPool2x2())  # nn.AvgPool2d(2, 2), fused on large CPU tensors
POOLS.add("max", lambda: nn.MaxPool2d(kernel_size=2, stride=2))
POOLS.add("none", lambda: nn.Identity())

# Smallest map a conv layer may be fed after a downsampling. On a 1×1 map, instance norm
# subtracts the only value there is: its output is its bias and no gradient reaches the layers
# below. So a downsampling that a conv follows must leave at least 2×2; a trailing one may reach 1.
MIN_INNER_SIZE = 2


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer by name: ``instance``, ``batch``, ``layer`` or ``none``.

    Shape:
        (B, channels, H, W) → (B, channels, H, W)
    """
    return NORMS.get(kind)(channels)


def make_activation(kind: str) -> nn.Module:
    """An activation by name: ``relu``, ``leakyrelu`` (slope 0.01), ``sigmoid`` or ``gelu``."""
    return ACTIVATIONS.get(kind)()


def make_pool(kind: str) -> nn.Module:
    """A 2×2, stride-2 pooling by name: ``avg``, ``max``, or ``none`` (identity).

    Shape:
        (B, C, H, W) → (B, C, H // 2, W // 2); unchanged for ``none``
    """
    return POOLS.get(kind)()


def halve(size: Size, ceil: bool = False) -> Size:
    """Map size after a stride-2 pooling (floor) or a stride-2, padding-1 3×3 conv (ceil)."""
    if ceil:
        return ((size[0] + 1) // 2, (size[1] + 1) // 2)
    return (size[0] // 2, size[1] // 2)


def can_halve(size: Size, last: bool = False, ceil: bool = False) -> bool:
    """Whether a stride-2 downsampling of ``size`` is allowed (see ``MIN_INNER_SIZE``).

    Args:
        size: current (H, W).
        last: no conv layer follows, so the map may shrink to 1×1.
        ceil: the downsampling is a strided conv (rounds up) rather than a pooling.
    """
    return min(halve(size, ceil)) >= (1 if last else MIN_INNER_SIZE)


def dc_extra_padding(channels: int, image_size: Size) -> int:
    """Extra padding of the first conv that turns a 1×28×28 input into a 32×32 map.

    The DC/DSA/DM code pads MNIST-like inputs this way so that every layer after the first has
    the shapes it has on CIFAR (e.g. ConvNet-3 features 128·4·4). Only exactly 1×28×28 qualifies,
    so other grayscale data (the 8×8 digits) keep their size.
    """
    return 2 if (channels, *image_size) == (1, 28, 28) else 0


def require_positive(model: str, **values: int) -> None:
    """Raise ``ConfigError`` naming the option if any of ``values`` is below 1."""
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"model '{model}': option {name} must be ≥ 1, got {value}")


def with_defaults(builder: Callable[..., nn.Module], **defaults: Any) -> Callable[..., nn.Module]:
    """The same builder with other default options (e.g. ``norm="batch"``); callers may override.

    The returned function advertises the new defaults in its signature, so ``build_model`` still
    rejects unknown options by name.
    """

    def build(channels: int, num_classes: int, image_size: Size, **options: Any) -> nn.Module:
        return builder(channels, num_classes, image_size, **{**defaults, **options})

    signature = inspect.signature(builder)
    params = [
        p.replace(default=defaults.get(p.name, p.default)) for p in signature.parameters.values()
    ]
    build.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    build.__doc__ = f"{builder.__name__} with defaults {defaults}."
    return build


class FeatureClassifier(nn.Module):
    """A feature extractor followed by one linear layer: the shape every zoo model takes.

    Args:
        features: maps images to flat features, ``(B, C, H, W) → (B, num_features)``.
        num_features: D, the width of those features.
        num_classes: number of logits.

    Shape:
        embed: (B, C, H, W) → (B, D);  forward: (B, C, H, W) → (B, num_classes)
    """

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))  # (B, num_classes)

"""ResNet-10 and ResNet-18 in the CIFAR form used by DC/DSA/DM and IDC.

A 3×3 stride-1 stem (no max-pool), four stages of basic blocks with ``width``·(1, 2, 4, 8)
channels, the last three halving the map, then global average pooling → ``classifier``.

Variants (``norm`` may be overridden on all of them):

- ``resnet10``, ``resnet18``: instance norm, stride-2 convs (DC's ResNet18).
- ``resnet10_bn``, ``resnet18_bn``: batch norm, stride-2 convs (DC's ResNet18BN).
- ``resnet10_ap``, ``resnet18_ap``: instance norm, stride-1 convs followed by 2×2 average
  pooling. Instance norm because IDC's ResNet-10-AP, the cross-architecture network of the
  method EDD builds on, uses it (IDC's default ``norm_type``); DC's ResNet18_AP defaults to it too.
- ``resnet18_bn_ap``: batch norm with average pooling: DC's ResNet18BN_AP, its Table 2 network.

Deviations, chosen so every variant works at 8–128 px with a fixed feature width: the AP
variants pool globally (as IDC does; DC's flattens the 4×4 map), and a stage keeps stride 1 where
halving would leave a map under 2×2. Convs have a bias only without a norm (as IDC).

Example:
    >>> from exdistill.models import build_model
    >>> build_model("resnet18", 3, 10, (32, 32)).classifier.in_features
    512
"""

from __future__ import annotations

import torch
from torch import nn

from exdistill.models import MODELS
from exdistill.models.layers import (
    FeatureClassifier,
    Size,
    can_halve,
    halve,
    make_norm,
    require_positive,
)

STAGE_WIDTHS = (1, 2, 4, 8)  # × width


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection; optionally halves the map.

    Args:
        downsample: ``None`` (keep the size), ``"stride"`` (stride-2 convs, DC's ResNet) or
            ``"avgpool"`` (stride-1 convs then 2×2 average pooling, the "AP" variants).

    Shape:
        (B, in_channels, H, W) → (B, out_channels, H', W'), H' = H or about H / 2
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str, downsample: str | None):
        super().__init__()
        bias = norm == "none"
        stride = 2 if downsample == "stride" else 1
        pool = nn.AvgPool2d(2) if downsample == "avgpool" else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, out_channels)
        self.pool = pool
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if downsample is not None or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias),
                nn.AvgPool2d(2) if downsample == "avgpool" else nn.Identity(),
                make_norm(norm, out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.relu(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(FeatureClassifier):
    """CIFAR-style ResNet with ``blocks[i]`` basic blocks in stage ``i``.

    Shape:
        (B, channels, H, W) → (B, num_classes); embed → (B, 8 · width)
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: Size,
        blocks: tuple[int, ...],
        norm: str,
        downsample: str,
        width: int,
    ) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 3, padding=1, bias=bias),
            make_norm(norm, width),
            nn.ReLU(),
        ]
        in_channels, size = width, image_size
        for stage, (multiple, count) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True)):
            out_channels = width * multiple
            ceil = downsample == "stride"
            halves = stage > 0 and can_halve(size, ceil=ceil)
            for index in range(count):
                first_down = downsample if halves and index == 0 else None
                layers.append(BasicBlock(in_channels, out_channels, norm, first_down))
                in_channels = out_channels
            if halves:
                size = halve(size, ceil=ceil)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, 8·width, h, w) → (B, 8·width)
        super().__init__(nn.Sequential(*layers), in_channels, num_classes)


def _variant(name: str, blocks: tuple[int, ...], default_norm: str, downsample: str) -> None:
    """Register ``name``: a ResNet whose only options are ``norm`` and ``width``."""

    def build(
        channels: int,
        num_classes: int,
        image_size: Size,
        *,
        norm: str = default_norm,
        width: int = 64,
    ) -> ResNet:
        require_positive(name, width=width)
        return ResNet(channels, num_classes, image_size, blocks, norm, downsample, width)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = f"{name}: blocks {blocks}, {default_norm} norm, downsampling by {downsample}."
    MODELS.add(name, build)


# name: (blocks per stage, default norm, downsampling)
VARIANTS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "resnet10": ((1, 1, 1, 1), "instance", "stride"),
    "resnet18": ((2, 2, 2, 2), "instance", "stride"),
    "resnet10_bn": ((1, 1, 1, 1), "batch", "stride"),
    "resnet18_bn": ((2, 2, 2, 2), "batch", "stride"),
    "resnet10_ap": ((1, 1, 1, 1), "instance", "avgpool"),
    "resnet18_ap": ((2, 2, 2, 2), "instance", "avgpool"),
    "resnet18_bn_ap": ((2, 2, 2, 2), "batch", "avgpool"),
}

for _name, (_blocks, _norm, _down) in VARIANTS.items():
    _variant(_name, _blocks, _norm, _down)

"""AlexNet in the CIFAR form of the DC code (its cross-architecture table).

Five convs (5×5, 5×5, 3×3, 3×3, 3×3; 128, 192, 256, 192, 192 channels at ``width`` 128), each
followed by a norm and ReLU, with 2×2 max-pools after the 1st, 2nd and 5th; the final map is
flattened (192·4·4 on 32×32 images, as in DC). The default norm is ``none`` because DC's
``AlexNet`` has none; ``alexnet_bn`` is its ``AlexNetBN``. A 1×28×28 input is padded to 32×32
by the first conv, and a pool is skipped where it would leave a following conv a map under 2×2.

Example:
    >>> build_alexnet(3, 10, (32, 32)).classifier.in_features
    3072
"""

from __future__ import annotations

from torch import nn

from exdistill.models import MODELS
from exdistill.models.layers import (
    FeatureClassifier,
    Size,
    can_halve,
    dc_extra_padding,
    halve,
    make_norm,
    require_positive,
    with_defaults,
)

# (kernel, channels as a multiple of ``width``, pool after): AlexNet's five convs.
ALEXNET_LAYERS: tuple[tuple[int, float, bool], ...] = (
    (5, 1.0, True),
    (5, 1.5, True),
    (3, 2.0, False),
    (3, 1.5, False),
    (3, 1.5, True),
)


class AlexNet(FeatureClassifier):
    """AlexNet (see the module docstring).

    Shape:
        (B, channels, H, W) → (B, num_classes); embed → (B, 1.5 · width · h · w)
    """

    def __init__(
        self, channels: int, num_classes: int, image_size: Size, norm: str, width: int
    ) -> None:
        extra = dc_extra_padding(channels, image_size)
        size = (image_size[0] + 2 * extra, image_size[1] + 2 * extra)
        modules: list[nn.Module] = []
        in_channels = channels
        for index, (kernel, multiple, pool) in enumerate(ALEXNET_LAYERS):
            out_channels = max(1, round(width * multiple))
            padding = kernel // 2 + (extra if index == 0 else 0)
            modules += [
                nn.Conv2d(in_channels, out_channels, kernel_size=kernel, padding=padding),
                make_norm(norm, out_channels),
                nn.ReLU(),
            ]
            last = index == len(ALEXNET_LAYERS) - 1
            if pool and can_halve(size, last=last):
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size = halve(size)
            in_channels = out_channels
        modules.append(nn.Flatten())  # (B, C, h, w) → (B, C·h·w)
        super().__init__(nn.Sequential(*modules), in_channels * size[0] * size[1], num_classes)


@MODELS.register("alexnet")
def build_alexnet(
    channels: int,
    num_classes: int,
    image_size: Size,
    *,
    norm: str = "none",
    width: int = 128,
) -> AlexNet:
    """AlexNet without norm, as DC's ``AlexNet``."""
    require_positive("alexnet", width=width)
    return AlexNet(channels, num_classes, image_size, norm, width)


MODELS.add("alexnet_bn", with_defaults(build_alexnet, norm="batch"))

"""VGG-11 in the form of the DC code: 3×3 convs with a norm and ReLU, 2×2 max-pools.

Channels follow VGG-11's configuration scaled by ``width`` (64 → the usual 64…512). DC's VGG11
uses instance norm (``vgg11``) and its cross-architecture table uses VGG11BN (``vgg11_bn``).
A 1×28×28 input is padded to 32×32 by the first conv, as in the DC code. A max-pool is skipped
where it would leave a following conv a map under 2×2, and the final map is averaged to 1×1
(on 32×32 images it already is 1×1, as in DC), so the features are 8·``width`` wide at any size.

Example:
    >>> build_vgg11(3, 10, (32, 32)).classifier.in_features
    512
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

POOL = "M"
# VGG-11 ("A" of Simonyan & Zisserman): conv widths as multiples of ``width``, M = 2×2 max-pool.
VGG11_LAYERS: tuple[int | str, ...] = (1, POOL, 2, POOL, 4, 4, POOL, 8, 8, POOL, 8, 8, POOL)


class VGG(FeatureClassifier):
    """A VGG described by ``layers`` (see ``VGG11_LAYERS``).

    Shape:
        (B, channels, H, W) → (B, num_classes); embed → (B, width · last multiple)
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: Size,
        layers: tuple[int | str, ...],
        norm: str,
        width: int,
    ) -> None:
        extra = dc_extra_padding(channels, image_size)
        size = (image_size[0] + 2 * extra, image_size[1] + 2 * extra)
        last_conv = max(i for i, item in enumerate(layers) if item != POOL)
        modules: list[nn.Module] = []
        in_channels, first_conv = channels, True
        for index, item in enumerate(layers):
            if item == POOL:
                if can_halve(size, last=index > last_conv):
                    modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size = halve(size)
                continue
            out_channels = width * int(item)
            padding = 1 + (extra if first_conv else 0)
            modules += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
                make_norm(norm, out_channels),
                nn.ReLU(),
            ]
            in_channels, first_conv = out_channels, False
        modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, C, h, w) → (B, C)
        super().__init__(nn.Sequential(*modules), in_channels, num_classes)


@MODELS.register("vgg11")
def build_vgg11(
    channels: int,
    num_classes: int,
    image_size: Size,
    *,
    norm: str = "instance",
    width: int = 64,
) -> VGG:
    """VGG-11 with instance norm, as DC's ``VGG11``."""
    require_positive("vgg11", width=width)
    return VGG(channels, num_classes, image_size, VGG11_LAYERS, norm, width)


MODELS.add("vgg11_bn", with_defaults(build_vgg11, norm="batch"))

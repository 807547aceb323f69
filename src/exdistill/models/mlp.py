"""MLP of the DC cross-architecture table: flatten → ``depth`` × (linear → act) → classifier.

Example:
    >>> build_mlp(1, 10, (28, 28)).classifier.in_features
    128
"""

from __future__ import annotations

from torch import nn

from exdistill.models import MODELS
from exdistill.models.layers import FeatureClassifier, Size, make_activation, require_positive


class MLP(FeatureClassifier):
    """A fully connected network on the flattened image.

    Shape:
        (B, channels, H, W) → (B, num_classes); embed → (B, hidden)
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: Size,
        hidden: int,
        depth: int,
        act: str,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) → (B, C·H·W)
        in_features = channels * image_size[0] * image_size[1]
        for _ in range(depth):
            layers += [nn.Linear(in_features, hidden), make_activation(act)]
            in_features = hidden
        super().__init__(nn.Sequential(*layers), in_features, num_classes)


@MODELS.register("mlp")
def build_mlp(
    channels: int,
    num_classes: int,
    image_size: Size,
    *,
    hidden: int = 128,
    depth: int = 2,
    act: str = "relu",
) -> MLP:
    """MLP with two hidden layers of 128 units and ReLU, as DC's ``MLP``."""
    require_positive("mlp", hidden=hidden, depth=depth)
    return MLP(channels, num_classes, image_size, hidden, depth, act)

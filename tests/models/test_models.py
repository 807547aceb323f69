"""Every registered model, at every test resolution: shapes, gradients, seeded initialisation."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from exdistill.errors import ConfigError
from exdistill.models import MODELS, build_model
from exdistill.models.convnet import depth_for_resolution
from exdistill.models.layers import can_halve, make_activation, make_norm, make_pool

NUM_CLASSES = 10
# (channels, H, W): digits, CIFAR, MNIST (non-power-of-two), Tiny-ImageNet.
SHAPES = [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 64, 64)]


def images(shape: tuple[int, int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def small_options(name: str) -> dict[str, int]:
    """A narrow version of a model where it has a width option, to keep big inputs cheap."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {key: 8 for key in ("width", "hidden") if key in params}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS.names())
def test_forward_embed_backward(name: str, shape: tuple[int, int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, shape[0], NUM_CLASSES, shape[1:], generator=gen).train()
    x = images(shape)
    features = model.embed(x)
    logits = model(x)
    assert isinstance(model.classifier, nn.Linear)
    assert features.shape == (2, model.classifier.in_features)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()

    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        if param.dim() > 1:  # every conv/linear weight gets a learning signal
            assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODELS.names())
def test_odd_non_square_and_large_inputs(name: str) -> None:
    for shape in [(3, 9, 13), (3, 12, 20), (3, 128, 128)]:
        model = build_model(name, shape[0], NUM_CLASSES, shape[1:], **small_options(name))
        with torch.no_grad():
            x = images(shape, batch=1)
            assert model.embed(x).shape == (1, model.classifier.in_features)
            assert model(x).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", MODELS.names())
def test_generator_makes_initialisation_reproducible(name: str) -> None:
    def params(seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        model = build_model(name, 3, NUM_CLASSES, (16, 16), generator=gen, **small_options(name))
        return list(model.parameters())

    first, again, other = params(0), params(0), params(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_depth_for_resolution() -> None:
    assert [depth_for_resolution(s) for s in (8, 16, 17, 28, 32, 33, 64, 65, 128, 256)] == [
        2, 2, 3, 3, 3, 4, 4, 5, 5, 5,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "features"),
    [
        ((3, 32, 32), 128 * 4 * 4),  # ConvNet-3 on CIFAR, as in DC
        ((1, 28, 28), 128 * 4 * 4),  # MNIST padded to 32 by the first conv, as in DC
        ((3, 64, 64), 128 * 4 * 4),  # ConvNet-4 on Tiny-ImageNet
        ((3, 128, 128), 128 * 4 * 4),  # ConvNet-5 on 128 px ImageNet subsets
        ((1, 8, 8), 128 * 2 * 2),  # digits: ConvNet-2, 8 → 4 → 2
    ],
)
def test_convnet_feature_sizes(shape: tuple[int, int, int], features: int) -> None:
    model = build_model("convnet", shape[0], NUM_CLASSES, shape[1:])
    assert model.classifier.in_features == features


def test_convnet_options() -> None:
    model = build_model("convnet", 3, NUM_CLASSES, (32, 32), width=16, depth=2, pool="none")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and convs[-1].out_channels == 16
    assert model.classifier.in_features == 16 * 32 * 32
    assert sum(isinstance(m, nn.MaxPool2d) for m in build_model(
        "convnet", 3, NUM_CLASSES, (32, 32), pool="max").modules()) == 3  # fmt: skip
    acts = build_model("convnet", 3, NUM_CLASSES, (32, 32), act="leakyrelu").modules()
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.01 for m in acts)
    # Deeper than the image allows: inner pools stop at 2×2, the last one reaches 1×1.
    deep = build_model("convnet", 1, NUM_CLASSES, (8, 8), width=4, depth=6)
    assert deep(images((1, 8, 8))).shape == (2, NUM_CLASSES)
    assert deep.classifier.in_features == 4


def norm_kinds(model: nn.Module) -> set[str]:
    kinds = set()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            kinds.add("batch")
        elif isinstance(m, nn.GroupNorm):
            kinds.add("instance" if m.num_groups == m.num_channels else "layer")
    return kinds or {"none"}


@pytest.mark.parametrize("norm", ["instance", "batch", "layer", "none"])
def test_norm_option(norm: str) -> None:
    for name in ("convnet", "resnet10", "vgg11", "alexnet"):
        model = build_model(name, 3, NUM_CLASSES, (16, 16), norm=norm, **small_options(name))
        assert norm_kinds(model) == {norm}, name


@pytest.mark.parametrize(
    ("name", "norm"),
    [
        ("convnet", "instance"),
        ("convnet_bn", "batch"),
        ("convnet_ln", "layer"),
        ("convnet_nn", "none"),
        ("resnet18", "instance"),
        ("resnet18_bn", "batch"),
        ("resnet18_ap", "instance"),
        ("resnet18_bn_ap", "batch"),
        ("vgg11", "instance"),
        ("vgg11_bn", "batch"),
        ("alexnet", "none"),
        ("alexnet_bn", "batch"),
    ],
)
def test_variant_default_norms(name: str, norm: str) -> None:
    model = build_model(name, 3, NUM_CLASSES, (16, 16), **small_options(name))
    assert norm_kinds(model) == {norm}


def test_resnet_downsampling_variants() -> None:
    strided = build_model("resnet10", 3, NUM_CLASSES, (32, 32), width=8)
    pooled = build_model("resnet10_ap", 3, NUM_CLASSES, (32, 32), width=8)
    assert any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in strided.modules())
    assert not any(isinstance(m, nn.AvgPool2d) for m in strided.modules())
    assert all(m.stride == (1, 1) for m in pooled.modules() if isinstance(m, nn.Conv2d))
    assert any(isinstance(m, nn.AvgPool2d) for m in pooled.modules())
    override = build_model("resnet10_ap", 3, NUM_CLASSES, (32, 32), width=8, norm="batch")
    assert norm_kinds(override) == {"batch"}


def test_layer_factories() -> None:
    norm = make_norm("instance", 6)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 6 and norm.affine
    assert make_norm("layer", 6).num_groups == 1
    assert isinstance(make_norm("batch", 6), nn.BatchNorm2d)
    assert isinstance(make_norm("none", 6), nn.Identity)
    assert isinstance(make_activation("gelu"), nn.GELU)
    assert isinstance(make_activation("sigmoid"), nn.Sigmoid)
    assert isinstance(make_pool("avg"), nn.AvgPool2d)
    assert isinstance(make_pool("max"), nn.MaxPool2d)
    assert isinstance(make_pool("none"), nn.Identity)
    assert can_halve((4, 4)) and not can_halve((3, 8)) and can_halve((3, 8), last=True)
    assert can_halve((3, 3), ceil=True) and not can_halve((1, 1), last=True)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet99", {}, "unknown model 'resnet99'"),
        ("convnet", {"norm": "group"}, "unknown norm 'group'"),
        ("resnet18", {"norm": "group"}, "unknown norm 'group'"),
        ("vgg11", {"norm": "group"}, "unknown norm 'group'"),
        ("convnet", {"act": "tanh"}, "unknown activation 'tanh'"),
        ("convnet", {"pool": "median", "depth": 1}, "unknown pool 'median'"),
        ("convnet", {"widht": 8}, "widht"),
        ("convnet_bn", {"widht": 8}, "widht"),
        ("resnet10", {"depth": 3}, "depth"),
        ("convnet", {"depth": 0}, "depth must be ≥ 1"),
        ("mlp", {"hidden": 0}, "hidden must be ≥ 1"),
    ],
)
def test_bad_names_and_options_raise_config_error(name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(name, 3, NUM_CLASSES, (32, 32), **options)

"""Fused kernels (instance norm's second derivative, 2×2 average pooling, ReLU + pooling) equal
PyTorch's layers in value, first and second derivatives; the layers pick them only where they
should; a failed compile falls back to eager."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exdistill.models import build_model, kernels
from exdistill.models.kernels import (
    COMPILE_MIN_NUMEL,
    ENV_SWITCH,
    AvgPool2x2,
    FusingSequential,
    InstanceNorm,
    Kernel,
    avg_pool2x2,
    instance_norm,
    relu_avg_pool2x2,
)


def tensors(*shapes: tuple[int, ...], dtype=torch.float64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(True) for s in shapes]


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The eager formulas (no compile): fast, and what a machine without a compiler runs."""
    monkeypatch.setenv(ENV_SWITCH, "eager")


def fused_norm(x, w, b):
    return instance_norm(x, w, b, 1e-5)


def plain_norm(x, w, b):
    return F.group_norm(x, x.shape[1], w, b, 1e-5)


def second_order(fn, x, w, b, seed: int = 1) -> list[torch.Tensor]:
    """Value, first derivatives and the derivatives of a nonlinear function of them."""
    y = fn(x, w, b)
    up_y, up_x = (t.detach() for t in tensors(y.shape, x.shape, dtype=x.dtype, seed=seed))
    gx, gw, gb = torch.autograd.grad((y * up_y).sum(), (x, w, b), create_graph=True)
    phi = (gx.sin() * up_x).sum() + (gw**2).sum() + (gb**3).sum()
    second = torch.autograd.grad(phi, (x, w, b), allow_unused=True)
    return [y, gx, gw, gb, *[s if s is not None else torch.zeros_like(b) for s in second]]


# ------------------------------------------------------------------------ math (eager, float64)
def test_instance_norm_second_derivative_formulas_pass_gradgradcheck(eager) -> None:
    x, w, b = tensors((3, 4, 5, 5), (4,), (4,))
    assert torch.autograd.gradcheck(fused_norm, (x, w, b))
    assert torch.autograd.gradgradcheck(fused_norm, (x, w, b))


def test_instance_norm_equals_group_norm_to_second_order(eager) -> None:
    x, w, b = tensors((2, 3, 4, 6), (3,), (3,))
    for ours, theirs in zip(
        second_order(fused_norm, x, w, b), second_order(plain_norm, x, w, b), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_pooling_and_relu_pooling_pass_gradgradcheck(eager) -> None:
    (x,) = tensors((2, 3, 4, 6))
    assert torch.autograd.gradgradcheck(avg_pool2x2, (x,))
    # Away from the ReLU's kink (finite differences across it are meaningless).
    z = (x.detach() + 0.2 * x.detach().sign()).requires_grad_(True)
    assert torch.autograd.gradgradcheck(relu_avg_pool2x2, (z,))


def test_relu_pooling_equals_relu_then_avg_pool2d_to_second_order(eager) -> None:
    (x,) = tensors((2, 3, 4, 6))
    x0 = x.detach().clone()
    x0[0, 0, 0, :2] = 0.0  # exactly at the kink: both give the ReLU zero gradient there
    results = []
    for fn in (relu_avg_pool2x2, lambda t: F.avg_pool2d(F.relu(t), 2)):
        z = x0.clone().requires_grad_(True)
        y = fn(z)
        (g,) = torch.autograd.grad(
            (y * y.detach().cos()).sum() + y.pow(3).sum(), z, create_graph=True
        )
        (gg,) = torch.autograd.grad((g * g).sum(), z)
        results.append((y, g, gg))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_pooling_rejects_odd_maps() -> None:
    with pytest.raises(ValueError, match="even"):
        avg_pool2x2(torch.zeros(1, 1, 3, 4))


# ----------------------------------------------------------------------------- compiled (float32)
def test_compiled_kernels_equal_pytorch_to_second_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real fast path: TorchInductor-compiled kernels on float32, against PyTorch's layers."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    for kernel in (kernels.NORM_SECOND, kernels.POOL, kernels.SPREAD):
        assert kernel.usable, "a kernel's compile failed earlier in this process"
    x, w, b = tensors((3, 4, 6, 8), (4,), (4,), dtype=torch.float32)

    def ours(x, w, b):
        return relu_avg_pool2x2(instance_norm(x, w, b, 1e-5))

    def theirs(x, w, b):
        return F.avg_pool2d(F.relu(F.group_norm(x, 4, w, b, 1e-5)), 2)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile warns and goes eager
        got = second_order(ours, x, w, b)
    want = second_order(theirs, x, w, b)
    for g, t in zip(got, want, strict=True):
        torch.testing.assert_close(g, t, rtol=1e-4, atol=1e-5)
    for kernel in (kernels.NORM_SECOND, kernels.POOL, kernels.SPREAD):
        assert kernel.usable and kernel._compiled is not None


def test_a_failed_compile_warns_once_and_falls_back_to_eager(monkeypatch) -> None:
    monkeypatch.delenv(ENV_SWITCH, raising=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    kernel = Kernel(lambda t: t * 2)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        out = kernel(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and not kernel.usable
    assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))  # no second warning


# ----------------------------------------------------------------------------- layers
def big(channels: int = 8) -> torch.Tensor:
    """A CPU float32 activation just large enough for the fused path."""
    side = 16
    n = -(-COMPILE_MIN_NUMEL // (channels * side * side))
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(0))


def test_layers_take_the_fused_path_only_on_large_cpu_float32(eager, monkeypatch) -> None:
    # With the env switch off, the layers must not use the Function at all.
    norm, pool = InstanceNorm(8), AvgPool2x2()
    x = big().requires_grad_(True)
    assert type(norm(x).grad_fn).__name__ == "NativeGroupNormBackward0"
    assert type(pool(x).grad_fn).__name__ == "AvgPool2DBackward0"
    monkeypatch.delenv(ENV_SWITCH)
    assert kernels.fused_enabled(x)
    assert type(norm(x).grad_fn).__name__ == "_InstanceNormBackward"
    assert type(pool(x).grad_fn).__name__ == "_PoolBackward"
    assert not kernels.fused_enabled(x[:1])  # small
    assert not kernels.fused_enabled(x.double())  # float64
    assert type(norm(x[:1]).grad_fn).__name__ == "NativeGroupNormBackward0"
    assert type(pool(x[:1]).grad_fn).__name__ == "AvgPool2DBackward0"
    monkeypatch.setenv(ENV_SWITCH, "eager")
    assert not kernels.fused_enabled(x)


def test_layers_keep_pytorch_state_dicts_and_outputs(eager) -> None:
    norm = InstanceNorm(8)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 8
    assert set(norm.state_dict()) == set(nn.GroupNorm(8, 8).state_dict())
    net = build_model(
        "convnet", 3, 10, (32, 32), width=8, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(net.features, FusingSequential)
    plain = nn.Sequential(*net.features)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net.features(x), plain(x))
    assert net.features.state_dict().keys() == plain.state_dict().keys()


def test_convnet_with_fused_layers_matches_plain_layers_to_second_order(monkeypatch) -> None:
    """The whole network on the fused path (eager formulas, forced for small inputs) against the
    same weights in PyTorch's layers: logits, parameter gradients and image gradients of a
    gradient-matching loss."""
    monkeypatch.setenv(ENV_SWITCH, "eager")
    monkeypatch.setattr(kernels, "COMPILE_MIN_NUMEL", 0)
    monkeypatch.setattr(kernels, "fused_enabled", lambda x: x.device.type == "cpu")
    calls = {"norm": 0, "relu_pool": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(kernels, "instance_norm", counting("norm", kernels.instance_norm))
    monkeypatch.setattr(
        kernels, "relu_avg_pool2x2", counting("relu_pool", kernels.relu_avg_pool2x2)
    )
    net = build_model(
        "convnet", 3, 4, (16, 16), width=8, generator=torch.Generator().manual_seed(0)
    ).double()
    plain = nn.Sequential(*[_plain(m) for m in net.features])
    classifier = net.classifier

    def match_grad(features: nn.Module) -> torch.Tensor:
        syn = torch.randn(
            3, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        syn.requires_grad_(True)
        params = [p for p in features.parameters() if p.ndim == 4]
        loss = F.cross_entropy(classifier(features(syn)), torch.tensor([0, 1, 2]))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        (g,) = torch.autograd.grad(sum(gr.abs().sum() for gr in grads), syn)
        return g

    fused = match_grad(net.features)
    assert calls == {"norm": 2, "relu_pool": 2}  # ConvNet-2 on 16×16: two blocks, both fused
    torch.testing.assert_close(fused, match_grad(plain), rtol=1e-9, atol=1e-12)


def _plain(module: nn.Module) -> nn.Module:
    if isinstance(module, InstanceNorm):
        swap = nn.GroupNorm(module.num_groups, module.num_channels, module.eps).double()
        swap.load_state_dict(module.state_dict())
        return swap
    if isinstance(module, AvgPool2x2):
        return nn.AvgPool2d(2, 2)
    return module

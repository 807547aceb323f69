"""Fused kernels (instance norm's second derivative, 2×2 average pooling, ReLU + pooling) equal
PyTorch's layers in value, first and second derivatives; the layers pick them only where they
should; a failed compile falls back to eager."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exdistill.models import build_model, kernels
from exdistill.models.kernels import (
    COMPILE_MIN_NUMEL,
    AvgPool2x2,
    FusingSequential,
    InstanceNorm,
    Kernel,
    avg_pool2x2,
    instance_norm,
    relu_avg_pool2x2,
    set_fused,
)
from exdistill.models.layers import ACTIVATIONS, POOLS, make_activation, make_pool

HAS_COMPILER = any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def tensors(*shapes: tuple[int, ...], dtype=torch.float64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(True) for s in shapes]


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels' formulas run eagerly (no compile): fast, and what a machine without a C++
    compiler runs."""
    monkeypatch.setattr(Kernel, "__call__", lambda self, *args: self.fn(*args))


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch, eager) -> None:
    """The fused path on any CPU tensor with gradients (small, float64), eager formulas."""
    monkeypatch.setattr(
        kernels, "fused_enabled", lambda x: torch.is_grad_enabled() and x.device.type == "cpu"
    )


def fused_norm(x, w, b):
    return instance_norm(x, w, b, 1e-5)


def plain_norm(x, w, b):
    return F.group_norm(x, x.shape[1], w, b, 1e-5)


# Which first derivatives the nonlinear function of the second order uses: all three, or one
# (matching uses gx only; MTT's unrolled steps use the weights' as well).
PHI = {
    "all": lambda gx, gw, gb, up: (gx.sin() * up).sum() + (gw**2).sum() + (gb**3).sum(),
    "x": lambda gx, gw, gb, up: (gx.sin() * up).sum(),
    "w": lambda gx, gw, gb, up: (gw**3).sum(),
    "b": lambda gx, gw, gb, up: (gb**2 * gw).sum(),
}


def second_order(fn, x, w, b, phi: str = "all", seed: int = 1) -> list[torch.Tensor]:
    """Value, first derivatives and the derivatives of a nonlinear function of them."""
    y = fn(x, w, b)
    # Drawn in float64 and rounded: every precision sees the same upstream values.
    up_y, up_x = (t.detach().to(x.dtype) for t in tensors(y.shape, x.shape, seed=seed))
    gx, gw, gb = torch.autograd.grad((y * up_y).sum(), (x, w, b), create_graph=True)
    second = torch.autograd.grad(PHI[phi](gx, gw, gb, up_x), (x, w, b), allow_unused=True)
    return [y, gx, gw, gb, *[s if s is not None else torch.zeros_like(b) for s in second]]


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """A leaf with ``t``'s values stored channels-last."""
    return t.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)


LAYOUTS = {
    "nchw": lambda t: t.detach().clone().requires_grad_(True),
    "channels_last": channels_last,
}


# ------------------------------------------------------------------- math (eager, float64)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_instance_norm_second_derivative_formulas_pass_gradgradcheck(eager, layout) -> None:
    x, w, b = tensors((3, 4, 5, 5), (4,), (4,))
    x = LAYOUTS[layout](x)
    assert kernels.is_channels_last(x) == (layout == "channels_last")
    assert torch.autograd.gradcheck(fused_norm, (x, w, b))
    assert torch.autograd.gradgradcheck(fused_norm, (x, w, b))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("phi", sorted(PHI))
def test_instance_norm_equals_group_norm_to_second_order(eager, phi, layout) -> None:
    x, w, b = tensors((2, 3, 4, 6), (3,), (3,))
    x = LAYOUTS[layout](x)
    for ours, theirs in zip(
        second_order(fused_norm, x, w, b, phi),
        second_order(plain_norm, x, w, b, phi),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_channels_last_maps_stay_channels_last_through_every_derivative(eager) -> None:
    """A channels-last map's norm, pooling and their first and second derivatives keep the
    layout: no pass of the step converts it back (which is what costs on CPU)."""
    x, w, b = tensors((2, 3, 4, 6), (3,), (3,))
    x = channels_last(x)
    y = relu_avg_pool2x2(fused_norm(x, w, b))
    assert kernels.is_channels_last(y)
    (gx,) = torch.autograd.grad((y * y.detach().cos()).sum(), x, create_graph=True)
    assert kernels.is_channels_last(gx)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    assert kernels.is_channels_last(ggx)


def test_instance_norm_refuses_a_third_derivative(eager) -> None:
    x, w, b = tensors((2, 3, 4, 4), (3,), (3,))
    (gx,) = torch.autograd.grad(fused_norm(x, w, b).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivative"):  # a graph of the 2nd derivative
        torch.autograd.grad(gx.pow(2).sum(), x, create_graph=True)
    torch.autograd.grad(gx.pow(2).sum(), x)  # the second derivative itself is fine


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_pooling_and_relu_pooling_pass_gradgradcheck(eager, layout) -> None:
    (x,) = tensors((2, 3, 4, 6))
    assert torch.autograd.gradgradcheck(avg_pool2x2, (LAYOUTS[layout](x),))
    # Away from the ReLU's kink (finite differences across it are meaningless).
    z = (x.detach() + 0.2 * x.detach().sign()).requires_grad_(True)
    assert torch.autograd.gradgradcheck(relu_avg_pool2x2, (LAYOUTS[layout](z),))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_relu_pooling_equals_relu_then_avg_pool2d_to_second_order(eager, layout) -> None:
    (x,) = tensors((2, 3, 4, 6))
    x0 = x.detach().clone()
    x0[0, 0, 0, :2] = 0.0  # exactly at the kink: both give the ReLU zero gradient there
    results = []
    for fn in (relu_avg_pool2x2, lambda t: F.avg_pool2d(F.relu(t), 2)):
        z = LAYOUTS[layout](x0.clone())
        y = fn(z)
        loss = (y * y.detach().cos()).sum() + y.pow(3).sum()
        (g,) = torch.autograd.grad(loss, z, create_graph=True)
        (gg,) = torch.autograd.grad((g * g).sum(), z)
        results.append((y, g, gg))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_relu_pooling_treats_infinities_and_nan_as_pytorch_does(eager) -> None:
    z0 = torch.tensor([[[[-float("inf"), 1.0], [float("nan"), -2.0]]]])
    up = torch.tensor([[[[float("inf")]]]])
    out = []
    for fn in (relu_avg_pool2x2, lambda t: F.avg_pool2d(F.relu(t), 2)):
        z = z0.clone().requires_grad_(True)
        y = fn(z)
        (g,) = torch.autograd.grad(y, z, up)
        out.append((y, g))
    for ours, theirs in zip(*out, strict=True):
        torch.testing.assert_close(ours, theirs, equal_nan=True)


def test_pooling_rejects_odd_maps() -> None:
    with pytest.raises(ValueError, match="even"):
        avg_pool2x2(torch.zeros(1, 1, 3, 4))


# ----------------------------------------------------------------------- compiled (float32)
@pytest.mark.skipif(not HAS_COMPILER, reason="TorchInductor needs a C++ compiler")
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("phi", ["x", "all"])
def test_compiled_kernels_equal_pytorch_to_second_order(phi, layout) -> None:
    """The real fast path: TorchInductor-compiled kernels on float32, against
    PyTorch's layers; a compile failure would warn, and warnings are errors here."""
    for kernel in kernels.KERNELS.values():
        assert kernel.usable, "a kernel's compile failed earlier in this process"
    x, w, b = tensors((3, 4, 6, 8), (4,), (4,), dtype=torch.float32)
    x = LAYOUTS[layout](x)

    def ours(x, w, b):
        return relu_avg_pool2x2(instance_norm(x, w, b, 1e-5))

    def theirs(x, w, b):
        return F.avg_pool2d(F.relu(F.group_norm(x, 4, w, b, 1e-5)), 2)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = second_order(ours, x, w, b, phi)
    want = second_order(theirs, x, w, b, phi)
    for g, t in zip(got, want, strict=True):
        torch.testing.assert_close(g, t, rtol=1e-4, atol=1e-5)
    for kernel in kernels.KERNELS.values():
        assert kernel.usable


@pytest.mark.skipif(not HAS_COMPILER, reason="TorchInductor needs a C++ compiler")
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("phi", ["x", "all"])
def test_compiled_kernels_in_bf16_are_as_accurate_as_pytorchs_bf16(phi, layout) -> None:
    """Under bf16 autocast the layers get bfloat16 activations and float32 parameters: the
    fused path's value and derivatives are within twice PyTorch's own bf16 error of the float64
    truth (and within 1 % of its largest magnitude)."""
    x, w, b = tensors((3, 4, 6, 8), (4,), (4,), dtype=torch.float64)

    def ours(x, w, b):
        return relu_avg_pool2x2(instance_norm(x, w, b, 1e-5))

    def theirs(x, w, b):
        return F.avg_pool2d(F.relu(F.group_norm(x, 4, w, b, 1e-5)), 2)

    def leaf(t, dtype):
        t = t.detach().to(dtype)
        if t.ndim == 4 and layout == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(True)

    truth = second_order(theirs, x, w, b, phi)
    low = [leaf(x, torch.bfloat16), leaf(w, torch.float32), leaf(b, torch.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = second_order(ours, *low, phi)
    low = [leaf(x, torch.bfloat16), leaf(w, torch.float32), leaf(b, torch.float32)]
    want = second_order(theirs, *low, phi)
    for g, t, ref in zip(got, want, truth, strict=True):
        scale = ref.abs().max().item() + 1e-12
        ours_err = (g.double() - ref).abs().max().item() / scale
        theirs_err = (t.double() - ref).abs().max().item() / scale
        assert ours_err <= 2 * theirs_err + 1e-3 and ours_err < 1e-2, (ours_err, theirs_err)


def test_a_failed_compile_warns_and_falls_back_to_eager(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    kernel = Kernel(lambda t: t * 2)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        out = kernel(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and not kernel.usable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))  # no second warning


def test_an_error_of_the_function_itself_propagates_and_keeps_the_kernel(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    kernel = Kernel(lambda a, b: a @ b)
    with pytest.raises(RuntimeError):
        kernel(torch.ones(2, 3), torch.ones(2, 3))
    assert kernel.usable


def test_kernels_count_their_compiled_calls_and_report_a_failed_compile(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    works, broken = Kernel(lambda t: t + 1), Kernel(lambda t: t + 1)
    monkeypatch.setattr(kernels, "KERNELS", {"works": works, "broken": broken})
    before = kernels.kernel_calls()
    assert before == {"works": 0, "broken": 0}
    works(torch.ones(1))
    works(torch.ones(1))
    broken.usable = False  # as after a failed compile: calls run eager, uncounted
    broken(torch.ones(1))
    assert works.compiled_calls == 2 and broken.compiled_calls == 0
    assert kernels.kernel_calls() == {"works": 2, "broken": -1}
    works(torch.ones(1))
    assert kernels.calls_since({"works": 2, "broken": 0}) == {"works": 1, "broken": -1}
    assert kernels.calls_since(before) == {"works": 3, "broken": -1}


def test_a_kernel_inside_a_compiled_caller_does_not_recompile_it() -> None:
    kernel = Kernel(lambda t: t * 2)
    kernel._compiled = kernel.fn  # as if compiled already
    outer = torch.compile(lambda t: kernel(t) + 1, backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            assert torch.equal(outer(torch.ones(2)), torch.full((2,), 3.0))
    assert kernel.compiled_calls == 0  # inlined into the caller's graph: not counted


def test_a_fused_layer_counts_its_kernels_calls(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    fresh = {"pool": Kernel(kernels._masked_pool), "spread": Kernel(kernels._masked_spread)}
    monkeypatch.setattr(kernels, "POOL", fresh["pool"])
    monkeypatch.setattr(kernels, "SPREAD", fresh["spread"])
    monkeypatch.setattr(kernels, "KERNELS", fresh)
    x = big().requires_grad_(True)
    AvgPool2x2()(x).sum().backward()  # forward: pool; backward: spread
    assert kernels.kernel_calls() == {"pool": 1, "spread": 1}
    with torch.no_grad():  # not on the fused path
        AvgPool2x2()(x)
    assert kernels.kernel_calls() == {"pool": 1, "spread": 1}


def test_a_layer_goes_back_to_pytorch_after_a_failed_compile(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(OSError("cc")))
    monkeypatch.setattr(kernels, "POOL", Kernel(kernels._masked_pool))
    monkeypatch.setattr(kernels, "SPREAD", Kernel(kernels._masked_spread))
    monkeypatch.setattr(kernels, "fused_enabled", lambda x: torch.is_grad_enabled())
    pool = AvgPool2x2()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="cc"):
        first = pool(x)
    torch.testing.assert_close(first, F.avg_pool2d(x, 2))
    assert type(pool(x).grad_fn).__name__ == "AvgPool2DBackward0"


# ------------------------------------------------------------------------------- layers
def big(channels: int = 8) -> torch.Tensor:
    """A CPU float32 activation just large enough for the fused path."""
    side = 16
    n = -(-COMPILE_MIN_NUMEL // (channels * side * side))
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(0))


def test_fused_path_only_with_gradients_on_large_contiguous_or_channels_last_cpu_maps() -> None:
    x = big().requires_grad_(True)
    assert kernels.fused_enabled(x)
    assert not kernels.fused_enabled(x[:1])  # small
    assert not kernels.fused_enabled(x.double())  # float64
    assert kernels.fused_enabled(x.bfloat16())  # bf16 autocast's activations
    # channels-last bf16 maps (what bf16 autocast runs) take it at any size; float32
    # channels-last maps (the opt-in method.channels_last) keep PyTorch's layers
    cl = x.contiguous(memory_format=torch.channels_last)
    assert kernels.fused_enabled(cl.bfloat16()) and kernels.fused_enabled(cl[:1].bfloat16())
    assert not kernels.fused_enabled(cl) and not kernels.fused_enabled(cl[:1])
    assert not kernels.fused_enabled(x[..., ::2])  # strided: neither layout
    with torch.no_grad():
        assert not kernels.fused_enabled(x)
    norm, pool = InstanceNorm(8), AvgPool2x2()
    assert type(norm(x).grad_fn).__name__ == "_InstanceNormBackward"  # (forward: no compile)
    assert type(norm(x[:1]).grad_fn).__name__ == "NativeGroupNormBackward0"
    assert type(pool(x[:1]).grad_fn).__name__ == "AvgPool2DBackward0"
    set_fused(norm, False)
    assert type(norm(x).grad_fn).__name__ == "NativeGroupNormBackward0"


def test_build_model_can_turn_the_fused_layers_off() -> None:
    net = build_model("convnet", 3, 10, (32, 32), width=8, fused=False)
    flags = [m.fused for m in net.modules() if hasattr(m, "fused")]
    assert flags and not any(flags)
    default = build_model("convnet", 3, 10, (32, 32), width=8)
    assert all(m.fused for m in default.modules() if hasattr(m, "fused"))


def _plain(module: nn.Module) -> nn.Module:
    if isinstance(module, InstanceNorm):
        swap = nn.GroupNorm(module.num_groups, module.num_channels, module.eps)
        swap.to(module.weight.dtype).load_state_dict(module.state_dict())
        return swap
    if isinstance(module, AvgPool2x2):
        return nn.AvgPool2d(2, 2)
    return module


@pytest.mark.parametrize("act", ACTIVATIONS.names())
@pytest.mark.parametrize("pool", POOLS.names())
@pytest.mark.parametrize("side", [8, 7])
def test_fusing_sequential_equals_plain_sequential(forced, act, pool, side) -> None:
    """Every activation × pooling, even and odd maps, on the fused path: values and first and
    second derivatives equal the same modules in an ``nn.Sequential`` of PyTorch layers."""
    conv = nn.Conv2d(2, 4, 3, padding=1).double()
    layers = [conv, InstanceNorm(4).double(), make_activation(act), make_pool(pool)]
    fused = FusingSequential(*layers)
    plain = nn.Sequential(*[_plain(m) for m in layers])
    assert fused.state_dict().keys() == plain.state_dict().keys()
    out = []
    for net in (fused, plain):
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 2, side, side, generator=gen, dtype=torch.float64).requires_grad_(True)
        y = net(x)
        loss = (y * y.detach().sin()).sum() + y.pow(2).sum()
        (g,) = torch.autograd.grad(loss, conv.weight, create_graph=True)
        (gx,) = torch.autograd.grad(g.abs().sum(), x)
        out.append((y, g, gx))
    for ours, theirs in zip(*out, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_convnet_with_fused_layers_matches_plain_layers_to_second_order(forced, monkeypatch):
    """The whole network on the fused path against the same weights in PyTorch's layers: image
    gradients of a gradient-matching loss, and the fused functions were really used."""
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
    gen = torch.Generator().manual_seed(0)
    net = build_model("convnet", 3, 4, (16, 16), width=8, generator=gen).double()
    plain = nn.Sequential(*[_plain(m) for m in net.features])

    def match_grad(features: nn.Module) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        syn = torch.randn(3, 3, 16, 16, generator=gen, dtype=torch.float64).requires_grad_(True)
        params = [p for p in features.parameters() if p.ndim == 4]
        loss = F.cross_entropy(net.classifier(features(syn)), torch.tensor([0, 1, 2]))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        (g,) = torch.autograd.grad(sum(gr.abs().sum() for gr in grads), syn)
        return g

    fused = match_grad(net.features)
    assert calls == {"norm": 2, "relu_pool": 2}  # ConvNet-2 on 16×16: two blocks, both fused
    torch.testing.assert_close(fused, match_grad(plain), rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not HAS_COMPILER, reason="TorchInductor needs a C++ compiler")
def test_convnet_under_bf16_autocast_runs_channels_last_and_agrees_with_pytorchs_layers():
    """Under CPU bf16 autocast the ConvNet's stack runs channels-last on the compiled
    channels-last kernels; its matching gradient agrees with PyTorch's own layers (NCHW, same
    autocast) to bf16's precision."""
    from exdistill.precision import autocast_scope

    gen = torch.Generator().manual_seed(0)
    net = build_model("convnet", 3, 4, (16, 16), width=8, generator=gen)
    syn0 = torch.randn(6, 3, 16, 16, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])

    def match_grad(fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        set_fused(net, fused)
        syn = syn0.clone().requires_grad_(True)
        with autocast_scope("bf16", "cpu"):
            logits = net(syn)
            params = [p for p in net.features.parameters() if p.ndim == 4]
            grads = torch.autograd.grad(F.cross_entropy(logits, labels), params, create_graph=True)
            (g,) = torch.autograd.grad(sum(gr.square().sum() for gr in grads), syn)
        return logits.float(), g

    before = kernels.kernel_calls()
    fused_logits, fused_grad = match_grad(True)
    used = kernels.calls_since(before)
    assert all(used[k] > 0 for k in kernels.KERNELS if k.endswith("_cl")), used
    plain_logits, plain_grad = match_grad(False)
    torch.testing.assert_close(fused_logits, plain_logits, rtol=0.05, atol=0.05)
    cosine = F.cosine_similarity(fused_grad.flatten(), plain_grad.flatten(), dim=0)
    assert cosine > 0.99, cosine
    with torch.no_grad(), autocast_scope("bf16", "cpu"):  # evaluation: PyTorch's layers, NHWC
        set_fused(net, True)
        torch.testing.assert_close(net(syn0).float(), plain_logits, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not HAS_COMPILER, reason="TorchInductor needs a C++ compiler")
def test_a_one_channel_convnet_runs_channels_last_under_bf16_and_other_norms_do_not() -> None:
    """A one-channel input is NCHW and channels-last at once (its convolution answers in NCHW):
    the stack converts the maps after it. A ConvNet without the fused instance norm (batch
    norm here) stays NCHW under bf16: its layers would be PyTorch's channels-last ones."""
    from exdistill.precision import autocast_scope

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, generator=gen)
    for name, uses_cl in (("convnet", True), ("convnet_bn", False)):
        net = build_model(name, 1, 3, (16, 16), width=8, generator=gen)
        before = kernels.kernel_calls()
        with autocast_scope("bf16", "cpu"):
            feats = net.features[:-1](x.clone().requires_grad_(True))  # the map before Flatten
            net(x).sum().backward()
        used = kernels.calls_since(before)
        assert kernels.is_channels_last(feats) == uses_cl
        assert (used["norm_forward_cl"] > 0 and used["pool_cl"] > 0) == uses_cl, (name, used)


@pytest.mark.skipif(not HAS_COMPILER, reason="TorchInductor needs a C++ compiler")
def test_bf16_nchw_pooling_rounds_once_even_under_autocast() -> None:
    """The bf16 pooling sums in float32 and rounds once, whatever autocast the caller runs
    (autocast would otherwise take its matmul to bf16 and round twice)."""
    from exdistill.precision import autocast_scope

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 16, 32, generator=gen).bfloat16()
    want = F.avg_pool2d(x.float(), 2).bfloat16()
    with autocast_scope("bf16", "cpu"):
        got = kernels.POOL(x, None)
    assert torch.equal(got, want)


def test_a_kernel_sees_detached_plain_tensors(monkeypatch) -> None:
    """Parameters, leaves with gradients and activations reach the compiled code as the same
    kind of tensor: one guard set, no recompiles per kind (TorchDynamo gives up after 8)."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)

    def record(t, w):
        seen.append((type(t), t.requires_grad, type(w), w.requires_grad))
        return t * w

    kernel = Kernel(record)
    weight = nn.Parameter(torch.ones(3))
    leaf = torch.ones(3, requires_grad=True)
    kernel(leaf, weight)
    kernel(leaf * 2, weight)
    kernel(torch.ones(3), torch.ones(3))
    assert seen == [(torch.Tensor, False, torch.Tensor, False)] * 3

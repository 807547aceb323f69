"""Fused CPU kernels for the two layers that dominate the matching step's non-convolution time.

Gradient matching differentiates a network's gradient (``create_graph=True``), so every layer
runs a forward, a backward and a backward of its backward. For two layers of the ConvNet,
PyTorch's CPU implementations of these are memory-bound and slow (docs/performance.md):

- **instance norm** (``GroupNorm(C, C)``): the forward and first backward are fast native
  kernels, but the second derivative is a composite of ~20 elementwise ops over the activations;
- **2×2 average pooling**: the native ``avg_pool2d`` and its backward on NCHW tensors run several
  times slower than a plain copy of the same data.

Here both are ``torch.autograd.Function``\\ s whose heavy parts are compiled by TorchInductor into
fused C++ loops: the instance norm keeps the native forward and first backward and gets an
explicit second derivative (formulas below); the pooling gets a compiled forward and backward
(each the other's adjoint, so it is differentiable to any order). Results equal PyTorch's to
float32 rounding (tests/test_kernels.py checks values and first and second derivatives).

When the fused path is used: on CPU float32 tensors of at least ``COMPILE_MIN_NUMEL`` elements
(compiling costs seconds once per process; tiny layers do not repay it), and unless the
environment sets ``EXDISTILL_KERNELS=eager``. If compilation fails (no C++ compiler), the kernel
warns once and falls back to the same math in eager PyTorch; the layers then use PyTorch's own
implementation again. Elsewhere (CUDA, small tensors) the layers are exactly PyTorch's.

Instance norm's second derivative. Per (sample, channel) group of M values with mean μ,
``r = 1/sqrt(var + eps)``, ``x̂ = (x − μ)·r``, ``y = γ·x̂ + β``, the first backward is
``gx = r·P(γ·gy)``, ``gγ = Σ gy·x̂``, ``gβ = Σ gy``, with ``P(w) = w − mean(w) − x̂·mean(w·x̂)``
(the means over the group; P is symmetric). Given the upstream gradients A (of gx), a (of gγ)
and b (of gβ), and ``g = γ·gy``:

- of gy: ``γ·r·P(A) + a·x̂ + b``;
- of γ: ``Σ gy·r·P(A)`` (over samples and positions);
- of x: ``−(r²/M)·[x̂·(S_Ag − S_gx̂·S_Ax̂/M) + S_Ax̂·P(g) + S_gx̂·P(A)] + r·P(a·gy)``, with the group
  sums ``S_Ax̂ = Σ A·x̂``, ``S_gx̂ = Σ g·x̂``, ``S_Ag = Σ A·(g − mean(g))``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

# Smallest activation (elements) worth the fused path. Compiling costs ~10 s per process with a
# warm TorchInductor cache (20-40 s cold) and pays off only on large maps: a width-128 ConvNet-3
# block on 40 CIFAR images is 5.2 M elements; digits (8×8) runs stay below and compile nothing.
COMPILE_MIN_NUMEL = 1 << 20
ENV_SWITCH = "EXDISTILL_KERNELS"  # "eager" turns the fused path off


class Kernel:
    """A pure tensor function, compiled by TorchInductor on first use, eager if that fails.

    The compiled callable is a per-process cache (like TorchInductor's own); ``usable`` turns
    False after a failed compile, and the eager function serves every later call.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.usable = True
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if self.usable and os.environ.get(ENV_SWITCH, "") != "eager":
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.fn, dynamic=True)
                return self._compiled(*args)
            except Exception as exc:  # no compiler, unsupported platform, ...
                self.usable = False
                warnings.warn(
                    f"exdistill: compiling {self.fn.__name__} failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); using eager PyTorch",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.fn(*args)


def fused_enabled(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the fused path (see the module docstring)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() >= COMPILE_MIN_NUMEL
        and os.environ.get(ENV_SWITCH, "") != "eager"
    )


# ----------------------------------------------------------------------------- instance norm
def _project(w: torch.Tensor, xh: torch.Tensor, inv_m: float) -> torch.Tensor:
    """P(w) = w − mean(w) − x̂·mean(w·x̂), means over the last dimension."""
    return (w - w.mean(-1, keepdim=True)) - xh * ((w * xh).sum(-1, keepdim=True) * inv_m)


def _norm_second_derivative(
    gy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    a_x: torch.Tensor | None,
    a_w: torch.Tensor | None,
    a_b: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ⟨A, gx⟩ + ⟨a, gγ⟩ + ⟨b, gβ⟩ with respect to gy, x and γ (docstring above)."""
    n, c = x.shape[:2]
    x3, gy3 = x.reshape(n, c, -1), gy.reshape(n, c, -1)
    inv_m = 1.0 / x3.shape[-1]
    r = rstd.reshape(n, c, 1)
    xh = (x3 - mean.reshape(n, c, 1)) * r
    gamma = weight.reshape(1, c, 1)
    d_gy = torch.zeros_like(gy3)
    d_x = torch.zeros_like(x3)
    d_w = torch.zeros_like(weight)
    if a_x is not None:
        a = a_x.reshape(n, c, -1)
        pa = _project(a, xh, inv_m)
        rpa = pa * r
        d_gy = d_gy + rpa * gamma
        d_w = d_w + (gy3 * rpa).sum((0, 2))
        g = gy3 * gamma
        s_ax = (a * xh).sum(-1, keepdim=True)
        s_gx = (g * xh).sum(-1, keepdim=True)
        s_ag = (a * g).sum(-1, keepdim=True) - g.mean(-1, keepdim=True) * a.sum(-1, keepdim=True)
        d_x = d_x - (r * r * inv_m) * (
            xh * (s_ag - s_gx * s_ax * inv_m) + s_ax * _project(g, xh, inv_m) + s_gx * pa
        )
    if a_w is not None:
        aw = a_w.reshape(1, c, 1)
        d_gy = d_gy + xh * aw
        d_x = d_x + _project(gy3 * aw, xh, inv_m) * r
    if a_b is not None:
        d_gy = d_gy + a_b.reshape(1, c, 1)
    return d_gy.reshape(gy.shape), d_x.reshape(x.shape), d_w


NORM_SECOND = Kernel(_norm_second_derivative)


class _InstanceNormGrad(Function):
    """(gy, x, γ) → (gx, gγ, gβ) by the native kernel; its own backward is ``NORM_SECOND``."""

    @staticmethod
    def forward(ctx, gy, x, weight, mean, rstd):  # type: ignore[override]
        n, c = x.shape[:2]
        grads = torch.ops.aten.native_group_norm_backward(
            gy, x, mean, rstd, weight, n, c, x[0, 0].numel(), c, [True, True, True]
        )
        ctx.save_for_backward(gy, x, weight, mean, rstd)
        ctx.set_materialize_grads(False)
        return grads

    @staticmethod
    @once_differentiable
    def backward(ctx, a_x, a_w, a_b):  # type: ignore[override]
        gy, x, weight, mean, rstd = ctx.saved_tensors
        if a_x is None and a_w is None and a_b is None:
            return None, None, None, None, None
        d_gy, d_x, d_w = NORM_SECOND(gy, x, weight, mean, rstd, a_x, a_w, a_b)
        return d_gy, d_x, d_w, None, None


class _InstanceNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        n, c = x.shape[:2]
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, x[0, 0].numel(), c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _InstanceNormGrad.apply(gy.contiguous(), x, weight, mean, rstd)
        return gx, gw, gb, None


def instance_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """``F.group_norm(x, C, weight, bias, eps)`` with the fused second derivative.

    Shape:
        (N, C, H, W) → (N, C, H, W); weight and bias (C,)
    """
    return _InstanceNorm.apply(x.contiguous(), weight, bias, eps)


class InstanceNorm(nn.GroupNorm):
    """``GroupNorm(C, C)`` (instance norm with a per-channel affine) taking the fused path where
    ``fused_enabled``; the same parameters and state dict as ``nn.GroupNorm``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and NORM_SECOND.usable and fused_enabled(x):
            return instance_norm(x, self.weight, self.bias, self.eps)
        return super().forward(x)


# ----------------------------------------------------------------------------- 2×2 average pool
def _masked_pool(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """2×2 average of ``x`` (of ``x`` where ``z > 0``, zero elsewhere, when ``z`` is given)."""
    if z is not None:
        x = x * (z > 0)
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))


def _masked_spread(g: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """Adjoint of ``_masked_pool``: each position gets a quarter of its window's value (times
    the mask ``z > 0`` when ``z`` is given)."""
    n, c, h, w = g.shape
    out = (g * 0.25)[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)
    return out if z is None else out * (z > 0)


POOL = Kernel(_masked_pool)
SPREAD = Kernel(_masked_spread)


class _Pool(Function):
    """x ↦ pool(x·[z > 0]); z (optional) only selects, it gets no gradient."""

    @staticmethod
    def forward(ctx, x, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return POOL(x, z)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return _Spread.apply(g.contiguous(), z), None


class _Spread(Function):
    """g ↦ spread(g)·[z > 0], the adjoint of ``_Pool``; each is the other's backward."""

    @staticmethod
    def forward(ctx, g, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return SPREAD(g, z)

    @staticmethod
    def backward(ctx, gg):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return _Pool.apply(gg.contiguous(), z), None


def _check_even(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"2×2 pooling here needs (N, C, H, W), H and W even; got {tuple(x.shape)}")


def avg_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` for even H and W, differentiable to any order.

    Shape:
        (N, C, H, W) → (N, C, H // 2, W // 2)
    """
    _check_even(x)
    return _Pool.apply(x.contiguous(), None)


def relu_avg_pool2x2(z: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(F.relu(z), 2)`` in one pass, differentiable to any order (the ReLU's mask
    is piecewise constant: it gets no gradient, as in PyTorch).

    Shape:
        (N, C, H, W) → (N, C, H // 2, W // 2)
    """
    _check_even(z)
    z = z.contiguous()
    return _Pool.apply(z, z.detach())


def _poolable(x: torch.Tensor) -> bool:
    return (
        x.ndim == 4
        and x.shape[-1] % 2 == 0
        and x.shape[-2] % 2 == 0
        and POOL.usable
        and SPREAD.usable
        and fused_enabled(x)
    )


class AvgPool2x2(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2)`` taking the fused path on even maps where ``fused_enabled``."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2x2(x) if _poolable(x) else F.avg_pool2d(x, 2, 2)


class FusingSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same state dict) that runs each ``nn.ReLU`` followed by
    an ``AvgPool2x2`` as one fused ``relu_avg_pool2x2`` where the pooling's fused path applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            following = modules[i + 1] if i + 1 < len(modules) else None
            if type(module) is nn.ReLU and isinstance(following, AvgPool2x2) and _poolable(x):
                x = relu_avg_pool2x2(x)
                i += 2
                continue
            x = module(x)
            i += 1
        return x

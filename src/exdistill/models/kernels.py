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

When the fused path is used: where gradients are recorded, on contiguous CPU float32 or bfloat16
tensors (bf16 autocast, ``exdistill.precision``) of at least ``COMPILE_MIN_NUMEL`` elements
(compiling costs seconds once per process; small layers do not repay it), in layers whose ``fused``
attribute is on (``build_model(..., fused=False)`` turns it off for a whole network). If compilation
fails (no C++ compiler), the kernel warns and falls back to the same math in eager PyTorch, and the
layers use PyTorch's own implementation from then on. Elsewhere (CUDA, small tensors,
``torch.no_grad``) the layers are exactly PyTorch's.
Only second derivatives are supported: a third one through the instance norm raises.

Under bf16 the activations that reach these layers are bfloat16 (autocast's convolutions
return it, and the native group norm keeps it); the compiled loops load bf16, compute in fp32
(TorchInductor upcasts) and store bf16, as PyTorch's own bf16 kernels do. Without the fused path
PyTorch's NCHW bf16 pooling and its backward took a quarter of the bf16 matching step
(docs/performance.md), which is why bf16 takes it too.

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

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

# Smallest activation (elements) worth the fused path. Compiling costs ~10 s per process with a
# warm TorchInductor cache (20-40 s cold, 2 cores) and pays off only on large maps: a width-128
# ConvNet-3 block on 40 CIFAR images is 5.2 M elements. The main command (digits, width 32,
# batches ≤ 256: ≤ 0.5 M) stays below and compiles nothing.
COMPILE_MIN_NUMEL = 1 << 20


class Kernel:
    """A pure tensor function, compiled by TorchInductor on first use, eager if that fails.

    Call it only where autograd records nothing (an ``autograd.Function``'s forward or
    backward): its tensor arguments are detached. The compiled callable is a per-process cache
    (like TorchInductor's own). A call that raises
    in compiled form is retried eagerly: if the eager call succeeds, compiling is what failed,
    the kernel warns once and stays eager (``usable`` False); if it raises too, the error is the
    caller's and propagates, the kernel unchanged.

    Example:
        >>> double = Kernel(lambda t: 2 * t)
        >>> double(torch.ones(2)).tolist()  # doctest: +SKIP (compiles: seconds)
        [2.0, 2.0]
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.usable = True
        self.compiled_calls = 0  # calls that ran the compiled code (this process)
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        # Kernels run inside autograd Functions, where nothing is recorded: detached inputs
        # (plain tensors without requires_grad) give the compiled code one guard set, where
        # parameters, leaves and activations would each recompile it (and TorchDynamo stops
        # compiling after 8 recompiles, falling back to eager).
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        # A kernel's precision is its own: the caller's bf16 autocast would round its float32
        # intermediates (the bf16 pooling's matmul) to bf16.
        with torch.autocast("cpu", enabled=False):
            return self._call(*args)

    def _call(self, *args: Any) -> Any:
        if not self.usable:
            return self.fn(*args)
        try:
            if self._compiled is None:
                self._compiled = torch.compile(self.fn, dynamic=True)
            out = self._compiled(*args)
            # Counted in eager code only: inside a torch.compile'd caller (GradMatchConfig
            # .compile) the kernel is inlined into that graph, and a counter read there would
            # become a guard that recompiles it on every call.
            if not torch.compiler.is_compiling():
                self.compiled_calls += 1
            return out
        except Exception as exc:  # no compiler, unsupported platform, ... (or a bad input)
            out = self.fn(*args)  # a bad input raises here too, and reaches the caller
            self.usable = False
            first = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(
                f"exdistill: compiling {self.fn.__name__} failed ({type(exc).__name__}: {first}); "
                "using eager PyTorch",
                RuntimeWarning,
                stacklevel=2,
            )
            return out


FUSED_DTYPES = (torch.float32, torch.bfloat16)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-d map stored channels-last (and not also plain contiguous)."""
    return (
        x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    )


def contiguous_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous in ``ref``'s layout (channels-last or plain)."""
    if is_channels_last(ref):
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def fused_enabled(x: torch.Tensor) -> bool:
    """Whether ``x`` may take the fused path (see the module docstring); layers also check
    their own ``fused`` flag and that the kernels compiled. Channels-last bf16 maps take it at
    any size: they arise under bf16 autocast (``FusingSequential``), where the first layer
    compiles anyway; float32 channels-last maps (``method.channels_last``) keep PyTorch's
    layers, as before."""
    return (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype in FUSED_DTYPES
        and (
            (x.numel() >= COMPILE_MIN_NUMEL and x.is_contiguous())
            or (x.dtype == torch.bfloat16 and is_channels_last(x))
        )
    )


def bf16_autocast(x: torch.Tensor) -> bool:
    """Whether ``x``'s layers run under CPU bf16 autocast (``exdistill.precision``)."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def set_fused(model: nn.Module, fused: bool) -> nn.Module:
    """Turn the fused path of every fused-capable layer of ``model`` on or off."""
    for module in model.modules():
        if isinstance(module, (InstanceNorm, AvgPool2x2, FusingSequential)):
            module.fused = fused
    return model


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
        up = a_x.reshape(n, c, -1)  # A of the docstring
        pa = _project(up, xh, inv_m)
        rpa = pa * r
        d_gy = d_gy + rpa * gamma
        d_w = d_w + (gy3 * rpa).sum((0, 2))
        g = gy3 * gamma
        s_ax = (up * xh).sum(-1, keepdim=True)
        s_gx = (g * xh).sum(-1, keepdim=True)
        s_ag = (up * g).sum(-1, keepdim=True) - g.mean(-1, keepdim=True) * up.sum(-1, keepdim=True)
        d_x = d_x - (r * r * inv_m) * (
            xh * (s_ag - s_gx * s_ax * inv_m) + s_ax * _project(g, xh, inv_m) + s_gx * pa
        )
    if a_w is not None:
        aw = a_w.reshape(1, c, 1)
        d_gy = d_gy + xh * aw
        d_x = d_x + _project(gy3 * aw, xh, inv_m) * r
    if a_b is not None:
        d_gy = d_gy + a_b.reshape(1, c, 1)
    # Cast back inside the compiled loop: autograd would otherwise copy the float32 results
    # to the inputs' dtype (bf16) in a pass of its own.
    return d_gy.reshape(gy.shape).to(gy.dtype), d_x.reshape(x.shape).to(x.dtype), d_w


NORM_SECOND = Kernel(_norm_second_derivative)


# Channels-last instance norm: the same math over the spatial dimensions (2, 3) of a
# channels-last map, in float32, so that TorchInductor's loops run along the channels
# (contiguous) and no layout copy is needed. PyTorch's native group norm has no fast
# channels-last backward on CPU (docs/performance.md).
def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is narrower (bf16, fp16), else as it is (float32, float64)."""
    return t.float() if t.element_size() < 4 else t


def _spatial(t: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) statistics (N, C), broadcast over a map's positions."""
    return t[:, :, None, None]


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (C,), widened, broadcast over a map (N, C, H, W)."""
    return _wide(t)[None, :, None, None]


def _norm_forward_cl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd) as ``native_group_norm`` returns them (mean, rstd: (N, C) float32)."""
    xf = _wide(x)
    mean = xf.mean((2, 3))
    centered = xf - _spatial(mean)
    rstd = torch.rsqrt(centered.square().mean((2, 3)) + eps)
    y = centered * (_spatial(rstd) * _per_channel(weight)) + _per_channel(bias)
    return y.to(x.dtype), mean, rstd


def _project_cl(w: torch.Tensor, xh: torch.Tensor) -> torch.Tensor:
    """P(w) of the module docstring, means over the spatial dimensions."""
    return (w - w.mean((2, 3), keepdim=True)) - xh * (w * xh).mean((2, 3), keepdim=True)


def _norm_backward_cl(
    gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gx, gγ, gβ) as ``native_group_norm_backward`` returns them."""
    g = _wide(gy)
    xh = (_wide(x) - _spatial(mean)) * _spatial(rstd)
    gx = _spatial(rstd) * _project_cl(g * _per_channel(weight), xh)
    gw = (g * xh).sum((0, 2, 3))
    gb = g.sum((0, 2, 3))
    return gx.to(x.dtype), gw.to(weight.dtype), gb.to(weight.dtype)


def _norm_second_derivative_cl(
    gy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    a_x: torch.Tensor | None,
    a_w: torch.Tensor | None,
    a_b: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_norm_second_derivative`` over the spatial dimensions of channels-last maps.

    The same formulas, kept apart on purpose: one function shared by both layouts compiled
    the float32 NCHW kernel differently (results changed in the last bits, measured), and the
    float32 runs stay bit for bit what they were."""
    inv_m = 1.0 / (x.shape[2] * x.shape[3])
    r = _spatial(rstd)
    g3 = _wide(gy)
    xh = (_wide(x) - _spatial(mean)) * r
    gamma = _per_channel(weight)
    d_gy = torch.zeros_like(xh)
    d_x = torch.zeros_like(xh)
    d_w = torch.zeros(weight.shape, dtype=xh.dtype, device=xh.device)
    if a_x is not None:
        up = _wide(a_x)
        pa = _project_cl(up, xh)
        rpa = pa * r
        d_gy = d_gy + rpa * gamma
        d_w = d_w + (g3 * rpa).sum((0, 2, 3))
        g = g3 * gamma
        s_ax = (up * xh).sum((2, 3), keepdim=True)
        s_gx = (g * xh).sum((2, 3), keepdim=True)
        s_ag = (up * g).sum((2, 3), keepdim=True) - g.mean((2, 3), keepdim=True) * up.sum(
            (2, 3), keepdim=True
        )
        d_x = d_x - (r * r * inv_m) * (
            xh * (s_ag - s_gx * s_ax * inv_m) + s_ax * _project_cl(g, xh) + s_gx * pa
        )
    if a_w is not None:
        aw = _per_channel(a_w)
        d_gy = d_gy + xh * aw
        d_x = d_x + _project_cl(g3 * aw, xh) * r
    if a_b is not None:
        d_gy = d_gy + _per_channel(a_b)
    return d_gy.to(gy.dtype), d_x.to(x.dtype), d_w.to(weight.dtype)


NORM_FORWARD_CL = Kernel(_norm_forward_cl)
NORM_BACKWARD_CL = Kernel(_norm_backward_cl)
NORM_SECOND_CL = Kernel(_norm_second_derivative_cl)


class _InstanceNormGrad(Function):
    """(gy, x, γ) → (gx, gγ, gβ) by the native kernel; its own backward is ``NORM_SECOND``."""

    @staticmethod
    def forward(ctx, gy, x, weight, mean, rstd):  # type: ignore[override]
        n, c = x.shape[:2]
        if is_channels_last(x):
            grads = NORM_BACKWARD_CL(gy, x, weight, mean, rstd)
        else:
            grads = torch.ops.aten.native_group_norm_backward(
                gy, x, mean, rstd, weight, n, c, x[0, 0].numel(), c, [True, True, True]
            )
        ctx.save_for_backward(gy, x, weight, mean, rstd)
        ctx.set_materialize_grads(False)
        return grads

    @staticmethod
    def backward(ctx, a_x, a_w, a_b):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True here would ask for a third derivative
            raise RuntimeError(
                "exdistill's fused instance norm has no third derivative: differentiate its "
                "second derivative without create_graph, or build the model with fused=False"
            )
        gy, x, weight, mean, rstd = ctx.saved_tensors
        if a_x is None and a_w is None and a_b is None:
            return None, None, None, None, None
        second = NORM_SECOND_CL if is_channels_last(x) else NORM_SECOND
        d_gy, d_x, d_w = second(gy, x, weight, mean, rstd, a_x, a_w, a_b)
        return d_gy, d_x, d_w, None, None


class _InstanceNorm(Function):
    """x ↦ GroupNorm(C, C)(x) by the native kernel; its backward is ``_InstanceNormGrad``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        n, c = x.shape[:2]
        if is_channels_last(x):
            y, mean, rstd = NORM_FORWARD_CL(x, weight, bias, eps)
        else:
            y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, x[0, 0].numel(), c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _InstanceNormGrad.apply(contiguous_like(gy, x), x, weight, mean, rstd)
        return gx, gw, gb, None


def instance_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """``F.group_norm(x, C, weight, bias, eps)`` with the fused second derivative.

    Shape:
        (N, C, H, W) → (N, C, H, W); weight and bias (C,)
    """
    return _InstanceNorm.apply(contiguous_like(x, x), weight, bias, eps)


class InstanceNorm(nn.GroupNorm):
    """``GroupNorm(C, C)`` (instance norm with a per-channel affine) taking the fused path where
    ``fused`` and ``fused_enabled``; the same parameters and state dict as ``nn.GroupNorm``."""

    def __init__(self, channels: int, eps: float = 1e-5, fused: bool = True) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        usable = (
            (NORM_FORWARD_CL, NORM_BACKWARD_CL, NORM_SECOND_CL)
            if is_channels_last(x)
            else (NORM_SECOND,)
        )
        if self.fused and x.ndim == 4 and all(k.usable for k in usable) and fused_enabled(x):
            return instance_norm(x, self.weight, self.bias, self.eps)
        return super().forward(x)


# ----------------------------------------------------------------------------- 2×2 average pool
def _masked_pool(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """2×2 average of ``x`` (of ``x`` where ``z > 0``, zero elsewhere, when ``z`` is given).

    float32 sums each window in one loop. bfloat16 sums row pairs in float32 (a loop along
    whole rows) and then column pairs by a float32 matmul with a 0/¼ matrix, rounding to bf16
    once at the end: TorchInductor compiles the one-loop form for bf16 into scalar code that
    took 53–65 ms on a 64×128×32×32 map (one thread), against 5 ms for this one."""
    if z is not None:
        x = torch.where(z <= 0, 0.0, x)  # as ReLU's backward selects: −inf → 0, NaN passes
    n, c, h, w = x.shape
    if x.dtype != torch.bfloat16:
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))
    rows = x.float().reshape(n, c, h // 2, 2, w).sum(3)
    cols = torch.arange(w // 2, device=x.device)
    halve = torch.zeros(w, w // 2, dtype=torch.float32, device=x.device)
    halve[2 * cols, cols] = 0.25
    halve[2 * cols + 1, cols] = 0.25
    return (rows.reshape(n * c * (h // 2), w) @ halve).reshape(n, c, h // 2, w // 2).to(x.dtype)


def _masked_spread(g: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """Adjoint of ``_masked_pool``: each position gets a quarter of its window's value (times
    the mask ``z > 0`` when ``z`` is given).

    The width is doubled by a matmul with a 0/¼ matrix (exact: one nonzero per column) and the
    height by a broadcast copy, so the compiled loop runs along whole rows; indexing each output
    by ``j // 2`` instead makes TorchInductor loop over the 2-wide window, 3.4× slower. A
    non-finite gradient (0·inf) makes its whole row NaN, where PyTorch keeps it in its window.
    """
    n, c, h, w = g.shape
    cols = torch.arange(w, device=g.device)
    double = torch.zeros(w, 2 * w, dtype=g.dtype, device=g.device)
    double[cols, 2 * cols] = 0.25
    double[cols, 2 * cols + 1] = 0.25
    wide = (g.reshape(n * c * h, w) @ double).reshape(n, c, h, 1, 2 * w)
    if z is None:
        return wide.expand(n, c, h, 2, 2 * w).reshape(n, c, 2 * h, 2 * w)
    out = torch.where(z.reshape(n, c, h, 2, 2 * w) <= 0, 0.0, wide)  # ReLU's mask, as above
    return out.reshape(n, c, 2 * h, 2 * w)


def _masked_pool_cl(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """``_masked_pool`` of a channels-last map: the window sums run along the channels
    (contiguous), in float32, rounded once; the result is channels-last too."""
    if z is not None:
        x = torch.where(z <= 0, 0.0, x)
    n, c, h, w = x.shape
    t = _wide(x.permute(0, 2, 3, 1)).reshape(n, h // 2, 2, w // 2, 2, c).sum((2, 4)) * 0.25
    return t.to(x.dtype).permute(0, 3, 1, 2)


def _masked_spread_cl(g: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """``_masked_spread`` of a channels-last map (exact: a quarter is a power of two)."""
    n, c, h, w = g.shape
    quarter = (g.permute(0, 2, 3, 1) * 0.25)[:, :, None, :, None, :]
    out = quarter.expand(n, h, 2, w, 2, c).reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    if z is not None:
        out = torch.where(z <= 0, 0.0, out)
    return out


POOL = Kernel(_masked_pool)
SPREAD = Kernel(_masked_spread)
POOL_CL = Kernel(_masked_pool_cl)
SPREAD_CL = Kernel(_masked_spread_cl)
KERNELS = {
    "norm_second": NORM_SECOND,
    "pool": POOL,
    "spread": SPREAD,
    "norm_forward_cl": NORM_FORWARD_CL,
    "norm_backward_cl": NORM_BACKWARD_CL,
    "norm_second_cl": NORM_SECOND_CL,
    "pool_cl": POOL_CL,
    "spread_cl": SPREAD_CL,
}


def kernel_calls() -> dict[str, int]:
    """Compiled calls of each fused kernel so far in this process (a run's metrics record the
    difference across its distillation: which path it took). A kernel that failed to compile
    reports -1: its layers run PyTorch's own implementation."""
    return {name: k.compiled_calls if k.usable else -1 for name, k in KERNELS.items()}


def calls_since(before: dict[str, int]) -> dict[str, int]:
    """``kernel_calls()`` minus an earlier snapshot (-1 stays: the kernel is unusable)."""
    now = kernel_calls()
    return {name: n if n < 0 else n - max(before.get(name, 0), 0) for name, n in now.items()}


class _Pool(Function):
    """x ↦ pool(x·[z > 0]); z (optional) only selects, it gets no gradient."""

    @staticmethod
    def forward(ctx, x, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.channels_last = is_channels_last(x)
        return (POOL_CL if ctx.channels_last else POOL)(x, z)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        g = g.contiguous(memory_format=_layout(ctx.channels_last))
        return _Spread.apply(g, z), None


class _Spread(Function):
    """g ↦ spread(g)·[z > 0], the adjoint of ``_Pool``; each is the other's backward."""

    @staticmethod
    def forward(ctx, g, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.channels_last = is_channels_last(g)
        return (SPREAD_CL if ctx.channels_last else SPREAD)(g, z)

    @staticmethod
    def backward(ctx, gg):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        gg = gg.contiguous(memory_format=_layout(ctx.channels_last))
        return _Pool.apply(gg, z), None


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _check_even(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"2×2 pooling here needs (N, C, H, W), H and W even; got {tuple(x.shape)}")


def avg_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` for even H and W, differentiable to any order.

    Shape:
        (N, C, H, W) → (N, C, H // 2, W // 2)
    """
    _check_even(x)
    return _Pool.apply(contiguous_like(x, x), None)


def relu_avg_pool2x2(z: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(F.relu(z), 2)`` in one pass, differentiable to any order (the ReLU's mask
    is piecewise constant: it gets no gradient, as in PyTorch).

    Shape:
        (N, C, H, W) → (N, C, H // 2, W // 2)
    """
    _check_even(z)
    z = contiguous_like(z, z)
    return _Pool.apply(z, z.detach())


def _poolable(x: torch.Tensor) -> bool:
    return (
        x.ndim == 4
        and x.shape[-1] % 2 == 0
        and x.shape[-2] % 2 == 0
        and all(k.usable for k in ((POOL_CL, SPREAD_CL) if is_channels_last(x) else (POOL, SPREAD)))
        and fused_enabled(x)
    )


class AvgPool2x2(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2)`` taking the fused path on even maps where ``fused`` and
    ``fused_enabled``."""

    def __init__(self, fused: bool = True) -> None:
        super().__init__(kernel_size=2, stride=2)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2x2(x) if self.fused and _poolable(x) else F.avg_pool2d(x, 2, 2)


class FusingSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same state dict) that runs each ``nn.ReLU`` followed by
    an ``AvgPool2x2`` as one fused ``relu_avg_pool2x2`` where the pooling's fused path applies.

    The two fused modules' own forward (and any hooks on them) are then not called; an in-place
    ReLU is computed out of place. Not traceable by ``torch.fx`` (use ``set_fused(net, False)``).
    """

    fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        # bf16 convolutions reach the bf16 units' rate only on channels-last maps (NCHW ones
        # reorder every output): under CPU bf16 autocast a stack with the fused instance norm
        # runs channels-last, and the fused norm and pooling take that layout
        # (docs/performance.md). A one-channel input is both layouts at once and its
        # convolution answers in NCHW, so every 4-d map is converted (a no-op once it is).
        channels_last = (
            self.fused
            and x.ndim == 4
            and bf16_autocast(x)
            and any(isinstance(m, InstanceNorm) and m.fused for m in modules)
        )
        i = 0
        while i < len(modules):
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            module = modules[i]
            following = modules[i + 1] if i + 1 < len(modules) else None
            if (
                self.fused
                and type(module) is nn.ReLU
                and isinstance(following, AvgPool2x2)
                and following.fused
                and _poolable(x)
            ):
                x = relu_avg_pool2x2(x)
                i += 2
                continue
            x = module(x)
            i += 1
        return x

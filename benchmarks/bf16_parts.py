"""Where bf16 gains and where it does not: the matching step's parts alone, fp32 against bf16.

    python benchmarks/bf16_parts.py [--threads 1] [--reps 5]

At the CIFAR shape of ``matching_speed.py``'s case a (40 × 128 × 32 × 32 for the convolutions;
104 × 128 × 32 × 32, i.e. 64 real + 40 synthetic images, for the pooling), it times: a 3×3
convolution's forward and backward, the double backward of its weight gradient (what gradient
matching differentiates), and the fused kernels of ``exdistill.models.kernels`` (ReLU + 2×2
pooling and its adjoint) next to PyTorch's own and a plain copy of the same tensor (the
memory-bound floor). Each row in fp32 and bf16, NCHW and channels-last where it applies.
Numbers are ms per call; only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from exdistill.models.kernels import POOL, SPREAD

FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def ms(fn: Callable[[], object], reps: int) -> float:
    fn(), fn()  # warm-up (and compilation of the fused kernels)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def conv_forward_backward(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> object:
    return torch.autograd.grad(F.conv2d(x, w, padding=1), (x, w), g)


def conv_double_backward(x: torch.Tensor, w: torch.Tensor) -> object:
    """The weight gradient with its graph, then its gradient with respect to the input."""
    y = F.conv2d(x, w, padding=1)
    (gw,) = torch.autograd.grad(y.square().sum(), (w,), create_graph=True)
    return torch.autograd.grad(gw.float().abs().sum(), (x,))


def conv_rows(dtype: torch.dtype, reps: int) -> list[tuple[str, float]]:
    rows = []
    for name, fmt in FORMATS.items():
        x = torch.randn(40, 128, 32, 32, dtype=dtype).contiguous(memory_format=fmt)
        w = torch.randn(128, 128, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
        x.requires_grad_(), w.requires_grad_()
        g = torch.randn(40, 128, 32, 32, dtype=dtype)
        both = partial(conv_forward_backward, x, w, g)
        rows.append((f"conv 3×3 forward + backward, {name}", ms(both, reps)))
        double = partial(conv_double_backward, x, w)
        rows.append((f"conv weight-gradient double backward, {name}", ms(double, reps)))
    return rows


def pool_conv(x: torch.Tensor, quarter: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, quarter, stride=2, groups=x.shape[1])


def pool_rows(dtype: torch.dtype, reps: int) -> list[tuple[str, float]]:
    z = torch.randn(104, 128, 32, 32, dtype=dtype)
    g = torch.randn(104, 128, 16, 16, dtype=dtype)
    z_nhwc = z.contiguous(memory_format=torch.channels_last)
    quarter = torch.full((128, 1, 2, 2), 0.25, dtype=dtype)
    return [
        ("fused ReLU + pool (kernels.POOL)", ms(lambda: POOL(z, z), reps)),
        ("PyTorch relu then avg_pool2d", ms(lambda: F.avg_pool2d(F.relu(z), 2), reps)),
        ("PyTorch relu then avg_pool2d, nhwc", ms(lambda: F.avg_pool2d(F.relu(z_nhwc), 2), reps)),
        ("pool as a 2×2 depthwise conv, stride 2", ms(partial(pool_conv, z, quarter), reps)),
        ("the same, nhwc", ms(partial(pool_conv, z_nhwc, quarter), reps)),
        ("fused adjoint (kernels.SPREAD)", ms(lambda: SPREAD(g, z), reps)),
        ("plain copy of the map (memory floor)", ms(z.clone, reps)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for label, value in conv_rows(dtype, args.reps) + pool_rows(dtype, args.reps):
            results.setdefault(label, {})[dtype] = value
    print(f"{'part':<48} {'fp32 ms':>9} {'bf16 ms':>9} {'fp32/bf16':>10}")
    for label, by in results.items():
        a, b = by[torch.float32], by[torch.bfloat16]
        print(f"{label:<48} {a:>9.1f} {b:>9.1f} {a / b:>10.2f}")


if __name__ == "__main__":
    main()

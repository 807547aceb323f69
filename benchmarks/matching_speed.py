"""Speed of the inner gradient-matching step against a plain per-class reference loop.

    python benchmarks/matching_speed.py [--case a|b|c|all] [--steps 5] [--threads N] [--json PATH]
                                        [--grad-rtol 1e-4] [--device cpu|cuda] [--no-fused]
                                        [--precision fp32|bf16]

``--precision bf16`` runs the library's step under bf16 autocast (``exdistill.precision``)
while the reference stays the fp32 loop, so the ratio is what bf16 buys over the official code;
the check is then the loss within 1e-2 and the image gradient's cosine ≥ 0.99, and the achieved
GFLOP/s are also given against the bf16 matmul rate measured in the same process.

The library side is one call of ``exdistill.methods.matching.match_and_backward``. The reference
is written here with the structure of the official DC/IDC code: a Python loop over classes; per
class one forward/backward on the real batch (gradients detached), one on the synthetic batch
with ``create_graph=True``, the distance; the per-class losses are summed and back-propagated
once (as DC does; IDC back-propagates each class's loss: the same work). Both sides see
identical inputs: the same θ, the same real batches, the same stored synthetic images (decoded
by ``exdistill.synthetic.decode`` per class), no augmentation. Before timing, the script checks
that the two losses agree to 1e-4 (relative) and that the image gradients agree to
``--grad-rtol`` (1e-4) of the largest gradient magnitude, and prints both measured differences.

Why 1e-4 on the image gradients holds, and when it will not: both sides run the same
convolutions in the same order; only the fused instance norm and pooling (``models.kernels``)
round differently, and the two sides agree to ~2e-7 of the largest gradient. Float32 itself is
less accurate than that here: against a float64 run of the reference (case a, 2 classes),
float32 image gradients differ by 1.0e-3 of the largest magnitude with l1 (1.1e-4 with mse; the
loss by 2e-6), because l1 takes the sign of ``g_syn - g_real`` and rounding flips the sign of
the near-zero entries. A library that reorders the sums of the convolutions is correct only to
that level: channels-last convolutions differ from this reference by 3e-3 to 5e-3 on case a
(loss 1e-6). Check such a library with ``--grad-rtol 1e-2``; the loss check stays at 1e-4.

Like the official IDC ``matchloss``, the reference differentiates every parameter of the
network and skips the unmatched ones (here: all but the conv weights) when summing the distance;
the library asks autograd for the matched layers only (about 8 % of case a's step). The reference
network is the library's with its fused layers off (``plain_copy``): the same weights in the
PyTorch layers the official code uses (``nn.GroupNorm(C, C)``, ``nn.ReLU``, ``nn.AvgPool2d(2)``).

Cases (IDC setting: l1 distance on the conv weights, ipc 10, factor 2, width 128):

- ``a``: CIFAR-10 shape, 3×32×32, ConvNet-3 (instance norm), 64 real and 10·2² = 40 decoded
  synthetic images per class, random tensors (speed does not depend on pixel values);
- ``b``: digits shape, 1×8×8, ConvNet-2 (``depth_for_resolution(8)``), the built-in digits;
- ``c``: Tiny-ImageNet shape, 3×64×64, ConvNet-4, otherwise as ``a`` (not in ``all``: on CPU a
  step takes about four times case a's).

``--device cuda`` runs both sides on the GPU (inputs made on CPU with the same generator, then
moved; every timed step is bracketed by ``torch.cuda.synchronize``).

Per case it prints ms/step of both (median of ``--steps`` timed steps after one warm-up step,
the two sides interleaved so background load hits both alike), the ratio reference/library,
the spread of the step times ((max − min) / median; on a shared machine use ``--threads 1``:
with two threads on two cores that another job also used, case a steps took 12.6 to 32.7 s,
with one thread about 9 s),
the FLOPs of one library step (``torch.utils.flop_counter.FlopCounterMode``: conv and matmul,
forward, backward and double backward), the achieved GFLOP/s and its fraction of this process's
dense fp32 matmul rate (2048×2048, 10 repeats). The last line is ``speedup X.XX``: the ratio of
case a (of the first case run when a is not run).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from exdistill.data import load_dataset
from exdistill.methods.matching import DISTANCES, LAYERS, ClassBatch, match_and_backward
from exdistill.models import build_model
from exdistill.models.kernels import set_fused
from exdistill.precision import autocast_scope
from exdistill.synthetic import decode, encode

LOSS_RTOL = 1e-4
# bf16 rounds every convolution's inputs to 8 bits of mantissa: the loss agrees to ~2e-4 and
# the image gradient's direction to a cosine of ~0.999 (CIFAR shape), so a bf16 library is held
# to the loss within 1e-2 and the gradient's cosine ≥ 0.99 instead of elementwise agreement.
BF16_LOSS_RTOL, BF16_MIN_COSINE = 1e-2, 0.99


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    channels: int
    size: int
    classes: int = 10
    ipc: int = 10
    factor: int = 2
    real_per_class: int = 64
    width: int = 128
    distance: str = "l1"
    layers: str = "conv"
    digits: bool = False  # real digits instead of random tensors
    class_chunk: int = 0  # the library's classes per backward pass (0: all at once)
    fused: bool = True  # the library's network with models.kernels' fused layers (False: off)
    precision: str = "fp32"  # the library's step under exdistill.precision's scope (ref: fp32)


CASES = {
    "a": Case("a", "CIFAR shape 3×32×32", channels=3, size=32),
    "b": Case("b", "digits 1×8×8", channels=1, size=8, digits=True),
    "c": Case("c", "Tiny-ImageNet 3×64×64", channels=3, size=64),
}


@dataclass
class Inputs:
    model: nn.Module  # the library's network (its fused layers on)
    params: list[nn.Parameter]
    plain: nn.Module  # the reference's: the same weights in plain PyTorch layers
    plain_params: list[nn.Parameter]
    real: list[torch.Tensor]  # per class (real_per_class, C, H, W), no graph
    stored: torch.Tensor  # (classes·ipc, C, H, W), class-major; the leaf both sides optimise


def plain_copy(model: nn.Module) -> nn.Module:
    """``model`` (same weights, device, dtype) with its fused layers off: every layer then runs
    PyTorch's own implementation, as in the official code (``nn.GroupNorm(C, C)``, ``nn.ReLU``,
    ``nn.AvgPool2d(2)``)."""
    return set_fused(copy.deepcopy(model), False)


def make_inputs(case: Case, seed: int = 0, device: str = "cpu") -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    shape = (case.channels, case.size, case.size)
    n_syn = case.ipc * case.factor**2  # decoded images per class
    if case.digits:
        ds = load_dataset("digits")

        def sample(c: int, n: int) -> torch.Tensor:  # (n, 1, 8, 8) normalised train images
            pool = ds.class_indices("train")[c]
            return ds.normalize(ds.train.images[pool[torch.randperm(len(pool), generator=gen)[:n]]])

        real = [sample(c, case.real_per_class) for c in range(case.classes)]
        stored = [encode(sample(c, n_syn), case.factor) for c in range(case.classes)]
        stored_images = torch.cat(stored)
    else:
        real = [
            torch.randn(case.real_per_class, *shape, generator=gen) for _ in range(case.classes)
        ]
        stored_images = torch.randn(case.classes * case.ipc, *shape, generator=gen)
    model = build_model(
        "convnet",
        case.channels,
        case.classes,
        (case.size, case.size),
        generator=gen,
        width=case.width,
    ).train()
    model, real = model.to(device), [r.to(device) for r in real]
    plain = plain_copy(model)
    if not case.fused:
        model = plain_copy(model)  # the library on PyTorch's layers too (a separate copy)
    layers = LAYERS.get(case.layers)
    return Inputs(model, layers(model), plain, layers(plain), real, stored_images.to(device))


# ----------------------------------------------------------------------------- the two sides
def library_step(case: Case, inp: Inputs, stored: torch.Tensor, gen: torch.Generator) -> float:
    """One matching step through the library: ``stored.grad`` accumulates."""

    def make_batches(chunk: Sequence[int]) -> list[ClassBatch]:
        return [
            ClassBatch(
                c, inp.real[c], decode(stored[c * case.ipc : (c + 1) * case.ipc], case.factor)
            )
            for c in chunk
        ]

    with autocast_scope(case.precision, stored.device):
        return match_and_backward(
            inp.model,
            inp.params,
            DISTANCES.get(case.distance),
            make_batches,
            range(case.classes),
            None,
            gen,
            class_chunk=case.class_chunk,
            inputs=[stored],
        )


def reference_distance(
    g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], metric: str
) -> torch.Tensor:
    """The official IDC ``dist`` for its two CIFAR/ImageNet metrics, summed over layers."""
    loss = torch.zeros((), device=g_syn[0].device)
    for gs, gr in zip(g_syn, g_real, strict=True):
        if metric == "l1":
            loss = loss + torch.sum(torch.abs(gs - gr))
        elif metric == "mse":
            loss = loss + torch.sum((gs - gr) ** 2)
        else:
            raise ValueError(f"reference implements l1 and mse, not {metric!r}")
    return loss


def reference_step(case: Case, inp: Inputs, stored: torch.Tensor) -> float:
    """One matching step as the official code writes it: a loop over classes, one backward;
    gradients of every parameter, the distance over the matched ones."""
    model = inp.plain
    params = list(model.parameters())
    matched = [any(p is q for q in inp.plain_params) for p in params]
    loss = torch.zeros((), device=stored.device)
    for c in range(case.classes):
        img_real = inp.real[c]
        img_syn = decode(stored[c * case.ipc : (c + 1) * case.ipc], case.factor)
        lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long, device=img_real.device)
        lab_syn = torch.full((img_syn.shape[0],), c, dtype=torch.long, device=img_syn.device)

        loss_real = F.cross_entropy(model(img_real), lab_real)
        g_real = [g.detach() for g in torch.autograd.grad(loss_real, params)]
        loss_syn = F.cross_entropy(model(img_syn), lab_syn)
        g_syn = torch.autograd.grad(loss_syn, params, create_graph=True)
        loss = loss + reference_distance(
            [g for g, m in zip(g_syn, matched, strict=True) if m],
            [g for g, m in zip(g_real, matched, strict=True) if m],
            case.distance,
        )
    loss.backward()
    return float(loss.detach())


# ----------------------------------------------------------------------------- measuring
def fresh_leaf(stored: torch.Tensor) -> torch.Tensor:
    return stored.detach().clone().requires_grad_(True)


def check_agreement(
    case: Case, inp: Inputs, gen: torch.Generator, grad_rtol: float
) -> dict[str, float]:
    """One step on each side from zero gradients (it doubles as the warm-up)."""
    lib_leaf, ref_leaf = fresh_leaf(inp.stored), fresh_leaf(inp.stored)
    inp.model.zero_grad(set_to_none=True)
    lib_loss = library_step(case, inp, lib_leaf, gen)
    inp.plain.zero_grad(set_to_none=True)
    ref_loss = reference_step(case, inp, ref_leaf)
    loss_rel = abs(lib_loss - ref_loss) / max(abs(ref_loss), 1e-30)
    scale = ref_leaf.grad.abs().max().item()
    grad_rel = (lib_leaf.grad - ref_leaf.grad).abs().max().item() / max(scale, 1e-30)
    cosine = torch.nn.functional.cosine_similarity(
        lib_leaf.grad.flatten().double(), ref_leaf.grad.flatten().double(), dim=0
    ).item()
    if case.precision == "bf16":
        if loss_rel > BF16_LOSS_RTOL or cosine < BF16_MIN_COSINE:
            raise AssertionError(
                f"case {case.key}: bf16 library vs fp32 reference: loss relative {loss_rel:.3g} "
                f"(≤ {BF16_LOSS_RTOL}), gradient cosine {cosine:.4f} (≥ {BF16_MIN_COSINE})"
            )
        grad_rtol = float("inf")  # judged by the cosine above
    if loss_rel > LOSS_RTOL and case.precision == "fp32":
        raise AssertionError(
            f"case {case.key}: losses differ: library {lib_loss:.8g}, "
            f"reference {ref_loss:.8g} (relative {loss_rel:.3g})"
        )
    if grad_rel > grad_rtol:
        raise AssertionError(
            f"case {case.key}: image gradients differ by {grad_rel:.3g} of "
            f"their largest magnitude {scale:.3g}"
        )
    return {
        "loss": lib_loss,
        "loss_rel_diff": loss_rel,
        "grad_max_rel_diff": grad_rel,
        "grad_cosine": cosine,
        "grad_max": scale,
    }


def count_flops(case: Case, inp: Inputs, gen: torch.Generator) -> int:
    leaf = fresh_leaf(inp.stored)
    inp.model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        library_step(case, inp, leaf, gen)
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    n: int = 2048, reps: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Dense matmul GFLOP/s of this process at ``dtype`` (same threads as the benchmark)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a, b = a.to(device, dtype), b.to(device, dtype)
    torch.mm(a, b)  # warm-up
    sync(a.device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(a.device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def run_case(case: Case, steps: int, peak: float, grad_rtol: float, device: str = "cpu") -> dict:
    inp = make_inputs(case, device=device)
    gen = torch.Generator().manual_seed(1)  # augmentation is off: nothing draws from it
    agreement = check_agreement(case, inp, gen, grad_rtol)
    lib_times, ref_times = [], []
    for step in range(steps):
        # Alternate which side goes first, so drifting background load hits both alike.
        order = ("lib", "ref") if step % 2 == 0 else ("ref", "lib")
        for side in order:
            leaf = fresh_leaf(inp.stored)
            inp.model.zero_grad(set_to_none=True)
            inp.plain.zero_grad(set_to_none=True)
            sync(leaf.device)
            start = time.perf_counter()
            if side == "lib":
                library_step(case, inp, leaf, gen)
            else:
                reference_step(case, inp, leaf)
            sync(leaf.device)
            (lib_times if side == "lib" else ref_times).append(time.perf_counter() - start)
    lib_s, ref_s = statistics.median(lib_times), statistics.median(ref_times)
    flops = count_flops(case, inp, gen)
    return {
        "case": asdict(case),
        **agreement,
        "library_ms": 1e3 * lib_s,
        "reference_ms": 1e3 * ref_s,
        "library_ms_all": [1e3 * t for t in lib_times],
        "reference_ms_all": [1e3 * t for t in ref_times],
        "ratio": ref_s / lib_s,
        "library_steps_per_s": 1 / lib_s,
        # (max − min) / median of the noisier side: large under background load
        "spread": max((max(t) - min(t)) / statistics.median(t) for t in (lib_times, ref_times)),
        "gflop_per_step": flops / 1e9,
        "library_gflops": flops / lib_s / 1e9,
        "matmul_gflops": peak,
        "fraction_of_matmul": flops / lib_s / 1e9 / peak,
    }


def print_table(results: list[dict], peak: float, threads: int, peak_bf16: float) -> None:
    print(
        f"\nthreads {threads}, dense matmul 2048²: fp32 {peak:.1f} GFLOP/s, "
        f"bf16 {peak_bf16:.1f} GFLOP/s"
    )
    head = (
        f"{'case':<22} {'lib ms':>9} {'ref ms':>9} {'ref/lib':>8} {'steps/s':>8} {'GFLOP':>8} "
        f"{'spread':>7} {'GFLOP/s':>8} {'of mm':>6} {'loss rel':>9} {'grad rel':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['case']['key'] + ' ' + r['case']['label']:<22} {r['library_ms']:9.1f} "
            f"{r['reference_ms']:9.1f} {r['ratio']:8.3f} {r['library_steps_per_s']:8.2f} "
            f"{r['gflop_per_step']:8.2f} "
            f"{r['spread']:7.1%} {r['library_gflops']:8.1f} {r['fraction_of_matmul']:6.1%} "
            f"{r['loss_rel_diff']:9.2e} {r['grad_max_rel_diff']:9.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps default")
    parser.add_argument("--case", choices=["a", "b", "c", "all"], default="all")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--class-chunk", type=int, default=0, help="library classes per backward (0: all)"
    )
    parser.add_argument(
        "--no-fused",
        action="store_true",
        help="run the library's step on PyTorch's layers (models.kernels off), to measure them",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="the library's step at this precision (the reference stays fp32)",
    )
    parser.add_argument(
        "--grad-rtol",
        type=float,
        default=1e-4,
        help="allowed image-gradient difference, as a fraction of the largest magnitude",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be ≥ 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    keys = ["a", "b"] if args.case == "all" else [args.case]
    peak = matmul_rate(device=args.device)
    peak_bf16 = matmul_rate(device=args.device, dtype=torch.bfloat16)
    results = []
    for key in keys:
        case = replace(
            CASES[key],
            class_chunk=args.class_chunk,
            fused=not args.no_fused,
            precision=args.precision,
        )
        print(f"case {key}: {case.label}, {args.steps} timed steps per side ...", flush=True)
        results.append(run_case(case, args.steps, peak, args.grad_rtol, args.device))
    for r in results:
        r["fraction_of_bf16_matmul"] = r["library_gflops"] / peak_bf16
    print_table(results, peak, threads, peak_bf16)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "threads": threads,
            "device": args.device,
            "torch": torch.__version__,
            "steps": args.steps,
            "matmul_gflops": peak,
            "matmul_bf16_gflops": peak_bf16,
            "precision": args.precision,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    headline = next((r for r in results if r["case"]["key"] == "a"), results[0])
    print(f"speedup {headline['ratio']:.2f}")


if __name__ == "__main__":
    main()

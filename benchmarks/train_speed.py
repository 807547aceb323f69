"""Speed of evaluation training (``train.Trainer``) in fp32 and at ``--precision``.

    python benchmarks/train_speed.py [--precision bf16] [--steps 30] [--threads N]
                                     [--channels-last] [--json PATH]

The step is the library's evaluation step at the CIFAR shape, ipc 50: a ConvNet-3 (instance
norm) on batches of 64 of 500 normalised 3×32×32 images, the ``idc`` protocol's recipe (SGD
momentum 0.9, per-sample colour/crop/flip/scale/rotate augmentation, CutMix p 0.5), at width 128
(the published protocol) and width 32 (the quick one). Both precisions train the same network
from the same weights on the same batches, the two interleaved step by step so that background
load hits both alike; bf16 runs under ``exdistill.precision.autocast_scope``.

Per width it prints steps/s of both, their ratio, the FLOPs of one step
(``torch.utils.flop_counter``) and the achieved GFLOP/s against the fp32 and bf16 matmul rates
measured in the same process (2048², the limit of what the step could reach). The last line is
``speedup X.XX``: bf16 steps/s over fp32 steps/s at width 128.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from exdistill.evaluation import PROTOCOLS
from exdistill.models import build_model
from exdistill.precision import autocast_scope
from exdistill.train import Trainer


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def measure(width: int, steps: int, precision: str, channels_last: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(500, 3, 32, 32, generator=gen)
    labels = torch.arange(10).repeat_interleave(50)
    recipe = PROTOCOLS.get("idc").train
    base = build_model("convnet", 3, 10, (32, 32), generator=gen, width=width)
    nets = {"fp32": base, precision: copy.deepcopy(base)}
    if channels_last:
        nets = {k: v.to(memory_format=torch.channels_last) for k, v in nets.items()}
    trainers = {
        k: Trainer(net, recipe, total_steps=1 << 30, generator=torch.Generator().manual_seed(1))
        for k, net in nets.items()
    }
    order = torch.randperm(500, generator=gen)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i * 64) % 436 :][:64]
        x = images[idx]
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), labels[
            idx
        ]

    times: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(steps + 2):  # two warm-up steps each
        for k in list(trainers)[:: 1 if i % 2 == 0 else -1]:
            x, y = batch(i)
            start = time.perf_counter()
            with autocast_scope(k, "cpu"):
                trainers[k].step(x, y)
            if i >= 2:
                times[k].append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        x, y = batch(0)
        trainers["fp32"].step(x, y)
    flops = counter.get_total_flops()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "width": width,
        "fp32_steps_per_s": 1 / med["fp32"],
        f"{precision}_steps_per_s": 1 / med[precision],
        "speedup": med["fp32"] / med[precision],
        "gflop_per_step": flops / 1e9,
        "fp32_gflops": flops / med["fp32"] / 1e9,
        f"{precision}_gflops": flops / med[precision] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per precision")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps default")
    parser.add_argument("--channels-last", action="store_true", help="NHWC network and batches")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    fp32_peak, bf16_peak = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    print(f"threads {torch.get_num_threads()}, matmul 2048²: fp32 {fp32_peak:.0f} GFLOP/s, "
          f"bf16 {bf16_peak:.0f} GFLOP/s")  # fmt: skip
    results = [measure(w, args.steps, args.precision, args.channels_last) for w in (128, 32)]
    p = args.precision
    for r in results:
        print(
            f"width {r['width']:>3}: fp32 {r['fp32_steps_per_s']:6.1f} steps/s "
            f"({r['fp32_gflops']:.0f} GFLOP/s, {r['fp32_gflops'] / fp32_peak:.0%} of fp32 mm), "
            f"{p} {r[f'{p}_steps_per_s']:6.1f} steps/s ({r[f'{p}_gflops']:.0f} GFLOP/s, "
            f"{r[f'{p}_gflops'] / bf16_peak:.0%} of bf16 mm), ratio {r['speedup']:.2f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"threads": torch.get_num_threads(), "fp32_matmul_gflops": fp32_peak,
                   "bf16_matmul_gflops": bf16_peak, "channels_last": args.channels_last,
                   "results": results}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"speedup {results[0]['speedup']:.2f}")


if __name__ == "__main__":
    main()

"""Profile one library matching step (``matching_speed.py``'s cases) and print where it spends
its time.

    python benchmarks/profile_step.py [--case a] [--precision bf16] [--threads 1] [--rows 25]

Builds the case exactly as ``matching_speed.py`` does, warms up two steps (the fused kernels
compile then), times one, and profiles one more with ``torch.profiler``: the table is sorted by
self CPU time, so the rows say which operators (or compiled graphs of ``models.kernels``) cost.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import matching_speed as bench  # this script's folder is on sys.path when it runs
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="a", choices=["a", "b", "c"])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = replace(bench.CASES[args.case], precision=args.precision)
    inputs = bench.make_inputs(case)
    gen = torch.Generator().manual_seed(0)
    stored = inputs.stored.clone().requires_grad_()
    for _ in range(2):
        bench.library_step(case, inputs, stored, gen)
    start = time.perf_counter()
    bench.library_step(case, inputs, stored, gen)
    print(f"case {args.case}, {args.precision}, {args.threads} thread(s): one step")
    print(f"{time.perf_counter() - start:.3f} s")
    with torch.profiler.profile() as prof:
        bench.library_step(case, inputs, stored, gen)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()

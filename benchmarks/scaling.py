"""Time and peak memory of one outer iteration of IDC and of EDD, from 10 to 200 classes.

    python benchmarks/scaling.py [--quick] [--cases cifar10,...] [--threads 1] [--device cpu]
                                 [--class-chunk -1] [--match-steps N] [--json PATH]

Shapes (random uint8 tensors in memory, no files; speed and memory do not depend on pixel
values): ``cifar10`` 10 classes 3×32×32, ``cifar100`` 100 classes 3×32×32 (ConvNet-3), and the
Tiny-ImageNet shape 3×64×64 (ConvNet-4) with ``tiny50``, ``tiny100``, ``tiny200`` classes.
``--tiny-data DIR`` makes the ``tiny*`` cases real: Tiny-ImageNet in the Hugging Face parquet
layout (``../shared/data/tiny-imagenet``), its first 50/100/200 classes, the training split
less exdistill's validation tenth (360 images per class: fewer than the full budget's 500, so
the real pool is what the data has; the ``real`` column says how many).

"One outer iteration" is one call of ``GradientMatching.distill_segment`` with
``iterations=1``: a fresh θ, then ``match_steps`` times one image update over every class
(decode, sample, siamese augmentation, real and synthetic gradients, distance, backward)
followed by θ's update on real data, then the clamp and NaN check. It includes resolving the
automatic ``class_chunk`` (one measured class term). The paper setting runs 100 match steps per
outer iteration; the full budget here runs ``match_steps=2``, so multiply the per-step time.

- ``idc``: the whole set (ipc stored images per class, factor 2) against every real image.
- ``edd``: one outer iteration of EDD's *last* segment, its costliest: the segment's images
  (10 per class at ipc 50) are matched against the real pool, and the regulariser matches
  frozen earlier segments ∪ current against the full real data (a second term per class).
  The filter network and evaluation are not part of an outer iteration and are not timed.

Budgets: full = ipc 50, width 128, 64 real images per class per step, at most 128 decoded
synthetic images per class, 500 real images per class, 2 match steps (IDC's paper values but
for the step count; ``--match-steps`` overrides it). ``--quick`` = ipc 2, width 16, 8 real
images per class per step, 16 real images per class, 1 match step: a smoke test of the same
code paths that finishes in about two minutes.

Each (case, method) runs in a fresh subprocess so its peak resident memory (``VmHWM``, or
``ru_maxrss``) is its own; the real set, the synthetic set with its gradient and momentum, and
the matching graphs of one class chunk are all in it. On CUDA it also reports
``torch.cuda.max_memory_allocated``. ``--class-chunk`` sets ``GradMatchConfig.class_chunk``
(default -1, auto: all classes at once whenever they fit in a fifth of the free memory, so
peak memory grows with the classes up to that bound; a fixed n keeps it flat). Time should grow
linearly in the number of classes: the last line is ``peak_gib_200 X.XX linearity X.XX``, the
largest peak of the 200-class case and (idc + edd time at 200 classes) / (4 × the same at 50
classes); 1.00 is exactly linear.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from exdistill.memory import peak_rss_gib


@dataclass(frozen=True)
class Shape:
    classes: int
    size: int


@dataclass(frozen=True)
class Budget:
    ipc: int
    width: int
    batch_real: int
    real_per_class: int
    match_steps: int
    max_syn_per_class: int = 128
    factor: int = 2


CASES = {
    "cifar10": Shape(10, 32),
    "cifar100": Shape(100, 32),
    "tiny50": Shape(50, 64),
    "tiny100": Shape(100, 64),
    "tiny200": Shape(200, 64),
}
FULL = Budget(ipc=50, width=128, batch_real=64, real_per_class=500, match_steps=2)
QUICK = Budget(ipc=2, width=16, batch_real=8, real_per_class=16, match_steps=1)
METHODS = ("idc", "edd")


# ----------------------------------------------------------------------------- child
def random_dataset(shape: Shape, per_class: int, seed: int = 0):
    """An ``ImageDataset`` of random uint8 images, ``per_class`` per class, built without
    files or copies (val and test are views of the first images)."""
    from exdistill.data.base import ImageDataset, Split

    gen = torch.Generator().manual_seed(seed)
    n = shape.classes * per_class
    images = torch.randint(0, 256, (n, 3, shape.size, shape.size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(shape.classes).repeat_interleave(per_class)
    small = Split(images[: shape.classes * 2 : 2], labels[: shape.classes * 2 : 2])
    return ImageDataset(
        name=f"random-{shape.classes}x{shape.size}",
        train=Split(images, labels),
        val=small,
        test=small,
        class_names=[str(c) for c in range(shape.classes)],
        mean=(0.5, 0.5, 0.5),
        std=(0.29, 0.29, 0.29),
        source="random tensors",
    )


def real_dataset(data_dir: str, shape: Shape, per_class: int):
    """The first ``shape.classes`` classes of Tiny-ImageNet (parquet) at most ``per_class``
    training images each (the first ones, in file order): real pixels, the same shapes."""
    from exdistill.data.base import ImageDataset, Split
    from exdistill.data.load import load_dataset

    full = load_dataset("parquet", data_dir)
    if full.image_size != (shape.size, shape.size) or full.num_classes < shape.classes:
        raise SystemExit(
            f"--tiny-data: {data_dir} holds {full.num_classes} classes of "
            f"{full.image_size[0]}×{full.image_size[1]}; case needs {shape.classes} of "
            f"{shape.size}×{shape.size}"
        )
    pools = full.class_indices("train")[: shape.classes]
    keep = torch.cat([pool[:per_class] for pool in pools])
    train = Split(full.train.images[keep], full.train.labels[keep])
    small = Split(full.val.images[:0], full.val.labels[:0])
    return ImageDataset(
        name=f"tiny-imagenet-{shape.classes}",
        train=train,
        val=small,
        test=small,
        class_names=full.class_names[: shape.classes],
        mean=full.mean,
        std=full.std,
        source=f"{data_dir} (first {shape.classes} classes)",
    )


def one_iteration(
    case: str,
    method: str,
    budget: Budget,
    device: str,
    class_chunk: int = -1,
    tiny_data: str | None = None,
) -> dict:
    """Build the case, run one outer iteration, return its measurements."""
    from exdistill.methods.base import DistillContext
    from exdistill.methods.edd import default_segments
    from exdistill.methods.gradient import GradientMatching, GradMatchConfig
    from exdistill.seeding import generator
    from exdistill.synthetic import SyntheticSet, sample_real

    shape = CASES[case]
    if tiny_data and case.startswith("tiny"):
        dataset = real_dataset(tiny_data, shape, budget.real_per_class)
    else:
        dataset = random_dataset(shape, budget.real_per_class)
    ctx = DistillContext(dataset, budget.ipc, 0, torch.device(device))
    cfg = GradMatchConfig(
        model_options={"width": budget.width},
        iterations=1,
        match_steps=budget.match_steps,
        batch_real=budget.batch_real,
        max_syn_per_class=budget.max_syn_per_class,
        factor=budget.factor,
        checkpoint_every=0,
        class_chunk=class_chunk,
    )
    matcher = GradientMatching(cfg, ctx)
    f2 = budget.factor**2
    frozen, reg_weight, ipc = None, 0.0, budget.ipc
    if method == "edd":
        ipc = default_segments(budget.ipc)[-1]
        earlier = budget.ipc - ipc
        if earlier:
            idx = sample_real(dataset, earlier * f2, generator(0, "frozen"))
            done = SyntheticSet.from_real(dataset, idx, budget.factor)
            frozen, reg_weight = (done.images, done.labels), 0.5
    syn = SyntheticSet.from_real(
        dataset, sample_real(dataset, ipc * f2, generator(0, "init")), budget.factor
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    matcher.distill_segment(
        syn.images,
        syn.labels,
        matcher.full_pool,
        1,
        ipc,
        generator(0, "distill"),
        frozen=frozen,
        reg_weight=reg_weight,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {
        "case": case,
        "method": method,
        "classes": shape.classes,
        "size": shape.size,
        "data": dataset.source,
        "real_per_class": len(dataset.train.labels) // shape.classes,
        "segment_ipc": ipc,
        "frozen_ipc": budget.ipc - ipc,
        "seconds": seconds,
        "seconds_per_step": seconds / budget.match_steps,
        "class_chunk": matcher.last_class_chunk,
        "peak_rss_gib": peak_rss_gib(),
    }
    if device.startswith("cuda"):
        out["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ----------------------------------------------------------------------------- parent
def run_child(case: str, method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", case, method, "--threads", str(args.threads)]
    cmd += ["--device", args.device, "--class-chunk", str(args.class_chunk)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--match-steps", str(args.match_steps)] if args.match_steps else []
    cmd += ["--tiny-data", args.tiny_data] if args.tiny_data else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{case} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def linearity(results: list[dict]) -> float | None:
    """(idc + edd seconds at 200 classes) / (4 × the same at 50); None if either is missing."""
    by = {(r["classes"], r["size"]): 0.0 for r in results}
    for r in results:
        by[(r["classes"], r["size"])] += r["seconds"]
    if (200, 64) not in by or (50, 64) not in by:
        return None
    return by[(200, 64)] / (4 * by[(50, 64)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--class-chunk", type=int, default=-1, help="-1 auto, 0 all, n")
    parser.add_argument("--match-steps", type=int, help="matching steps (default: the budget's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--tiny-data", help="Tiny-ImageNet parquet directory: real images for the tiny* cases"
    )
    parser.add_argument("--child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = QUICK if args.quick else FULL
    if args.match_steps is not None:
        if args.match_steps < 1:
            parser.error("--match-steps: must be ≥ 1")
        budget = replace(budget, match_steps=args.match_steps)
    torch.set_num_threads(args.threads)
    if args.child:
        result = one_iteration(*args.child, budget, args.device, args.class_chunk, args.tiny_data)
        print(json.dumps(result))
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    print(
        f"budget {'quick' if args.quick else 'full'}: {asdict(budget)}, device {args.device}, "
        f"class_chunk {args.class_chunk}, tiny* data {args.tiny_data or 'random tensors'}"
    )
    head = f"{'case':<9} {'method':<6} {'classes':>7} {'s/iter':>8} {'s/class/step':>13}"
    head += f" {'chunk':>6} {'peak GiB':>9} {'real':>5}"
    print(head)
    print("-" * len(head))
    results = []
    for case in cases:
        for method in METHODS:
            r = run_child(case, method, args)
            results.append(r)
            per_class = r["seconds_per_step"] / r["classes"]
            print(
                f"{case:<9} {method:<6} {r['classes']:>7} {r['seconds']:>8.2f} {per_class:>13.4f}"
                f" {r['class_chunk']:>6} {r['peak_rss_gib']:>9.2f} {r['real_per_class']:>5}"
                + (f"  (cuda {r['cuda_peak_gib']:.2f} GiB)" if "cuda_peak_gib" in r else ""),
                flush=True,
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"budget": asdict(budget), "device": args.device, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    peaks = [r["peak_rss_gib"] for r in results if r["classes"] == 200]
    lin = linearity(results)
    print(
        f"peak_gib_200 {max(peaks) if peaks else float('nan'):.2f} "
        f"linearity {lin if lin is not None else float('nan'):.2f}"
    )


if __name__ == "__main__":
    main()

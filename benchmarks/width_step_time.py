"""Time of one ConvNet-3 training step (batch 64, one thread) at width 64 and 32.

    python benchmarks/width_step_time.py [--steps 60]

The evidence behind ``QUICK_WIDTH`` (exdistill.models): the same training loop as evaluation
(``train_classifier`` with the IDC recipe) on random tensors shaped like Fashion-MNIST (1×28×28)
and CIFAR-10 (3×32×32), 500 images, 10 classes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from exdistill.models import build_model
from exdistill.seeding import generator
from exdistill.train import TrainConfig, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = replace(TrainConfig(), epochs=300, max_steps=args.steps)
    for channels, size in ((1, 28), (3, 32)):
        x = torch.randn(500, channels, size, size, generator=generator(0, "x"))
        y = torch.arange(500) % 10
        for width in (64, 32):
            net = build_model(
                "convnet", channels, 10, (size, size), generator=generator(0, "init"), width=width
            )
            # Warm-up (the first run also compiles models.kernels' fused layers: seconds).
            train_classifier(net, x, y, replace(cfg, max_steps=3), generator(0, "warm"))
            start = time.perf_counter()
            train_classifier(net, x, y, cfg, generator(0, "train"))
            ms = 1000 * (time.perf_counter() - start) / args.steps
            print(f"{channels}×{size}×{size} width {width}: {ms:.1f} ms per step")


if __name__ == "__main__":
    main()

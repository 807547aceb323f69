"""THE training loop: evaluation networks, IDC's θ updates, EDD's filter networks, experts.

``Trainer.step`` is one SGD step on a mini-batch (augmentation, optional CutMix, step-wise LR
schedule); ``train_classifier`` is the epoch loop around it. Everything that trains a classifier
in exdistill goes through these two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exdistill.augment import Augment, cutmix
from exdistill.config import require
from exdistill.progress import Progress, or_null


@dataclass
class TrainConfig:
    """How to train a classifier. Defaults: the IDC evaluation recipe (DESIGN.md §2)."""

    epochs: int = 1000
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # fractions of training where lr *= gamma
    gamma: float = 0.2
    augment: str = "color_crop_flip_scale_rotate"  # "" for none; applied per sample
    augment_mode: str = "idc"  # how the ops combine: all | single (DSA) | idc (augment.py)
    cutmix_prob: float = 0.5
    cutmix_beta: float = 1.0
    max_steps: int = 0  # > 0: cap on total SGD steps (CPU budgets on large training sets)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        require(self.epochs >= 1, f"train.epochs: must be ≥ 1, got {self.epochs}")
        require(self.batch_size >= 1, f"train.batch_size: must be ≥ 1, got {self.batch_size}")
        require(self.lr > 0, f"train.lr: must be > 0, got {self.lr}")
        require(0 <= self.momentum < 1, f"train.momentum: must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"train.weight_decay: must be ≥ 0, got {self.weight_decay}")
        require(
            all(0 < m < 1 for m in self.milestones),
            f"train.milestones: fractions of training in (0, 1), got {self.milestones}",
        )
        require(self.gamma > 0, f"train.gamma: must be > 0, got {self.gamma}")
        require(
            0 <= self.cutmix_prob <= 1,
            f"train.cutmix_prob: must be in [0, 1], got {self.cutmix_prob}",
        )
        require(self.cutmix_beta > 0, f"train.cutmix_beta: must be > 0, got {self.cutmix_beta}")
        require(self.max_steps >= 0, f"train.max_steps: must be ≥ 0, got {self.max_steps}")

    def total_steps(self, num_images: int) -> int:
        steps = self.epochs * math.ceil(num_images / self.batch_size)
        return min(steps, self.max_steps) if self.max_steps > 0 else steps


class Trainer:
    """SGD with momentum, weight decay and a step schedule, over ``total_steps`` steps.

    Example:
        >>> trainer = Trainer(model, TrainConfig(), total_steps=100, generator=g)
        >>> loss = trainer.step(x, y)
    """

    def __init__(
        self, model: nn.Module, cfg: TrainConfig, total_steps: int, generator: torch.Generator
    ) -> None:
        cfg.validate()
        self.model, self.cfg, self.generator = model, cfg, generator
        self.total_steps = max(1, total_steps)
        self.augment = Augment(cfg.augment, mode=cfg.augment_mode) if cfg.augment else None
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.steps_done = 0

    def lr_at(self, step: int) -> float:
        passed = sum(step >= round(m * self.total_steps) for m in self.cfg.milestones)
        return self.cfg.lr * self.cfg.gamma**passed

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One update on a mini-batch of normalised images ``(B, C, H, W)``; returns the loss,
        detached and on the device (no host sync: call ``float`` on it only when needed)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.steps_done)
        self.model.train()
        if self.augment is not None:
            images = self.augment(images, self.generator, per_sample=True)
        loss = self._loss(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        return loss.detach()

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.cfg.cutmix_prob > 0:
            images, y_a, y_b, lam = cutmix(
                images, labels, self.generator, self.cfg.cutmix_beta, self.cfg.cutmix_prob
            )
            logits = self.model(images)
            if lam < 1.0:
                return lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
            return F.cross_entropy(logits, y_a)
        return F.cross_entropy(self.model(images), labels)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: Progress | None = None,
    on_epoch: Callable[[int, Trainer], bool | None] | None = None,
    trainer: Trainer | None = None,
) -> nn.Module:
    """Train ``model`` on normalised ``images (N, C, H, W)`` / ``labels (N,)`` in place.

    ``on_epoch(epochs_done, trainer)`` runs after every pass over the data: expert
    trajectories (MTT, ``experts.py``) snapshot the parameters there; returning True stops the
    training there (early stopping on validation, ``evaluation.train_and_test``). ``trainer``
    continues a ``Trainer`` of ``model`` that has already taken whole epochs of steps (a
    resumed expert, its optimiser state and ``generator`` restored by the caller) instead of
    starting afresh.
    """
    n = int(labels.shape[0])
    total = cfg.total_steps(n)
    trainer = trainer if trainer is not None else Trainer(model, cfg, total, generator)
    epoch = trainer.steps_done // max(1, math.ceil(n / cfg.batch_size))
    progress = or_null(progress)
    device = next(model.parameters()).device
    while trainer.steps_done < total:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            if trainer.steps_done >= total:
                break
            batch = order[start : start + cfg.batch_size]
            trainer.step(images[batch].to(device), labels[batch].to(device))
            progress.update(1)
        epoch += 1
        if on_epoch is not None and on_epoch(epoch, trainer):
            break
    return model


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits ``(N, classes)`` for normalised images, in eval mode, without augmentation."""
    model.eval()
    device = next(model.parameters()).device
    outs = [
        model(images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return float((predict(model, images).argmax(1) == labels.cpu()).float().mean())

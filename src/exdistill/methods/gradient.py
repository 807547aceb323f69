"""DC, DSA and IDC: one gradient-matching distiller, three registered configurations.

Each outer iteration draws a fresh network θ; then ``match_steps`` times: one update of the
synthetic images that lowers the per-class gradient distance (``matching.py``), followed by
``net_steps`` updates of θ — on real mini-batches (IDC) or on the synthetic set (DC/DSA).

| method | factor | θ trained on | augmentation | distance, layers | lr_img |
|---|---|---|---|---|---|
| dc  | 1 | synthetic | none | dc, all | 0.1 |
| dsa | 1 | synthetic | siamese DSA | dc, all | 0.1 |
| idc | 2 | real (+CutMix) | siamese DSA | l1, conv weights | 5e-3 × ipc/10 |

``GradientMatching.distill_segment`` is what EDD calls: it distills a block of stored images
against a pool of real indices per class, optionally adding ``λ·D(S_frozen ∪ S, R)``.

Checkpoints: every ``checkpoint_every`` outer iterations (and after the last) a ``SegmentState``
goes to the ``save`` callback; passing it back as ``resume`` continues bitwise, because θ is
drawn afresh each outer iteration from the one generator whose state the checkpoint holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch

from exdistill.augment import Augment
from exdistill.checkpoint import Checkpoint, Checkpointer
from exdistill.config import require
from exdistill.errors import DataError, NumericalError
from exdistill.methods.base import METHODS, DistillContext, DistillResult, MethodSpec
from exdistill.methods.matching import DISTANCES, LAYERS, ClassBatch, match_and_backward
from exdistill.models import build_model
from exdistill.progress import or_null
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet, check_factor, decode, sample_real
from exdistill.train import TrainConfig, Trainer

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass
class GradMatchConfig:
    """Gradient matching. Defaults: IDC on CIFAR-10 (DESIGN.md §1)."""

    model: str = "convnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    factor: int = 2  # multi-formation: each stored image decodes into factor² images
    init: Literal["real", "noise"] = "real"
    iterations: int = 2000  # outer iterations, a fresh θ each
    match_steps: int = 100  # image updates per θ
    net_source: Literal["real", "syn"] = "real"  # what θ trains on between matches
    net_steps: int = 1  # real: SGD steps per match step; syn: epochs over S per θ phase
    batch_real: int = 64  # real images per class per matching step
    max_syn_per_class: int = 128  # decoded synthetic images per class per step (IDC)
    lr_img: float = 5e-3
    lr_img_per_ipc: bool = True  # lr_img × ipc / 10 (IDC's scaling)
    momentum_img: float = 0.5
    distance: str = "l1"
    layers: str = "conv"
    augment: str = DSA_STRATEGY  # siamese augmentation of matched batches; "" for none
    augment_mode: str = "idc"  # all | single (DSA: one op per draw) | idc (augment.py)
    net: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=1,
            batch_size=128,
            milestones=(),
            augment="color_crop",
            augment_mode="all",
            cutmix_prob=0.5,
        )
    )
    class_chunk: int = 0  # classes per backward pass; 0 = all at once
    clamp: bool = True  # clamp stored images to the valid pixel range each outer iteration
    checkpoint_every: int = 10  # outer iterations between checkpoints (and the last); 0: none

    def validate(self) -> None:
        require(self.factor >= 1, "factor: must be ≥ 1")
        require(self.iterations >= 1, "iterations: must be ≥ 1")
        require(self.match_steps >= 1, "match_steps: must be ≥ 1")
        require(self.net_steps >= 0, "net_steps: must be ≥ 0")
        require(self.batch_real >= 1, "batch_real: must be ≥ 1")
        require(self.max_syn_per_class >= 1, "max_syn_per_class: must be ≥ 1")
        require(self.lr_img > 0, "lr_img: must be > 0")
        require(self.class_chunk >= 0, "class_chunk: must be ≥ 0")
        require(self.checkpoint_every >= 0, "checkpoint_every: must be ≥ 0")
        DISTANCES.get(self.distance)
        LAYERS.get(self.layers)
        if self.augment:
            Augment(self.augment, mode=self.augment_mode)


@dataclass
class SegmentState:
    """A segment at an outer-iteration boundary: all ``distill_segment`` needs to continue.

    θ, its optimiser and every batch are drawn afresh from ``gen`` each outer iteration, so the
    images, the image optimiser's momentum and the generator state are the whole state.

    Shape: images ``(M, C, H, W)``; momentum like images (``None`` without momentum); rng the
    CPU generator state, a uint8 vector (``torch.Generator.get_state()``).
    """

    iteration: int  # outer iterations done
    images: torch.Tensor
    rng: torch.Tensor
    momentum: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"syn.images": self.images, "syn.rng": self.rng}
        if self.momentum is not None:
            out["syn.momentum"] = self.momentum
        return out

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> SegmentState | None:
        """The segment state in ``ckpt``, or ``None`` if it was saved between segments."""
        t = ckpt.tensors
        if "syn.images" not in t:
            return None
        iteration = ckpt.meta.get("iteration")
        momentum = t.get("syn.momentum")
        if (
            "syn.rng" not in t
            or t["syn.rng"].dtype != torch.uint8
            or not isinstance(iteration, int)
            or iteration < 0
            or (momentum is not None and momentum.shape != t["syn.images"].shape)
        ):
            raise DataError("checkpoint: inconsistent segment state (syn.* tensors, iteration)")
        return cls(iteration, t["syn.images"], t["syn.rng"], momentum)


class GradientMatching:
    """Distills stored images by gradient matching; one instance per run."""

    def __init__(self, cfg: GradMatchConfig, ctx: DistillContext) -> None:
        cfg.validate()
        check_factor(cfg.factor, ctx.dataset.image_size)
        self.cfg, self.ctx = cfg, ctx
        self.dataset = ctx.dataset
        self.device = ctx.device
        self.distance = DISTANCES.get(cfg.distance)
        self.augment = Augment(cfg.augment, mode=cfg.augment_mode) if cfg.augment else None
        # Real data stays uint8 on the device and is normalised per batch (bounded memory).
        self.real = self.dataset.train.images.to(self.device)
        self.real_labels = self.dataset.train.labels.to(self.device)
        self.full_pool = self.dataset.class_indices("train")
        low, high = self.dataset.valid_range()
        self.low, self.high = low.to(self.device), high.to(self.device)

    # ------------------------------------------------------------------ helpers
    def real_batch(self, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        take = pool[torch.randperm(len(pool), generator=gen)[: self.cfg.batch_real]]
        return self.dataset.normalize(self.real[take.to(self.device)])

    def _syn_sample(self, decoded: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if decoded.shape[0] <= self.cfg.max_syn_per_class:
            return decoded
        keep = torch.randperm(decoded.shape[0], generator=gen)[: self.cfg.max_syn_per_class]
        return decoded[keep.to(decoded.device)]

    def new_network(self, gen: torch.Generator) -> torch.nn.Module:
        net = build_model(
            self.cfg.model,
            self.dataset.channels,
            self.dataset.num_classes,
            self.dataset.image_size,
            generator=gen,
            **self.cfg.model_options,
        )
        return net.to(self.device).train()

    def update_network(
        self,
        trainer: Trainer,
        syn_images: torch.Tensor,
        syn_labels: torch.Tensor,
        gen: torch.Generator,
        frozen: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """θ's own training between matches: real mini-batches (IDC) or epochs over S (DC),
        where S includes the ``frozen`` earlier segments (EDD)."""
        cfg = self.cfg
        if cfg.net_source == "real":
            n = self.real.shape[0]
            for _ in range(cfg.net_steps):
                idx = torch.randperm(n, generator=gen)[: cfg.net.batch_size].to(self.device)
                trainer.step(self.dataset.normalize(self.real[idx]), self.real_labels[idx])
            return
        if frozen is not None:
            syn_images = torch.cat([frozen[0].to(syn_images), syn_images.detach()])
            syn_labels = torch.cat([frozen[1].to(syn_labels), syn_labels])
        images = decode(syn_images.detach(), cfg.factor)
        labels = syn_labels.repeat_interleave(cfg.factor**2)
        for _ in range(cfg.net_steps):
            order = torch.randperm(images.shape[0], generator=gen).to(self.device)
            for start in range(0, images.shape[0], cfg.net.batch_size):
                batch = order[start : start + cfg.net.batch_size]
                trainer.step(images[batch], labels[batch])

    # ------------------------------------------------------------------ distillation
    def distill_segment(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        pools: list[torch.Tensor],
        iterations: int,
        ipc: int,
        gen: torch.Generator,
        frozen: tuple[torch.Tensor, torch.Tensor] | None = None,
        reg_weight: float = 0.0,
        segment: int = 0,
        resume: SegmentState | None = None,
        save: Callable[[SegmentState], None] | None = None,
    ) -> torch.Tensor:
        """Distill stored ``images (M, C, H, W)`` with ``labels (M,)`` against ``pools[c]``
        (train indices per class); returns the distilled images (a new tensor).

        With ``frozen=(images, labels)`` of earlier segments and ``reg_weight`` λ > 0, each step
        also matches the union frozen ∪ current against the full real data with weight λ.
        ``ipc`` is the per-class count of ``images``, used for the image learning rate.

        ``resume`` (from a checkpoint) continues after its outer iteration instead of starting
        from ``images``; ``save`` receives a ``SegmentState`` every ``checkpoint_every`` outer
        iterations and after the last.
        """
        cfg, progress = self.cfg, or_null(self.ctx.progress)
        if resume is not None and resume.images.shape != images.shape:
            raise DataError(
                f"checkpoint: images {tuple(resume.images.shape)} do not match the segment's "
                f"{tuple(images.shape)}"
            )
        start = images if resume is None else resume.images
        syn = start.detach().clone().to(self.device).requires_grad_(True)
        labels = labels.to(self.device)
        lr = cfg.lr_img * (ipc / 10 if cfg.lr_img_per_ipc else 1.0)
        optimizer = torch.optim.SGD([syn], lr=lr, momentum=cfg.momentum_img)
        if resume is not None:
            gen.set_state(resume.rng)
            if resume.momentum is not None:
                optimizer.state[syn]["momentum_buffer"] = resume.momentum.to(syn).clone()
            progress.update(min(resume.iteration, iterations) * cfg.match_steps)
        classes = list(range(self.dataset.num_classes))
        members = [torch.nonzero(labels == c).flatten() for c in classes]
        frozen_dec = None
        if frozen is not None and reg_weight > 0:
            f_img, f_lab = frozen[0].to(self.device).detach(), frozen[1].to(self.device)
            frozen_dec = [decode(f_img[f_lab == c], cfg.factor) for c in classes]

        def make_batches(chunk):
            batches = []
            for c in chunk:
                decoded = decode(syn[members[c]], cfg.factor)
                batches.append(
                    ClassBatch(c, self.real_batch(pools[c], gen), self._syn_sample(decoded, gen))
                )
                if frozen_dec is not None:
                    union = torch.cat([frozen_dec[c], decoded])
                    batches.append(
                        ClassBatch(
                            c,
                            self.real_batch(self.full_pool[c], gen),
                            self._syn_sample(union, gen),
                            reg_weight,
                        )
                    )
            return batches

        for it in range(0 if resume is None else resume.iteration, iterations):
            net = self.new_network(gen)
            params = LAYERS.get(cfg.layers)(net)
            trainer = Trainer(net, cfg.net, total_steps=1 << 30, generator=gen)
            loss_sum = 0.0
            for step in range(cfg.match_steps):
                optimizer.zero_grad(set_to_none=True)
                loss = match_and_backward(
                    net,
                    params,
                    self.distance,
                    make_batches,
                    classes,
                    self.augment,
                    gen,
                    cfg.class_chunk,
                    inputs=[syn],
                )
                if not math.isfinite(loss):
                    raise NumericalError(
                        f"matching loss is {loss} at segment {segment}, iteration {it}, step {step}"
                    )
                optimizer.step()
                loss_sum += loss
                progress.update(1)
                if step < cfg.match_steps - 1:  # θ trains between matches, not after the last
                    self.update_network(trainer, syn, labels, gen, frozen)
            if cfg.clamp:
                with torch.no_grad():
                    syn.copy_(torch.maximum(torch.minimum(syn, self.high), self.low))
            if not torch.isfinite(syn).all():
                raise NumericalError(
                    f"synthetic images hold NaN/Inf after segment {segment}, iteration {it}"
                )
            self.ctx.log(
                {"segment": segment, "iteration": it, "match_loss": loss_sum / cfg.match_steps}
            )
            progress.set_postfix_str(f"seg {segment} loss {loss_sum / cfg.match_steps:.4g}")
            if save is not None and self.checkpoint_due(it + 1, iterations):
                momentum = optimizer.state[syn].get("momentum_buffer")
                save(SegmentState(it + 1, syn.detach(), gen.get_state(), momentum))
        return syn.detach()

    def checkpoint_due(self, done: int, iterations: int) -> bool:
        every = self.cfg.checkpoint_every
        return every > 0 and (done % every == 0 or done == iterations)


def initial_indices(
    ctx: DistillContext, ipc: int, factor: int, seed_tag: str = "init"
) -> list[torch.Tensor]:
    """Per class, ``ipc·factor²`` real train indices: the initial set (shared by EDD)."""
    return sample_real(ctx.dataset, ipc * factor**2, generator(ctx.seed, seed_tag))


def run_gradient_matching(ctx: DistillContext, cfg: GradMatchConfig) -> DistillResult:
    matcher = GradientMatching(cfg, ctx)
    if cfg.init == "real":
        syn = SyntheticSet.from_real(
            ctx.dataset, initial_indices(ctx, ctx.ipc, cfg.factor), cfg.factor
        )
    else:
        syn = SyntheticSet.from_noise(ctx.dataset, ctx.ipc, generator(ctx.seed, "init"), cfg.factor)
    initial = syn.images.clone()
    resume, save = None, None
    if ctx.checkpoint is not None:
        resume = _resume_state(ctx.checkpoint)
        save = partial(_save_state, ctx.checkpoint)
    syn.images = matcher.distill_segment(
        syn.images,
        syn.labels,
        matcher.full_pool,
        cfg.iterations,
        ctx.ipc,
        generator(ctx.seed, "distill"),
        resume=resume,
        save=save,
    ).cpu()
    return DistillResult(syn, initial)


def _resume_state(ckpt: Checkpointer) -> SegmentState | None:
    loaded = ckpt.load()
    if loaded is None:
        return None
    if loaded.meta.get("method") != "gradient":
        raise DataError(f"{ckpt.directory}: not a gradient-matching checkpoint")
    return SegmentState.from_checkpoint(loaded)


def _save_state(ckpt: Checkpointer, state: SegmentState) -> None:
    ckpt.save(state.tensors(), {"method": "gradient", "segment": 0, "iteration": state.iteration})


def gradient_steps(cfg: GradMatchConfig, ctx: DistillContext) -> int:
    return cfg.iterations * cfg.match_steps


# ----------------------------------------------------------------------------- presets
DC_BASE: dict[str, Any] = {
    "factor": 1,
    "net_source": "syn",
    "distance": "dc",
    "layers": "all",
    "lr_img": 0.1,
    "lr_img_per_ipc": False,
    "augment": "",
    "batch_real": 256,
    "max_syn_per_class": 1 << 20,
    "clamp": False,
    "net": {"batch_size": 256, "augment": "", "cutmix_prob": 0.0, "lr": 0.01},
}
DSA_BASE: dict[str, Any] = {
    **DC_BASE,
    "augment": DSA_STRATEGY,
    "augment_mode": "single",
    "net": {**DC_BASE["net"], "augment": DSA_STRATEGY, "augment_mode": "single"},
}


def _dc_loops(ipc: int) -> dict[str, int]:
    """DC's (outer_loop, inner_loop) by ipc: (1, 1), (10, 50), (50, 10)."""
    if ipc == 1:
        return {"match_steps": 1, "net_steps": 1}
    if ipc <= 10:
        return {"match_steps": 10, "net_steps": 50}
    return {"match_steps": 50, "net_steps": 10}


def _small(dataset: str) -> bool:
    return dataset in ("digits",)


def _dc_family(preset: str, dataset: str, ipc: int, base: dict[str, Any]) -> dict[str, Any]:
    if preset == "paper":
        return {**base, **_dc_loops(ipc), "iterations": 1000}
    # quick: few outer iterations and shorter θ phases, same structure.
    loops = _dc_loops(ipc)
    loops["net_steps"] = max(1, loops["net_steps"] // 5)
    iterations = 40 if _small(dataset) else 20
    return {**base, **loops, "iterations": iterations, "model_options": {"width": 64}}


def dc_presets(preset: str, dataset: str, ipc: int, overrides=None) -> dict[str, Any]:
    return _dc_family(preset, dataset, ipc, DC_BASE)


def dsa_presets(preset: str, dataset: str, ipc: int, overrides=None) -> dict[str, Any]:
    return _dc_family(preset, dataset, ipc, DSA_BASE)


def idc_presets(preset: str, dataset: str, ipc: int, overrides=None) -> dict[str, Any]:
    if preset == "paper":
        return {
            "iterations": 2000,
            "match_steps": 100,
            "net_steps": 1,
            # IDC uses mse on ImageNet-scale data, l1 on CIFAR/SVHN/MNIST-scale data.
            "distance": "mse" if dataset == "imagefolder" else "l1",
            "lr_img": 5e-3,
        }
    if _small(dataset):
        # factor 1 on 8×8 digits: 4×4 tiles lose the digit. Evidence (validation accuracy,
        # idc-quick protocol, 2 repeats, ipc 10, 30×10 matching steps, seed 0):
        # factor 2 → 76.1 %, factor 1 → 98.5 % (random subset: 95.2 %).
        return {"iterations": 30, "match_steps": 10, "net_steps": 1, "factor": 1}
    return {"iterations": 20, "match_steps": 10, "net_steps": 1, "model_options": {"width": 64}}


for _name, _presets, _proto, _desc in (
    ("dc", dc_presets, "dc", "Dataset Condensation (gradient matching, Zhao et al. 2021)"),
    ("dsa", dsa_presets, "dsa", "DC with siamese augmentation (Zhao & Bilen 2021)"),
    ("idc", idc_presets, "idc", "Efficient synthetic data with multi-formation (Kim et al. 2022)"),
):
    METHODS.add(
        _name,
        MethodSpec(
            name=_name,
            config_cls=GradMatchConfig,
            run=run_gradient_matching,
            presets=_presets,
            steps=gradient_steps,
            protocol=_proto,
            description=_desc,
            distiller=GradientMatching,
        ),
    )


__all__ = ["GradMatchConfig", "GradientMatching", "SegmentState", "initial_indices"]

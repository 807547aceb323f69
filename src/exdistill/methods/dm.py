"""DM, Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh, untrained network φ (ConvNet by default) and updates the synthetic
images once to lower, summed over classes c,

    || mean φ(A(R_c)) − mean φ(A(S_c)) ||²

where φ is the network's ``embed`` (the features fed to its classifier), R_c a batch of
``batch_real`` real images of class c and A one DSA augmentation draw shared by the real and the
synthetic batch of that class (siamese). φ is never trained: DM matches feature means under
many random embeddings. Official defaults: lr_img 1.0, momentum 0.5, batch_real 256, 20 000
iterations, initialised from real images, DSA strategy in single-op mode, no clamping.

Multi-formation (``factor`` > 1, as in IDC) decodes each stored image into factor² images before
the embedding; every decoded image of a class enters its mean.

``DistributionMatching`` is a ``SegmentDistiller`` (``segment.py``): one round of the shared
segment loop is one image update, and EDD wraps it as it wraps gradient matching. Its regulariser
``λ·D(S_frozen ∪ S, R)`` is the same mean-embedding distance, computed on the union of the frozen
earlier segments and the current one against a batch of the *full* real data of each class. φ
and every batch are drawn afresh from the one generator whose state the loop's checkpoints hold,
so a resumed run continues bitwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from exdistill.augment import DSA_STRATEGY, Augment, AugmentParams
from exdistill.config import require
from exdistill.methods.base import METHODS, DistillContext, DistillResult, MethodSpec
from exdistill.methods.matching import ClassBatch, chunks
from exdistill.methods.segment import Loop, Round, SegmentJob, SegmentLoop, distill_whole_set
from exdistill.models import build_model, quick_model_options
from exdistill.progress import or_null
from exdistill.synthetic import check_factor, decode
from exdistill.transfer import to_device


@dataclass
class DMConfig:
    """Distribution matching. Defaults: the DM paper's (CIFAR-10, ConvNet-3)."""

    model: str = "convnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    factor: int = 1  # multi-formation: each stored image decodes into factor² images
    init: Literal["real", "noise"] = "real"
    iterations: int = 20000  # rounds of the segment loop (the budget unit): one image update each
    batch_real: int = 256  # real images per class per iteration
    lr_img: float = 1.0
    momentum_img: float = 0.5
    augment: str = DSA_STRATEGY  # siamese augmentation of each class's batches; "" for none
    augment_mode: str = "single"  # DM's official code: one DSA op per draw (aug_mode 'S')
    class_chunk: int = 0  # classes per backward pass; 0 = all at once
    clamp: bool = False  # clamp stored images to the valid pixel range (DM's code does not)
    checkpoint_every: int = 100  # iterations between checkpoints (and the last); 0: none
    log_every: int = 10  # iterations between metrics records (and the last)

    def validate(self) -> None:
        require(self.factor >= 1, "factor: must be ≥ 1")
        require(self.iterations >= 1, "iterations: must be ≥ 1")
        require(self.batch_real >= 1, "batch_real: must be ≥ 1")
        require(self.lr_img > 0, "lr_img: must be > 0")
        require(0 <= self.momentum_img < 1, "momentum_img: must be in [0, 1)")
        require(self.class_chunk >= 0, "class_chunk: must be ≥ 0")
        require(self.checkpoint_every >= 0, "checkpoint_every: must be ≥ 0")
        require(self.log_every >= 1, "log_every: must be ≥ 1")
        if self.augment:
            Augment(self.augment, mode=self.augment_mode)


# ----------------------------------------------------------------------------- the distance
def embedding_distance(
    model: nn.Module,
    real: torch.Tensor,
    syn: torch.Tensor,
    augment: Augment | None,
    generator: torch.Generator,
    aug: AugmentParams | None = None,
) -> torch.Tensor:
    """``‖mean φ(A(real)) − mean φ(A(syn))‖²`` with one augmentation draw A shared by both
    (``aug`` when drawn beforehand, else drawn here from ``generator``).

    Only ``syn`` carries a graph; the real embedding is computed without one (it is a constant).

    Shape: real ``(B_real, C, H, W)``, syn ``(B_syn, C, H, W)`` → a scalar.
    """
    if augment is not None:
        if aug is None:
            real, syn = augment.siamese([real, syn], generator)
        else:
            real, syn = augment.apply(real, aug), augment.apply(syn, aug)
    # The means and the distance in fp32 whatever the embedding's precision (bf16 runs).
    with torch.no_grad():
        mean_real = model.embed(real).float().mean(0)  # (D,)
    mean_syn = model.embed(syn).float().mean(0)  # (D,)
    return ((mean_real - mean_syn) ** 2).sum()


def dm_loss_and_backward(
    model: nn.Module,
    make_batches: Callable[[Sequence[int]], list[ClassBatch]],
    classes: Sequence[int],
    augment: Augment | None,
    generator: torch.Generator,
    class_chunk: int = 0,
    inputs: list[torch.Tensor] | None = None,
) -> float:
    """Σ over ``classes`` of ``weight · embedding_distance``, back-propagated chunk by chunk into
    ``inputs`` (their ``.grad`` accumulates), so peak memory is one chunk's activations.
    Returns the total loss value."""
    total = 0.0
    for chunk in chunks(list(classes), class_chunk):
        loss = sum(
            b.weight * embedding_distance(model, b.real, b.syn, augment, generator, b.aug)
            for b in make_batches(chunk)
        )
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward(inputs=inputs)
        total += float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return total


# ----------------------------------------------------------------------------- the distiller
class DistributionMatching(SegmentLoop):
    """Distills stored images by distribution matching; one instance per run."""

    can_condition = False  # its embedding networks are random and never trained

    def __init__(self, cfg: DMConfig, ctx: DistillContext) -> None:
        cfg.validate()
        check_factor(cfg.factor, ctx.dataset.image_size)
        self.cfg, self.ctx = cfg, ctx
        self.dataset = ctx.dataset
        self.device = ctx.device
        self.augment = Augment(cfg.augment, mode=cfg.augment_mode) if cfg.augment else None
        # Real data stays uint8 on the device and is normalised per batch (bounded memory).
        self.real = self.dataset.train.images.to(self.device)
        self.full_pool = self.dataset.class_indices("train")
        low, high = self.dataset.valid_range()
        self.low, self.high = low.to(self.device), high.to(self.device)

    def real_batch(self, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.dataset.normalize(self.real[to_device(self.draw_real(pool, gen), self.device)])

    def draw_real(self, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return pool[torch.randperm(len(pool), generator=gen)[: self.cfg.batch_real]]

    def draw_terms(
        self, pools: list[torch.Tensor], regularise: bool, reg_weight: float, gen: torch.Generator
    ) -> list[tuple[int, torch.Tensor, float, bool, AugmentParams | None]]:
        """Every random number of one iteration, for all classes, before any is computed: per
        class the real indices (then the regulariser's, from the full data), then one siamese
        augmentation per term. So the chunk size never changes the result.

        Returns ``(class, real indices, weight, is_regulariser_term, augmentation)`` per term.
        """
        terms = []
        for c in range(self.dataset.num_classes):
            terms.append((c, self.draw_real(pools[c], gen), 1.0, False))
            if regularise:
                terms.append((c, self.draw_real(self.full_pool[c], gen), reg_weight, True))
        size = self.dataset.image_size
        return [
            (
                *t,
                None
                if self.augment is None
                else self.augment.sample(1, size, gen, False, self.device),
            )
            for t in terms
        ]

    def new_network(self, gen: torch.Generator) -> nn.Module:
        """A freshly initialised embedding network; its weights never need gradients."""
        net = build_model(
            self.cfg.model,
            self.dataset.channels,
            self.dataset.num_classes,
            self.dataset.image_size,
            generator=gen,
            **self.cfg.model_options,
        )
        net.requires_grad_(False)
        return net.to(self.device).train()

    # ------------------------------------------------------------------ the segment loop
    def loop(self, job: SegmentJob) -> Loop:
        cfg = self.cfg
        return Loop(
            lr=cfg.lr_img,  # DM's learning rate does not depend on ipc
            momentum=cfg.momentum_img,
            units=1,
            clamp=cfg.clamp,
            checkpoint_every=cfg.checkpoint_every,
            log_every=cfg.log_every,
            loss_name="DM",
        )

    def begin(
        self,
        job: SegmentJob,
        syn: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        labels: torch.Tensor,
        gen: torch.Generator,
    ) -> Round:
        """One round = one image update against a fresh random embedding network; with
        ``job.regularised`` it also matches the mean embedding of frozen ∪ current against a
        batch of the full real data of each class, with weight λ (only the current images get
        gradients)."""
        cfg, progress = self.cfg, or_null(self.ctx.progress)
        classes = list(range(self.dataset.num_classes))
        members = [torch.nonzero(labels == c).flatten() for c in classes]
        frozen_stored = None
        if job.regularised:  # kept stored, decoded per chunk (memory)
            f_img, f_lab = job.frozen[0].to(self.device).detach(), job.frozen[1].to(self.device)
            frozen_stored = [f_img[f_lab == c] for c in classes]

        terms: list = []

        def make_batches(chunk: Sequence[int]) -> list[ClassBatch]:
            batches = []
            for c, idx, weight, union, aug in (t for t in terms if t[0] in chunk):
                decoded = decode(syn[members[c]], cfg.factor)  # (n_c·f², C, H, W)
                if union:
                    images = torch.cat([decode(frozen_stored[c], cfg.factor), decoded])
                else:
                    images = decoded
                real = self.dataset.normalize(self.real[to_device(idx, self.device)])
                batches.append(ClassBatch(c, real, images, weight, aug))
            return batches

        def run_round(it: int) -> list[float]:
            nonlocal terms
            net = self.new_network(gen)
            terms = self.draw_terms(job.pools, frozen_stored is not None, job.reg_weight, gen)
            optimizer.zero_grad(set_to_none=True)
            loss = dm_loss_and_backward(
                net, make_batches, classes, self.augment, gen, cfg.class_chunk, inputs=[syn]
            )
            optimizer.step()
            progress.update(1)
            return [loss]

        return run_round


# ----------------------------------------------------------------------------- the method
def run_dm(ctx: DistillContext, cfg: DMConfig) -> DistillResult:
    return distill_whole_set(ctx, cfg, DistributionMatching(cfg, ctx), "dm")


def dm_steps(cfg: DMConfig, ctx: DistillContext) -> int:
    return cfg.iterations  # one progress unit per image update


# ----------------------------------------------------------------------------- presets
def dm_presets(
    preset: str, dataset: str, ipc: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``paper``: the published defaults (the config's). ``quick``: a 2-core CPU budget."""
    if preset == "paper":
        return {}
    return {**QUICK, "model_options": dict(QUICK["model_options"])}


# Quick presets. batch_real 64, not 256: 256 costs 2.3× (digits, where it means the whole
# class of ~121) to 5× (28/32 px) per iteration, and on digits it would also stop EDD's filter
# from dropping anything (min_per_class defaults to batch_real). Evidence, 1 thread on the
# shared 2-core machine under a background job, ipc 10, seconds per iteration for batch_real
# 64 / 128 / 256: digits (width 128) 0.09 / – / 0.16; Fashion-MNIST shape (width 64) 0.58 /
# 1.35 / 3.44; CIFAR-10 shape (width 64) 0.74 / 1.53 / 3.16. So 500 iterations ≈ 45–65 s on
# digits and ≈ 5–6 min on Fashion-MNIST / CIFAR-10. Quality on digits, ipc 10, seed 0, val
# accuracy (dsa-quick, 3 repeats): initial real set 94.6 % → 98.5 % after 500 iterations.
QUICK: dict[str, Any] = {
    "iterations": 500,
    "batch_real": 64,
    "model_options": quick_model_options(),  # dm_presets and merge copy it
}


METHODS.add(
    "dm",
    MethodSpec(
        name="dm",
        config_cls=DMConfig,
        run=run_dm,
        presets=dm_presets,
        steps=dm_steps,
        protocol="dsa",  # DM evaluates with DSA augmentation, 1000 epochs (DC recipe)
        description="Distribution Matching (mean embeddings, Zhao & Bilen 2023)",
        distiller=DistributionMatching,
        smoke={"iterations": 4, "model_options": {"width": 8}},
    ),
)


__all__ = ["DMConfig", "DistributionMatching", "dm_loss_and_backward", "embedding_distance"]

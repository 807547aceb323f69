"""The segment loop every optimising method shares, and the Protocol EDD wraps.

A *segment* is a block of stored synthetic images distilled against a pool of real images per
class. A whole-set run (``dc``, ``dsa``, ``idc``, ``dm``) is one segment over the full data; EDD
runs several, each against its filtered pool. The loop here owns everything that is not a
method's own arithmetic:

    start or resume (images, image momentum, generator state)
    for each round:                         a round = the method's unit of work
        losses ← distiller's round          (draws, matching, image updates, θ updates)
        NaN guard on the losses, clamp, NaN guard on the images
        log the round's mean loss, progress postfix
        checkpoint when due
    return the distilled images

What a round is differs by method and is the distiller's to say: an outer iteration with a fresh
θ and ``match_steps`` image updates (gradient matching), one image update against a fresh random
embedding network (DM). ``Loop.units`` is how many progress units (image updates) a round
holds (the round ticks them as it goes, so a slow round still moves the bar); the budget unit
every method and EDD counts in is the round (``iterations``).

Checkpoints: the loop saves a ``SegmentState`` at round boundaries; handing it back as
``resume`` continues bitwise, because everything a round draws comes from the one generator
whose state the checkpoint holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch

from exdistill.checkpoint import Checkpoint, Checkpointer, checkpoint_due
from exdistill.errors import DataError, NumericalError
from exdistill.methods.base import DistillContext, DistillResult
from exdistill.progress import or_null
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet, sample_real


@dataclass
class SegmentState:
    """A segment at a round boundary: all the loop needs to continue.

    Networks and batches are drawn afresh from ``rng`` each round, so the images, the image
    optimiser's momentum and the generator state are the whole state.

    Shape: images ``(M, C, H, W)``; momentum like images (``None`` without momentum); rng the
    CPU generator state, a uint8 vector (``torch.Generator.get_state()``).
    """

    iteration: int  # rounds done
    images: torch.Tensor
    rng: torch.Tensor
    momentum: torch.Tensor | None = None
    # A distiller's own learned state besides the images (MTT: its step size and momentum),
    # under keys that start with the method's tag (``mtt.step_size``).
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"syn.images": self.images, "syn.rng": self.rng, **self.extra}
        if self.momentum is not None:
            out["syn.momentum"] = self.momentum
        return out

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, extra_prefix: str = "") -> SegmentState | None:
        """The segment state in ``ckpt``, or ``None`` if it was saved between segments;
        tensors whose keys start with ``extra_prefix`` (when given) go to ``extra``."""
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
        extra = {k: v for k, v in t.items() if extra_prefix and k.startswith(extra_prefix)}
        return cls(iteration, t["syn.images"], t["syn.rng"], momentum, extra)


@dataclass(frozen=True)
class SegmentJob:
    """One segment to distill: the real pools and what EDD adds for segments after the first.

    Shape: ``pools[c]`` train indices of class c; ``frozen`` the stored images ``(F, C, H, W)``
    and labels ``(F,)`` of the earlier, frozen segments.
    """

    pools: list[torch.Tensor]
    ipc: int  # stored images per class the image learning rate is scaled by
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None
    reg_weight: float = 0.0  # λ of D(S_frozen ∪ S, R), the forgetting regulariser
    segment: int = 0  # index in EDD's segment list (0 for a whole-set run); names log records
    # Epochs a freshly drawn matching network first trains on the decoded frozen segments
    # (PDD's conditioning), at most condition_max_steps SGD steps (0: no cap); 0 epochs = off.
    # Only distillers whose networks train support it.
    condition_epochs: int = 0
    condition_max_steps: int = 0

    @property
    def regularised(self) -> bool:
        return self.frozen is not None and self.reg_weight > 0


@dataclass(frozen=True)
class Loop:
    """A distiller's answers to the loop's questions."""

    lr: float  # image learning rate for this segment
    momentum: float  # image SGD momentum
    units: int  # progress units (image updates) in one round; the round ticks them itself
    clamp: bool  # clamp stored images to the valid pixel range after every round
    checkpoint_every: int  # rounds between checkpoints (and after the last); 0: none
    log_every: int = 1  # rounds between log records (and the last)
    loss_name: str = "matching"  # names the loss in the NaN message


# A round: given its index, run it (draws, image updates) and return each update's loss.
Round = Callable[[int], Sequence[float]]


class SegmentDistiller(Protocol):
    """What the segment loop drives and EDD wraps.

    ``begin`` prepares one segment (per-class members, frozen images, memory plan) and returns
    its round; ``loop`` says how the shared loop treats it; ``distill_segment`` is the loop
    itself (``run_segment`` bound to the distiller), the one entry point EDD calls.

    ``extra_state`` (checkpointed with the images), ``restore_extra`` (called on resume, before
    ``begin``) and ``log_extra`` (merged into each round's log record) carry what a distiller
    learns besides the images (MTT's step size); ``SegmentLoop`` gives the empty defaults.
    """

    ctx: DistillContext
    device: torch.device
    full_pool: list[torch.Tensor]
    can_condition: bool  # its matching networks train, so PDD's conditioning applies
    low: torch.Tensor  # valid pixel range per channel, shape (C, 1, 1)
    high: torch.Tensor

    def extra_state(self) -> dict[str, torch.Tensor]: ...

    def restore_extra(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def log_extra(self) -> dict[str, Any]: ...

    def loop(self, job: SegmentJob) -> Loop: ...

    def begin(
        self,
        job: SegmentJob,
        syn: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        labels: torch.Tensor,
        gen: torch.Generator,
    ) -> Round: ...

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
        condition_epochs: int = 0,
        condition_max_steps: int = 0,
    ) -> torch.Tensor: ...


def start_segment(
    images: torch.Tensor,
    resume: SegmentState | None,
    device: torch.device,
    lr: float,
    momentum: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.optim.SGD]:
    """The trainable stored images and their SGD optimiser: from ``images``, or from
    ``resume`` (images, momentum and the generator's state restored)."""
    if resume is not None and resume.images.shape != images.shape:
        raise DataError(
            f"checkpoint: images {tuple(resume.images.shape)} do not match the segment's "
            f"{tuple(images.shape)}"
        )
    start = images if resume is None else resume.images
    syn = start.detach().clone().to(device).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=lr, momentum=momentum)
    if resume is not None:
        gen.set_state(resume.rng)
        if resume.momentum is not None:
            optimizer.state[syn]["momentum_buffer"] = resume.momentum.to(syn).clone()
    return syn, optimizer


class SegmentLoop:
    """Mixin giving a distiller the shared ``distill_segment`` (its ``begin`` and ``loop``
    supply the rest) and no state besides the images."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def restore_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def log_extra(self) -> dict[str, Any]:
        return {}

    def distill_segment(
        self: Any,
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
        condition_epochs: int = 0,
        condition_max_steps: int = 0,
    ) -> torch.Tensor:
        """Distill stored ``images (M, C, H, W)`` with ``labels (M,)`` against ``pools[c]``
        (train indices per class) for ``iterations`` rounds; returns a new tensor.

        ``ipc`` is the per-class count the image learning rate is scaled by (where the method
        scales it). With ``frozen=(images, labels)`` of earlier segments and ``reg_weight``
        λ > 0, every step also matches frozen ∪ current against the full real data with weight
        λ; ``condition_epochs`` > 0 first trains each fresh matching network on the frozen
        images (at most ``condition_max_steps`` steps when > 0). ``resume`` (from a checkpoint)
        continues after its round; ``save`` receives a ``SegmentState`` every
        ``checkpoint_every`` rounds and after the last.
        """
        job = SegmentJob(
            pools, ipc, frozen, reg_weight, segment, condition_epochs, condition_max_steps
        )
        return run_segment(self, images, labels, job, iterations, gen, resume, save)


def run_segment(
    distiller: SegmentDistiller,
    images: torch.Tensor,
    labels: torch.Tensor,
    job: SegmentJob,
    iterations: int,
    gen: torch.Generator,
    resume: SegmentState | None = None,
    save: Callable[[SegmentState], None] | None = None,
) -> torch.Tensor:
    """The loop of the module docstring; see ``SegmentLoop.distill_segment``."""
    loop = distiller.loop(job)
    progress = or_null(distiller.ctx.progress)
    syn, optimizer = start_segment(images, resume, distiller.device, loop.lr, loop.momentum, gen)
    first = 0 if resume is None else resume.iteration
    if resume is not None:
        progress.update(min(resume.iteration, iterations) * loop.units)
    if resume is not None:
        distiller.restore_extra(resume.extra)  # a distiller with extra state checks it is there
    run_round = distiller.begin(job, syn, optimizer, labels.to(distiller.device), gen)
    for it in range(first, iterations):
        losses = run_round(it)
        for step, value in enumerate(losses):
            if not math.isfinite(value):
                where = f", step {step}" if loop.units > 1 else ""
                raise NumericalError(
                    f"{loop.loss_name} loss is {value} at segment {job.segment}, "
                    f"iteration {it}{where}"
                )
        if loop.clamp:
            with torch.no_grad():
                syn.copy_(torch.maximum(torch.minimum(syn, distiller.high), distiller.low))
        if not torch.isfinite(syn).all():
            raise NumericalError(
                f"synthetic images hold NaN/Inf after segment {job.segment}, iteration {it}"
            )
        done = it + 1
        if done % loop.log_every == 0 or done == iterations:
            total = 0.0
            for value in losses:  # in step order, as a running Python sum (the logged value)
                total += value
            mean = total / len(losses)
            record = {"segment": job.segment, "iteration": it, "match_loss": mean}
            extra = distiller.log_extra()
            distiller.ctx.log({**record, **extra})
            shown = "".join(f" {k} {v:.4g}" for k, v in extra.items() if isinstance(v, float))
            progress.set_postfix_str(f"seg {job.segment} loss {mean:.4g}{shown}")
        if save is not None and checkpoint_due(done, iterations, loop.checkpoint_every):
            momentum = optimizer.state[syn].get("momentum_buffer")
            extra_state = distiller.extra_state()
            save(SegmentState(done, syn.detach(), gen.get_state(), momentum, extra_state))
    return syn.detach()


# ----------------------------------------------------------------------------- whole-set runs
def initial_indices(
    ctx: DistillContext, ipc: int, factor: int, seed_tag: str = "init"
) -> list[torch.Tensor]:
    """Per class, ``ipc·factor²`` real train indices: the initial set (shared by EDD, so that
    EDD and its base start from the same images)."""
    return sample_real(ctx.dataset, ipc * factor**2, generator(ctx.seed, seed_tag))


def initial_set(ctx: DistillContext, init: str, factor: int) -> SyntheticSet:
    """The starting set of a whole-set run: real images (the same draw for every method and
    EDD: equal starts) or noise."""
    if init == "real":
        return SyntheticSet.from_real(ctx.dataset, initial_indices(ctx, ctx.ipc, factor), factor)
    return SyntheticSet.from_noise(ctx.dataset, ctx.ipc, generator(ctx.seed, "init"), factor)


def distill_whole_set(
    ctx: DistillContext, cfg: Any, distiller: SegmentDistiller, tag: str
) -> DistillResult:
    """The whole synthetic set as one segment over the full data: the run of every method whose
    distiller is a ``SegmentDistiller``. ``cfg`` needs ``init``, ``factor`` and ``iterations``;
    checkpoints carry ``tag`` so a run never resumes another method's."""
    syn = initial_set(ctx, cfg.init, getattr(cfg, "factor", 1))
    initial = syn.images.clone()
    resume, save = None, None
    if ctx.checkpoint is not None:
        resume = resume_state(ctx.checkpoint, tag)
        save = partial(save_state, ctx.checkpoint, tag)
    syn.images = distiller.distill_segment(
        syn.images,
        syn.labels,
        distiller.full_pool,
        cfg.iterations,
        ctx.ipc,
        generator(ctx.seed, "distill"),
        resume=resume,
        save=save,
    ).cpu()
    return DistillResult(syn, initial)


def resume_state(ckpt: Checkpointer, tag: str) -> SegmentState | None:
    """The ``SegmentState`` of ``ckpt``'s last checkpoint, which method ``tag`` must have saved."""
    loaded = ckpt.load()
    if loaded is None:
        return None
    if loaded.meta.get("method") != tag:
        raise DataError(f"{ckpt.directory}: not a {tag} checkpoint")
    return SegmentState.from_checkpoint(loaded, extra_prefix=f"{tag}.")


def save_state(ckpt: Checkpointer, tag: str, state: SegmentState) -> None:
    ckpt.save(state.tensors(), {"method": tag, "segment": 0, "iteration": state.iteration})


__all__ = [
    "Loop",
    "Round",
    "SegmentDistiller",
    "SegmentJob",
    "SegmentLoop",
    "SegmentState",
    "distill_whole_set",
    "initial_indices",
    "initial_set",
    "run_segment",
    "start_segment",
]

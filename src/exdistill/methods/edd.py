"""EDD, Exclusive Dataset Distillation: segment-wise distillation on filtered real data.

DESIGN.md §1.1 gives the algorithm; this module is its direct transcription:

    R_1 ← R; S ← ∅
    for k = 1..K:
        S_k ← its share of the base method's initial images (same seed → same union)
        distill S_k with the base against R_k, + λ·D(S_<k ∪ S_k, R) for k > 1
        S ← S ∪ S_k (frozen)
        f_k ← filter network trained from scratch on S; classify R
        forgotten_k ← right under f_{k-1}, wrong under f_k
        R_{k+1} ← misclassified ∪ (correct − a fraction `drop`), ≥ min_per_class per class

Equal budget: segment k gets the base's outer iterations × n_k / ipc (rounded so the total is
exactly the base's). With one segment EDD is the base, image for image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from exdistill.config import merge, require
from exdistill.errors import ConfigError
from exdistill.evaluate import PROTOCOLS
from exdistill.methods.base import METHODS, DistillContext, DistillResult, MethodSpec
from exdistill.methods.filtering import filter_outcome, forgotten, select_pool
from exdistill.methods.gradient import initial_indices
from exdistill.models import build_model
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet
from exdistill.train import TrainConfig, predict, train_classifier


def default_segments(ipc: int) -> tuple[int, ...]:
    """ipc 1 → (1,); 2..10 → two near-equal halves; > 10 → segments of 10 (+ remainder)."""
    if ipc <= 1:
        return (ipc,)
    if ipc <= 10:
        return (ipc - ipc // 2, ipc // 2)
    return (10,) * (ipc // 10) + ((ipc % 10,) if ipc % 10 else ())


@dataclass
class EDDConfig:
    """EDD on top of a base method (whose own config is ``base_config``)."""

    base: str = "idc"
    base_config: dict[str, Any] = field(default_factory=dict)  # overrides of the base config
    segments: tuple[int, ...] = ()  # stored images per class per segment; () = default rule
    segment_ipc: int = 0  # > 0: segments of this size instead
    drop: float = 0.7  # fraction of correctly classified real images dropped
    drop_order: Literal["confident", "random"] = "confident"
    min_per_class: int = 0  # 0: the base's real batch per class
    reg_weight: float = 0.5  # λ, weight of the forgetting regulariser
    init_from: Literal["shared", "filtered"] = "shared"
    filter: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, max_steps=600))
    filter_model: str = "convnet"
    filter_model_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        require(0.0 <= self.drop < 1.0, "drop: must be in [0, 1)")
        require(self.reg_weight >= 0, "reg_weight: must be ≥ 0")
        require(self.min_per_class >= 0, "min_per_class: must be ≥ 0")
        require(self.segment_ipc >= 0, "segment_ipc: must be ≥ 0")
        require(all(n >= 1 for n in self.segments), "segments: every segment needs ≥ 1 image")
        spec = METHODS.get(self.base)
        require(spec.distiller is not None, f"base: EDD cannot wrap '{self.base}'")
        base_config(self)  # unknown or impossible base_config values fail here, before work


def resolve_segments(cfg: EDDConfig, ipc: int) -> tuple[int, ...]:
    if cfg.segments:
        segs = tuple(cfg.segments)
        if sum(segs) != ipc:
            raise ConfigError(
                f"segments: {','.join(map(str, segs))} sum to {sum(segs)}, not ipc {ipc}"
            )
        return segs
    if cfg.segment_ipc:
        n = cfg.segment_ipc
        return (n,) * (ipc // n) + ((ipc % n,) if ipc % n else ())
    return default_segments(ipc)


def split_budget(total: int, segments: tuple[int, ...]) -> list[int]:
    """Largest-remainder split of ``total`` iterations in proportion to segment sizes."""
    ipc = sum(segments)
    exact = [total * n / ipc for n in segments]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(segments)), key=lambda i: shares[i] - exact[i])[
        : total - sum(shares)
    ]:
        shares[i] += 1
    return shares


def base_config(cfg: EDDConfig) -> Any:
    spec = METHODS.get(cfg.base)
    base = merge(spec.config_cls(), cfg.base_config)
    if hasattr(base, "validate"):
        base.validate()
    return base


class FilterNetwork:
    """Trains the filter network on S_≤k and scores the real training set."""

    def __init__(self, cfg: EDDConfig, ctx: DistillContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.real_x, self.real_y = ctx.dataset.normalized("train")
        self.val_x, self.val_y = ctx.dataset.normalized("val")

    def __call__(self, syn: SyntheticSet, k: int):
        ds = self.ctx.dataset
        net = build_model(
            self.cfg.filter_model,
            ds.channels,
            ds.num_classes,
            ds.image_size,
            generator=generator(self.ctx.seed, "filter", k, "init"),
            **self.cfg.filter_model_options,
        ).to(self.ctx.device)
        images, labels = syn.decoded()
        train_classifier(
            net,
            images.to(self.ctx.device),
            labels.to(self.ctx.device),
            self.cfg.filter,
            generator(self.ctx.seed, "filter", k, "train"),
        )
        outcome = filter_outcome(predict(net, self.real_x), self.real_y)
        val_acc = float((predict(net, self.val_x).argmax(1) == self.val_y).float().mean())
        return outcome, float(outcome.correct.float().mean()), val_acc


def run_edd(ctx: DistillContext, cfg: EDDConfig) -> DistillResult:
    cfg.validate()
    base_cfg = base_config(cfg)
    segments = resolve_segments(cfg, ctx.ipc)
    factor = getattr(base_cfg, "factor", 1)
    distiller = METHODS.get(cfg.base).distiller(base_cfg, ctx)
    budgets = split_budget(base_cfg.iterations, segments)
    min_per_class = cfg.min_per_class or base_cfg.batch_real
    filter_net = FilterNetwork(cfg, ctx)
    dataset = ctx.dataset

    # Equal starts: the union of segment initialisations is the base's initial set.
    shared = initial_indices(ctx, ctx.ipc, factor)
    pools = dataset.class_indices("train")
    used: list[torch.Tensor] = [torch.empty(0, dtype=torch.long) for _ in pools]
    done: SyntheticSet | None = None
    initial_all, records, previous = [], [], None
    offset = 0
    for k, n_k in enumerate(segments):
        if cfg.init_from == "shared":
            take = [idx[offset * factor**2 : (offset + n_k) * factor**2] for idx in shared]
        else:
            take = _fresh_indices(pools, used, n_k * factor**2, generator(ctx.seed, "init", k))
        used = [torch.cat([u, t]) for u, t in zip(used, take, strict=True)]
        seg = SyntheticSet.from_real(dataset, take, factor)
        initial_all.append(seg.images.clone())
        frozen = None if done is None else (done.images, done.labels)
        seg.images = distiller.distill_segment(
            seg.images,
            seg.labels,
            pools,
            budgets[k],
            n_k,
            generator(ctx.seed, "distill") if k == 0 else generator(ctx.seed, "distill", k),
            frozen=frozen,
            reg_weight=cfg.reg_weight if k > 0 else 0.0,
            segment=k,
        ).cpu()
        seg.segments = torch.full_like(seg.labels, k)
        done = seg if done is None else _concat(done, seg)
        offset += n_k

        record: dict[str, Any] = {
            "segment": k,
            "ipc": n_k,
            "cumulative_ipc": offset,
            "iterations": budgets[k],
            "real_per_class": [len(p) for p in pools],
        }
        if len(segments) > 1:
            outcome, train_acc, val_acc = filter_net(done, k)
            record.update(
                filter_train_acc=train_acc,
                filter_val_acc=val_acc,
                forgotten=forgotten(previous, outcome),
            )
            previous = outcome
            if k < len(segments) - 1:
                pools = select_pool(
                    dataset.class_indices("train"),
                    outcome,
                    cfg.drop,
                    cfg.drop_order,
                    min_per_class,
                    generator(ctx.seed, "drop", k),
                )
                if ctx.evaluate is not None:
                    record["eval"] = ctx.evaluate(done)
        records.append(record)
        ctx.log({"event": "segment", **record})
    assert done is not None
    return DistillResult(done, torch.cat(initial_all), {"segments": records})


def _fresh_indices(pools, used, count, gen) -> list[torch.Tensor]:
    out = []
    for c, (pool, u) in enumerate(zip(pools, used, strict=True)):
        free = pool[~torch.isin(pool, u)]
        if len(free) < count:
            raise ConfigError(
                f"init_from=filtered: class {c} has {len(free)} unused images in "
                f"its pool, fewer than the {count} needed"
            )
        out.append(free[torch.randperm(len(free), generator=gen)[:count]])
    return out


def _concat(a: SyntheticSet, b: SyntheticSet) -> SyntheticSet:
    """Union of two sets, kept in class-major order (class, then segment)."""
    images, labels = torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels])
    segments = torch.cat([a.segments, b.segments])
    order = torch.argsort(labels * (segments.max() + 1) + segments, stable=True)
    return replace(a, images=images[order], labels=labels[order], segments=segments[order])


def edd_presets(preset: str, dataset: str, ipc: int) -> dict[str, Any]:
    base_name = "idc"
    spec = METHODS.get(base_name)
    out: dict[str, Any] = {"base": base_name, "base_config": spec.presets(preset, dataset, ipc)}
    proto = PROTOCOLS.get(f"{spec.protocol}-quick" if preset == "quick" else spec.protocol)
    filt = {k: v for k, v in vars(proto.train).items()}
    filt.update(epochs=100 if preset == "quick" else 300, max_steps=600 if preset == "quick" else 0)
    out["filter"] = filt
    out["filter_model_options"] = dict(proto.model_options)
    return out


def edd_steps(cfg: EDDConfig, ctx: DistillContext) -> int:
    base = base_config(cfg)
    return METHODS.get(cfg.base).steps(base, ctx)


METHODS.add(
    "edd",
    MethodSpec(
        name="edd",
        config_cls=EDDConfig,
        run=run_edd,
        presets=edd_presets,
        steps=edd_steps,
        protocol="idc",
        description="Exclusive Dataset Distillation on top of a base method",
    ),
)

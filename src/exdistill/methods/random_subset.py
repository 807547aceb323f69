"""``random``: a random real subset of ipc images per class — the baseline every table needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exdistill.methods.base import METHODS, DistillContext, DistillResult, MethodSpec
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet, sample_real


@dataclass
class RandomConfig:
    """No options: the subset depends only on the seed."""


def run_random(ctx: DistillContext, cfg: RandomConfig) -> DistillResult:
    indices = sample_real(ctx.dataset, ctx.ipc, generator(ctx.seed, "init"))
    syn = SyntheticSet.from_real(ctx.dataset, indices, factor=1)
    return DistillResult(syn, syn.images.clone())


def _presets(preset: str, dataset: str, ipc: int, overrides: dict[str, Any]) -> dict[str, Any]:
    return {}


METHODS.add(
    "random",
    MethodSpec(
        name="random",
        config_cls=RandomConfig,
        run=run_random,
        presets=_presets,
        steps=lambda cfg, ctx: 0,
        protocol="idc",
        description="random real subset (baseline)",
        selects_real=True,
    ),
)

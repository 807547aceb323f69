"""What every distillation method shares: the registry, the run context, presets.

A method is one module that registers a ``MethodSpec``: its typed config, its presets and the
function that distills. Adding a method means adding one module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from exdistill.checkpoint import Checkpointer
from exdistill.data.base import ImageDataset
from exdistill.distributed import Dist
from exdistill.progress import Progress
from exdistill.registry import Registry
from exdistill.synthetic import SyntheticSet


def _no_log(record: dict[str, Any]) -> None:
    pass


@dataclass
class DistillContext:
    """Everything a method needs besides its own config."""

    dataset: ImageDataset
    ipc: int
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: Progress | None = None
    log: Callable[[dict[str, Any]], None] = _no_log  # one JSON-able record per call (metrics)
    # Evaluates an intermediate synthetic set (EDD's accuracy after each segment); None skips.
    evaluate: Callable[[SyntheticSet], dict[str, Any]] | None = None
    # Where to save and find checkpoints (the run directory's); None: no checkpoints, no resume.
    # A method resumes from ``checkpoint.load()`` when it returns one (DESIGN.md §6).
    checkpoint: Checkpointer | None = None
    # This process's place in a multi-process run (distributed.py); one process by default.
    dist: Dist = field(default_factory=Dist)


@dataclass
class DistillResult:
    """A method's output: the synthetic set, where it started, and method-specific records."""

    synthetic: SyntheticSet
    initial_images: torch.Tensor | None = None  # stored images before distillation
    records: dict[str, Any] = field(default_factory=dict)  # e.g. EDD's per-segment table


def standard_preflight(cfg: Any, dataset: ImageDataset, ipc: int, device: torch.device) -> int:
    """Checks of a resolved config against the data and device that the config alone cannot
    make (a ``factor`` that does not divide the image size, device-only options), before any
    work. Returns how many real training images per class the initial set draws per ipc."""
    from exdistill.synthetic import check_factor

    factor = int(getattr(cfg, "factor", 1))
    check_factor(factor, dataset.image_size)
    check_device = getattr(cfg, "check_device", None)
    if check_device is not None:
        check_device(device)
    return factor**2 if getattr(cfg, "init", "real") == "real" else 1


@dataclass(frozen=True)
class CliOption:
    """A command-line flag a method declares for ``exdistill distill``: ``--flag V`` sets the
    method's config key ``key`` (``type`` parses V). The CLI adds every registered method's
    flags and refuses a flag the chosen method does not declare."""

    flag: str
    key: str
    help: str
    type: Callable[[str], Any] = str


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``presets(preset, dataset_name, ipc, overrides)`` returns config values (a nested dict)
    for a preset; ``overrides`` are the user's values applied after it (EDD reads its base);
    ``steps(cfg, ctx)`` the number of progress units ``run`` will report;
    ``run(ctx, cfg)`` returns the synthetic set.
    """

    name: str
    config_cls: type
    run: Callable[[DistillContext, Any], DistillResult]
    presets: Callable[[str, str, int, dict[str, Any]], dict[str, Any]]
    steps: Callable[[Any, DistillContext], int]
    protocol: str = "idc"  # evaluation protocol family used by default
    description: str = ""
    # Bases EDD can wrap expose ``distiller(cfg, ctx)`` → a ``segment.SegmentDistiller``.
    distiller: Callable[[Any, DistillContext], Any] | None = None
    # The set is a subset of real images, not optimised (random, herding): its "initial"
    # images are the final ones, so update similarity means nothing for it.
    selects_real: bool = False
    # Whether ``run`` shards its work over the ranks of a torchrun job (``ctx.dist``) and keeps
    # every rank's set identical; given the resolved config (EDD asks its base).
    distributed: Callable[[Any], bool] = lambda cfg: False
    # ``preflight(cfg, dataset, ipc, device)``: every check of the resolved config against the
    # loaded data and the device (factor, segments, MTT's experts), before the run directory
    # exists; raises ExdistillError; returns real images per class drawn per ipc.
    preflight: Callable[[Any, ImageDataset, int, torch.device], int] = standard_preflight
    options: tuple[CliOption, ...] = ()  # the method's own ``exdistill distill`` flags
    # Overrides of the quick preset for a run of about a second on digits at ``smoke_ipc``:
    # the tests run every registered method with them (a new method is tested as registered).
    smoke: dict[str, Any] = field(default_factory=dict)
    smoke_ipc: int = 2


METHODS: Registry[MethodSpec] = Registry("method")
PRESETS = ("quick", "paper")


def resolve_config(
    name: str, preset: str, dataset: str, ipc: int, overrides: dict[str, Any] | None = None
) -> Any:
    """A method's config: defaults ← preset(dataset, ipc) ← overrides (YAML, ``--set``)."""
    from exdistill.config import merge
    from exdistill.errors import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown '{preset}'; choose from: {', '.join(PRESETS)}")
    spec = METHODS.get(name)
    # Presets see the overrides: EDD's base preset follows the chosen ``base``.
    cfg = merge(spec.config_cls(), spec.presets(preset, dataset, ipc, overrides or {}))
    cfg = merge(cfg, overrides or {})
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg

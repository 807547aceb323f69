"""The Python API: load a dataset, distill it, evaluate the set, in memory.

    >>> import exdistill as xd
    >>> ds = xd.load_dataset("digits")                        # or "fashion-mnist", data_dir=...
    >>> syn = xd.distill(ds, method="idc", ipc=1, seed=0, config={"iterations": 1})
    >>> res = xd.evaluate(syn, ds, protocol="idc-quick", repeats=1, seed=0, epochs=2)
    >>> 0.0 <= res.test_acc_mean <= 1.0
    True
    >>> images, labels = syn.decoded()                        # tensors for your own loop
    >>> images.shape, labels.shape
    (torch.Size([10, 1, 8, 8]), torch.Size([10]))

``exdistill distill`` (``pipeline.distill``) runs the same method code with a run directory
around it (checkpoints, resume, logs, reports); with the same seed, preset and config both give
the same set. These functions write nothing and keep no state between calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from exdistill.config import to_dict
from exdistill.data import ImageDataset, load_dataset
from exdistill.evaluation import (
    PROTOCOLS,
    EvalResult,
    Protocol,
    eval_steps,
    evaluate_images,
    with_learned_lr,
)
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.precision import DEFAULT_PRECISION, autocast_scope, resolve_precision
from exdistill.progress import ProgressFactory, no_progress
from exdistill.synthetic import SyntheticSet


def distill(
    dataset: ImageDataset,
    method: str = "edd",
    ipc: int = 10,
    seed: int = 0,
    preset: str = "quick",
    config: dict[str, Any] | None = None,
    device: str = "cpu",
    progress: ProgressFactory = no_progress,
    precision: str = DEFAULT_PRECISION,
) -> SyntheticSet:
    """Distill ``dataset`` into ``ipc`` stored images per class with ``method``.

    Args:
        dataset: from :func:`load_dataset`.
        method: a registered method (``exdistill methods`` lists them).
        preset: ``quick`` (CPU budgets) or ``paper`` (the published settings).
        config: the method's config values over the preset, as for ``--set method.KEY=V``
            (e.g. ``{"reg_weight": 0.1}`` for EDD, ``{"experts": DIR}`` for MTT).
        progress: a ``progress(total, description)`` factory (``exdistill.progress``).
        precision: ``fp32``, ``bf16`` or ``auto`` (``exdistill.precision``).

    Returns the synthetic set; ``info`` names the method, its resolved config, seed and preset.

    Raises:
        ConfigError: unknown method, key or impossible value, before any work.
    """
    spec = METHODS.get(method)
    cfg = resolve_config(method, preset, dataset.name, ipc, config)
    spec.preflight(cfg, dataset, ipc, torch.device(device))
    ctx = DistillContext(dataset, ipc, seed, torch.device(device))
    with progress(spec.steps(cfg, ctx), f"distill {method}") as bar:
        ctx.progress = bar
        resolved = resolve_precision(precision, device, image_size=dataset.image_size)
        with autocast_scope(resolved, device):
            result = spec.run(ctx, cfg)
    syn = result.synthetic
    syn.info.update({"method": method, "config": to_dict(cfg), "seed": seed, "preset": preset})
    return syn


def eval_protocol(syn: SyntheticSet, protocol: str) -> str | Protocol:
    """The protocol ``syn`` trains under: a set with a learned step size (MTT) trains at it under
    its method's own protocol family (``dsa``, ``dsa-quick`` for mtt), as that method's code
    evaluates it. Under any other protocol the recipe keeps its own rate: there, methods are
    compared under one recipe."""
    method = syn.info.get("method")
    if syn.step_size is None or method not in METHODS:
        return protocol
    if protocol.removesuffix("-quick") != METHODS.get(method).protocol:
        return protocol
    return with_learned_lr(protocol, syn.step_size)


def evaluate(
    syn: SyntheticSet,
    dataset: ImageDataset,
    protocol: str = "idc-quick",
    repeats: int = 3,
    seed: int = 0,
    model: str | None = None,
    device: str = "cpu",
    epochs: int | None = None,
    progress: ProgressFactory = no_progress,
    precision: str = DEFAULT_PRECISION,
) -> EvalResult:
    """Train ``repeats`` fresh networks on the decoded set and test them.

    ``model`` defaults to the protocol's network; ``epochs`` overrides the protocol's training
    length (a quick look; published numbers use the protocol's own). The result keeps every
    accuracy (``test_accs``, ``val_accs``) and their ``test_acc_mean`` / ``test_acc_std``.
    """
    proto = eval_protocol(syn, protocol)
    proto = PROTOCOLS.get(proto) if isinstance(proto, str) else proto
    if epochs is not None:
        proto = dataclasses.replace(proto, train=dataclasses.replace(proto.train, epochs=epochs))
    images, labels = syn.decoded()
    with progress(eval_steps(labels.shape[0], proto, repeats), "evaluate") as bar:
        resolved = resolve_precision(precision, device, image_size=dataset.image_size)
        with autocast_scope(resolved, device):
            return evaluate_images(
                images, labels, dataset, proto, repeats, seed, model or proto.model, device, bar
            )


__all__ = ["SyntheticSet", "distill", "eval_protocol", "evaluate", "load_dataset"]

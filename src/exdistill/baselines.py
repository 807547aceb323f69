"""The rows every result table carries: a random real subset at the same ipc, and full data.

Both use the same protocol and seeds as the methods they sit beside (the full-data row trains
to convergence on validation instead of the protocol's step cap: ``evaluation.converged``), and
are cached on disk (keyed by dataset, split, protocol, model, ipc, repeats, seed and library
version) so a table can always show them without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from exdistill import __version__
from exdistill.config import config_hash
from exdistill.data.base import ImageDataset
from exdistill.evaluation import (
    FULL_PATIENCE,
    PROTOCOLS,
    EvalResult,
    Protocol,
    converged,
    evaluate_images,
    protocol_key,
)
from exdistill.io import write_json
from exdistill.progress import Progress
from exdistill.seeding import derive_seed, generator
from exdistill.synthetic import sample_real

BASELINES = ("random", "full")


def random_subset(dataset: ImageDataset, ipc: int, seed: int) -> torch.Tensor:
    """Indices of ``ipc`` random training images per class (the random baseline's set)."""
    return torch.cat(sample_real(dataset, ipc, generator(seed, "random-subset")))


def _dataset_key(dataset: ImageDataset) -> str:
    return config_hash(
        {
            "name": dataset.name,
            "source": dataset.source,
            "sizes": [len(dataset.train), len(dataset.val), len(dataset.test)],
            "shape": [dataset.channels, *dataset.image_size],
            "label_sum": int(dataset.train.labels.sum()),
        }
    )


def cache_path(
    cache_dir: Path,
    kind: str,
    dataset: ImageDataset,
    ipc: int,
    protocol: Protocol,
    model: str,
    repeats: int,
    seed: int,
    precision: str = "fp32",
) -> Path:
    fields = {
        "kind": kind,
        "dataset": _dataset_key(dataset),
        "ipc": ipc if kind == "random" else None,
        "protocol": protocol_key(protocol, model),
        "repeats": repeats,
        "seed": seed,
        "version": __version__,
    }
    if precision != "fp32":  # fp32 entries keep the keys they always had
        fields["precision"] = precision
    if kind == "full":  # converged training: its stopping and selection rule is part of it
        fields["stop"] = f"best-val, settle after last decay, patience {FULL_PATIENCE}, ties late"
    key = config_hash(fields)
    return cache_dir / "baselines" / f"{dataset.name}-{kind}-{protocol.name}-{model}-{key}.json"


def baseline(
    kind: str,
    dataset: ImageDataset,
    ipc: int,
    protocol: str | Protocol,
    repeats: int = 3,
    seed: int = 0,
    model: str | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate the ``random`` (fresh subset per repeat) or ``full`` baseline, cached.

    ``precision`` names the autocast scope the caller runs this in (``exdistill.precision``);
    it keys the cache, so fp32 and bf16 results are never mixed."""
    if kind not in BASELINES:
        from exdistill.errors import ConfigError

        raise ConfigError(f"unknown baseline '{kind}'; choose from: {', '.join(BASELINES)}")
    proto = PROTOCOLS.get(protocol) if isinstance(protocol, str) else protocol
    name = model or proto.model
    path = None
    if cache_dir is not None:
        keyed = converged(proto, len(dataset.train)) if kind == "full" else proto
        path = cache_path(cache_dir, kind, dataset, ipc, keyed, name, repeats, seed, precision)
        if path.is_file():
            try:
                return EvalResult.from_dict(json.loads(path.read_text()))
            except (json.JSONDecodeError, KeyError):
                pass  # a damaged cache entry is recomputed
    if kind == "full":  # the upper bound: trained to convergence on validation
        images, labels = dataset.normalized("train")
        result = evaluate_images(
            images,
            labels,
            dataset,
            converged(proto, len(labels)),
            repeats,
            seed,
            name,
            device,
            progress,
            patience=FULL_PATIENCE,
        )
    else:
        results = []
        for r in range(repeats):
            idx = random_subset(dataset, ipc, derive_seed(seed, "random", r))
            images = dataset.normalize(dataset.train.images[idx])
            one = evaluate_images(
                images,
                dataset.train.labels[idx],
                dataset,
                proto,
                1,
                derive_seed(seed, "random", r),
                name,
                device,
                progress,
            )
            results.append(one)
        result = EvalResult(
            proto.name,
            name,
            [a for r in results for a in r.test_accs],
            [a for r in results for a in r.val_accs],
            [s for r in results for s in r.seeds],
            results[0].train_images,
            sum(r.seconds for r in results),
        )
    if path is not None:
        write_json(path, result.to_dict())
    return result


def baseline_steps(
    kind: str, dataset: ImageDataset, ipc: int, protocol: str | Protocol, repeats: int
) -> int:
    proto = PROTOCOLS.get(protocol) if isinstance(protocol, str) else protocol
    if kind == "full":  # at most: converged training may stop early
        n = len(dataset.train)
        return converged(proto, n).train.total_steps(n) * repeats
    return proto.train.total_steps(ipc * dataset.num_classes) * repeats

"""Load a registered dataset by name: find its files, read them, carve the validation split.

Example:
    >>> ds = load_dataset("digits")
    >>> ds.train.images.shape[1:], ds.num_classes
    (torch.Size([1, 8, 8]), 10)
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from exdistill.data.base import DATASETS, ImageDataset, RawData, build_dataset
from exdistill.errors import ConfigError, DataError


def cache_root() -> Path:
    """Where decoded datasets are cached: ``$EXDISTILL_CACHE`` or ``~/.cache/exdistill``."""
    env = os.environ.get("EXDISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "exdistill"


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W[, C])`` → ``(N, size, size[, C])``, bilinear (as PIL, like imagefolder)."""
    if images.shape[1:3] == (size, size):
        return images
    squeeze = images.ndim == 4 and images.shape[-1] == 1
    frames = images[..., 0] if squeeze else images
    out = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR))
            for f in frames
        ]
    )
    return out[..., None] if squeeze else out


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    resize: int | None = None,
    cache_dir: Path | None = None,
) -> ImageDataset:
    """Load dataset ``name`` into memory with a fixed stratified validation split.

    Args:
        name: a registered dataset (``exdistill datasets`` lists them).
        data_dir: where its files are; None uses the dataset's default location.
        val_fraction: share of every training class held out as the validation split.
        split_seed: seed of that split (the same seed always gives the same split).
        resize: make images ``resize×resize`` (bilinear); None keeps their size.
        cache_dir: cache root for decoded image folders; None uses :func:`cache_root`.

    Raises:
        ConfigError: unknown name or impossible option. DataError: missing or malformed data.
    """
    spec = DATASETS.get(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if resize is not None and (isinstance(resize, bool) or resize < 1):
        raise ConfigError(f"resize must be a positive integer, got {resize}")
    path = spec.find(data_dir)
    if spec.needs_dir:
        if path is None:
            raise DataError(f"dataset '{name}' needs a data directory (--data-dir PATH)")
        if not path.exists():
            raise DataError(f"{path}: no such file or directory (dataset '{name}')")
    elif data_dir is not None and spec.default_dir is None:
        raise ConfigError(f"dataset '{name}' is built in and takes no data directory")
    raw = spec.load(path, resize=resize, cache_dir=cache_root() if cache_dir is None else cache_dir)
    if resize is not None:
        raw = replace(
            raw,
            train_images=resize_images(raw.train_images, resize),
            test_images=resize_images(raw.test_images, resize),
        )
    return build_dataset(name, raw, val_fraction, split_seed)


def describe_datasets() -> list[dict]:
    """One row per registered dataset: name, description, location and whether it is found.

    ``location`` is ``"built in"``, the default directory, or ``None`` when the user must pass
    one; ``found`` says whether the data is available without passing a directory.
    """
    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if not spec.needs_dir:
            location, found = "built in", True
        elif spec.default_dir:
            location = spec.default_dir
            found = Path(spec.default_dir).expanduser().exists()
        else:
            location, found = None, False
        rows.append(
            {"name": name, "description": spec.description, "location": location, "found": found}
        )
    return rows


__all__ = ["RawData", "cache_root", "describe_datasets", "load_dataset", "resize_images"]

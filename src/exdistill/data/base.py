"""The in-memory dataset every loader produces.

Whole splits live in memory as uint8 tensors ``(N, C, H, W)`` with int64 labels; a per-class
index makes "64 random real images of class c" an O(1) lookup. Networks see normalised floats:
``(x / 255 - mean) / std`` per channel, with mean and std measured on the training split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exdistill.errors import DataError
from exdistill.registry import Registry


@dataclass(frozen=True)
class Split:
    """One split: images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class RawData:
    """What a format loader returns before the validation split is carved out."""

    train_images: np.ndarray  # (N, H, W, C) or (N, H, W) uint8
    train_labels: np.ndarray  # (N,) int
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    source: str  # where the data came from, for messages and provenance


@dataclass
class ImageDataset:
    """Train/val/test splits plus what a method needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    _class_index: dict[str, list[torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)

    def class_indices(self, split: str = "train") -> list[torch.Tensor]:
        """Indices of each class's images in ``split`` (cached)."""
        if split not in self._class_index:
            labels = self.split(split).labels
            self._class_index[split] = [
                torch.nonzero(labels == c, as_tuple=False).flatten()
                for c in range(self.num_classes)
            ]
        return self._class_index[split]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` → normalised float32."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device)
        return (images.float() / 255.0 - mean[:, None, None]) / std[:, None, None]

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float → float in [0, 1] (not clamped)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)
        return images * std[:, None, None] + mean[:, None, None]

    def valid_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(low, high)`` of normalised pixels, shaped ``(C, 1, 1)``."""
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (0.0 - mean) / std, (1.0 - mean) / std

    def normalized(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """A whole split as normalised float images and labels."""
        s = self.split(split)
        return self.normalize(s.images), s.labels

    def meta(self) -> dict:
        """What a synthetic set's sidecar records about its dataset."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "channels": self.channels,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "source": self.source,
        }


def _to_nchw(images: np.ndarray, source: str) -> torch.Tensor:
    if images.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{source}: images must be N×H×W or N×H×W×C, got shape {images.shape}")
    if images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{source}: expected 1 or 3 channels last, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _check_labels(labels: np.ndarray, n_images: int, num_classes: int, what: str) -> None:
    if labels.ndim != 1:
        raise DataError(f"{what}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.shape[0] != n_images:
        raise DataError(f"{what}: {n_images} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what}: labels out of range [0, {num_classes - 1}] "
            f"(found {int(labels.min())}..{int(labels.max())})"
        )


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out (at least one)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_held = max(1, int(round(fraction * len(idx)))) if fraction > 0 and len(idx) > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def build_dataset(name: str, raw: RawData, val_fraction: float = 0.1, split_seed: int = 0):
    """Validate ``raw``, carve a fixed stratified validation split, compute normalisation."""
    num_classes = len(raw.class_names)
    if num_classes < 2:
        raise DataError(f"{raw.source}: need at least 2 classes, found {num_classes}")
    train_x = _to_nchw(raw.train_images, raw.source)
    test_x = _to_nchw(raw.test_images, raw.source)
    train_y = np.asarray(raw.train_labels).astype(np.int64, copy=False)
    test_y = np.asarray(raw.test_labels).astype(np.int64, copy=False)
    _check_labels(train_y, train_x.shape[0], num_classes, f"{raw.source} (train)")
    _check_labels(test_y, test_x.shape[0], num_classes, f"{raw.source} (test)")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{raw.source}: train images {tuple(train_x.shape[1:])} and test images "
            f"{tuple(test_x.shape[1:])} differ in shape"
        )
    keep, held = stratified_split(train_y, val_fraction, split_seed)
    mean, std = channel_stats(train_x[keep])
    return ImageDataset(
        name=name,
        train=Split(train_x[keep].contiguous(), torch.from_numpy(train_y[keep])),
        val=Split(train_x[held].contiguous(), torch.from_numpy(train_y[held])),
        test=Split(test_x.contiguous(), torch.from_numpy(test_y)),
        class_names=list(raw.class_names),
        mean=mean,
        std=std,
        source=raw.source,
    )


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images on the [0, 1] scale.

    Sums are exact integers (int64), so the statistics do not depend on the summation order,
    the thread count or the machine; chunks keep a large split from materialising as one copy.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.int64)
    squares = torch.zeros(c, dtype=torch.int64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.int64)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total.to(torch.float64) / (255.0 * n)
    second = squares.to(torch.float64) / (255.0**2 * n)
    var = (second - mean**2).clamp_min(0) * n / max(n - 1, 1)
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in var.sqrt())


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it and where it looks by default."""

    name: str
    load: Callable[..., RawData]  # load(data_dir: Path | None, **options) -> RawData
    description: str
    default_dir: str | None = None  # None: built in, or the user must pass --data-dir
    needs_dir: bool = True
    # Side of every image where the format fixes it (presets key on it); None: any size
    # (image folders, npz).
    image_size: int | None = None

    def find(self, data_dir: str | Path | None) -> Path | None:
        if data_dir is not None:
            return Path(data_dir).expanduser()
        return Path(self.default_dir).expanduser() if self.default_dir else None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def known_image_size(name: str) -> int | None:
    """The image side a registered dataset always has, else None (presets: small images get
    settings of their own, e.g. IDC's factor 1 on 8×8 digits).

    >>> known_image_size("digits"), known_image_size("imagefolder")
    (8, None)
    """
    from exdistill.data import load as _registers  # noqa: F401  (the built-in datasets)

    return DATASETS.get(name).image_size if name in DATASETS else None


def small_images(name: str) -> bool:
    """Whether dataset ``name`` has images of at most 16×16 (digits): its quick presets differ
    (IDC without multi-formation, longer budgets; their evidence is at each preset)."""
    size = known_image_size(name)
    return size is not None and size <= 16

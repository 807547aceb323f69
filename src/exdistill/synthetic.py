"""The synthetic set: stored images, labels, segments, and how they decode and persist.

With multi-formation (IDC), one stored ``H×W`` image holds an ``f×f`` grid of downsampled
images; decoding splits the grid and upsamples each tile back to ``H×W`` (bilinear), so a stored
set of ``M`` images trains a network on ``M·f²`` images at the same storage cost.

On disk a set is ``DIR/synthetic.safetensors`` (tensors only, no pickle: loading a set someone
sent you cannot run code) plus ``DIR/synthetic.json`` (method, config, dataset, normalisation,
factor, ipc, seeds, library version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from exdistill import __version__
from exdistill.data.base import ImageDataset
from exdistill.errors import DataError
from exdistill.io import atomic_write, write_json

FORMAT_VERSION = 1
TENSORS_FILE = "synthetic.safetensors"
SIDECAR_FILE = "synthetic.json"


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Split each stored image into ``factor²`` tiles and upsample each to full size.

    Shape: ``(M, C, H, W)`` → ``(M·f², C, H, W)``, tiles in row-major order per image.
    """
    if factor == 1:
        return images
    m, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images.reshape(m, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(m * factor * factor, c, th, tw)  # (M·f², C, H/f, W/f)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Pack groups of ``factor²`` full-size images into one stored image each (the inverse
    layout of ``decode``; downsampling is lossy).

    Shape: ``(M·f², C, H, W)`` → ``(M, C, H, W)``.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    if n % (factor * factor):
        raise ValueError(f"{n} images do not fill groups of {factor * factor}")
    th, tw = h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="bilinear", antialias=True)
    small = small.reshape(n // factor**2, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return small.reshape(n // factor**2, c, h, w)


def check_factor(factor: int, image_size: tuple[int, int]) -> None:
    from exdistill.errors import ConfigError

    h, w = image_size
    if factor < 1 or h % factor or w % factor:
        raise ConfigError(f"factor: {factor} does not divide the image size {h}×{w}")


def sample_real(
    dataset: ImageDataset, per_class: int, generator: torch.Generator, split: str = "train"
) -> list[torch.Tensor]:
    """Per class, ``per_class`` distinct random indices into ``split`` (in draw order)."""
    chosen = []
    for c, idx in enumerate(dataset.class_indices(split)):
        if len(idx) < per_class:
            raise DataError(
                f"{dataset.name}: class '{dataset.class_names[c]}' has {len(idx)} {split} images,"
                f" fewer than the {per_class} needed"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return chosen


@dataclass
class SyntheticSet:
    """Stored synthetic images (normalised floats) with their labels and segment ids.

    Shape: images ``(M, C, H, W)``, labels ``(M,)``, segments ``(M,)``; ``M = classes × ipc``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    factor: int = 1
    segments: torch.Tensor | None = None
    step_size: torch.Tensor | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.segments is None:
            self.segments = torch.zeros_like(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.get("class_names", [])) or int(self.labels.max()) + 1

    @property
    def ipc(self) -> int:
        return int(self.labels.shape[0]) // self.num_classes

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images ``(M·f², C, H, W)`` and their labels."""
        return decode(self.images, self.factor), self.labels.repeat_interleave(self.factor**2)

    def subset(self, mask: torch.Tensor) -> SyntheticSet:
        return SyntheticSet(
            images=self.images[mask],
            labels=self.labels[mask],
            factor=self.factor,
            segments=self.segments[mask],
            step_size=self.step_size,
            dataset=self.dataset,
            info=self.info,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_real(
        cls,
        dataset: ImageDataset,
        indices: list[torch.Tensor],
        factor: int = 1,
    ) -> SyntheticSet:
        """Stored images from real ones: ``indices[c]`` holds ``n·f²`` train indices of class c,
        each consecutive group of ``f²`` packed into one stored image."""
        check_factor(factor, dataset.image_size)
        images, labels = [], []
        for c, idx in enumerate(indices):
            if len(idx) % factor**2:
                raise ValueError(f"class {c}: {len(idx)} images do not fill groups of {factor**2}")
            real = dataset.normalize(dataset.train.images[idx])
            images.append(encode(real, factor))
            labels.append(torch.full((len(idx) // factor**2,), c, dtype=torch.long))
        return cls(torch.cat(images), torch.cat(labels), factor, dataset=dataset.meta())

    @classmethod
    def from_noise(
        cls, dataset: ImageDataset, ipc: int, generator: torch.Generator, factor: int = 1
    ) -> SyntheticSet:
        check_factor(factor, dataset.image_size)
        shape = (dataset.num_classes * ipc, dataset.channels, *dataset.image_size)
        images = torch.randn(shape, generator=generator)
        labels = torch.arange(dataset.num_classes).repeat_interleave(ipc)
        return cls(images, labels, factor, dataset=dataset.meta())

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        tensors = {
            "images": self.images.detach().float().contiguous().cpu(),
            "labels": self.labels.long().contiguous().cpu(),
            "segments": self.segments.long().contiguous().cpu(),
        }
        if self.step_size is not None:
            tensors["step_size"] = self.step_size.detach().float().reshape(-1).cpu()
        atomic_write(directory / TENSORS_FILE, lambda p: save_file(tensors, str(p)))
        sidecar = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "factor": self.factor,
            "ipc": self.ipc,
            "num_images": int(self.labels.shape[0]),
            "dataset": self.dataset,
            **self.info,
        }
        write_json(directory / SIDECAR_FILE, sidecar)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SyntheticSet:
        directory = Path(directory)
        tensors_path, sidecar_path = directory / TENSORS_FILE, directory / SIDECAR_FILE
        for path in (tensors_path, sidecar_path):
            if not path.is_file():
                raise DataError(f"{path}: not found (is {directory} a synthetic-set directory?)")
        try:
            meta = json.loads(sidecar_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{sidecar_path}: not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{sidecar_path}: expected a JSON object")
        try:
            tensors = load_file(str(tensors_path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{tensors_path}: not a readable safetensors file ({err})") from None
        missing = {"images", "labels"} - set(tensors)
        if missing:
            raise DataError(f"{tensors_path}: missing tensors {sorted(missing)}")
        images, labels = tensors["images"], tensors["labels"]
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{tensors_path}: images {tuple(images.shape)} and labels {tuple(labels.shape)} "
                "do not match"
            )
        segments = tensors.get("segments")
        if segments is not None and tuple(segments.shape) != tuple(labels.shape):
            raise DataError(f"{tensors_path}: segments {tuple(segments.shape)} do not match labels")
        classes = len(meta.get("dataset", {}).get("class_names", [])) or None
        if labels.numel() and (labels.min() < 0 or (classes and labels.max() >= classes)):
            raise DataError(f"{tensors_path}: labels out of range for {classes} classes")
        factor = meta.get("factor", 1)
        if not isinstance(factor, int) or factor < 1 or any(s % factor for s in images.shape[2:]):
            raise DataError(f"{sidecar_path}: factor {factor!r} does not divide the image size")
        info = {
            k: v
            for k, v in meta.items()
            if k
            not in ("format_version", "library_version", "factor", "ipc", "num_images", "dataset")
        }
        info["library_version"] = meta.get("library_version")
        return cls(
            images=images,
            labels=labels.long(),
            factor=int(meta.get("factor", 1)),
            segments=tensors.get("segments"),
            step_size=tensors.get("step_size"),
            dataset=meta.get("dataset", {}),
            info=info,
        )

    # ------------------------------------------------------------------ pictures
    def to_uint8(self, images: torch.Tensor | None = None) -> np.ndarray:
        """Images as ``(M, H, W, C)`` uint8 in pixel space."""
        images = self.images if images is None else images
        mean = torch.tensor(self.dataset.get("mean", [0.0] * images.shape[1]))[:, None, None]
        std = torch.tensor(self.dataset.get("std", [1.0] * images.shape[1]))[:, None, None]
        pixels = (images.detach().cpu() * std + mean).clamp(0, 1)
        return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def grid(self, path: str | Path, scale: int | None = None) -> Path:
        """A PNG with one row per class and the class's stored images along it."""
        pixels = self.to_uint8()
        order = torch.argsort(self.labels * len(self.labels) + torch.arange(len(self.labels)))
        classes, per_row = self.num_classes, max(1, self.ipc)
        m, h, w, c = pixels.shape
        pad = 1
        canvas = np.full(
            (classes * (h + pad) + pad, per_row * (w + pad) + pad, c), 255, dtype=np.uint8
        )
        counts = [0] * classes
        for i in order.tolist():
            cls_ = int(self.labels[i])
            j = counts[cls_]
            counts[cls_] += 1
            if j >= per_row:
                continue
            y, x = pad + cls_ * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = pixels[i]
        image = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
        scale = scale or max(1, 256 // max(h, w) // 2)
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        return atomic_write(Path(path), lambda p: image.save(p, format="PNG"))

    def export_imagefolder(self, directory: str | Path) -> Path:
        """Decoded training images as ``DIR/train/<class>/NNNN.png`` (for other tools)."""
        directory = Path(directory)
        images, labels = self.decoded()
        pixels = self.to_uint8(images)
        names = self.dataset.get("class_names") or [str(c) for c in range(self.num_classes)]
        counts: dict[int, int] = {}
        for i, label in enumerate(labels.tolist()):
            k = counts.get(label, 0)
            counts[label] = k + 1
            folder = directory / "train" / _safe_name(names[label])
            arr = pixels[i]
            image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            atomic_write(folder / f"{k:04d}.png", lambda p, im=image: im.save(p, format="PNG"))
        return directory


def _safe_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"
    return safe if safe.strip(".") else "_" * len(safe)  # "." or ".." would leave the folder

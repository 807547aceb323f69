"""``imagefolder``: ``DIR/train/<class>/*`` with ``DIR/test/<class>/*`` (else ``DIR/val/``).

Classes are the sorted folder names under ``train/``; images may sit in nested folders below
their class folder (Tiny-ImageNet's ``train/<wnid>/images/``), and a Tiny-ImageNet style
``val/images/`` + ``val/val_annotations.txt`` is understood too. Images decode to RGB, or to one
channel when every image is grayscale; ``resize`` makes them ``resize×resize`` (bilinear).
Decoded arrays are cached as ``.npz`` keyed by the folder, ``resize`` and every file's size and
mtime, so the second run skips decoding.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from exdistill.data.base import DATASETS, DatasetSpec, RawData
from exdistill.data.files import require_dir
from exdistill.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CACHE_VERSION = 1  # bump when the decoding changes
Item = tuple[Path, int]  # (image file, class index)
T = TypeVar("T")
# What Pillow raises for unreadable, truncated or hostile image data.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted, hidden files skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p) and p.is_file()
    )


def scan_train(split_dir: Path) -> tuple[list[str], list[Item]]:
    """Class names (sorted folder names) and the labelled files of ``train/``."""
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))
    if len(classes) == 0:
        raise DataError(f"{split_dir}: no class folders (expected train/<class>/<image>)")
    items: list[Item] = []
    for label, name in enumerate(classes):
        files = list_images(split_dir / name)
        if not files:
            raise DataError(f"{split_dir / name}: class folder has no images")
        items += [(f, label) for f in files]
    return classes, items


def scan_test(split_dir: Path, classes: list[str]) -> list[Item]:
    """The labelled files of ``test/`` or ``val/``; a class unknown to ``train/`` is an error."""
    index = {name: i for i, name in enumerate(classes)}
    annotations = split_dir / "val_annotations.txt"
    if annotations.is_file() and (split_dir / "images").is_dir():  # Tiny-ImageNet
        return scan_annotated(split_dir, annotations, index)
    items: list[Item] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and _visible(p)):
        if folder.name not in index:
            raise DataError(f"{folder}: class '{folder.name}' is not among the train classes")
        items += [(f, index[folder.name]) for f in list_images(folder)]
    if not items:
        raise DataError(f"{split_dir}: no images (expected {split_dir.name}/<class>/<image>)")
    return items


def scan_annotated(split_dir: Path, annotations: Path, index: dict[str, int]) -> list[Item]:
    """Tiny-ImageNet's ``val/images/<file>`` labelled by ``val_annotations.txt`` lines."""
    items: list[Item] = []
    for lineno, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        file, name = fields[0], fields[1]
        if name not in index:
            raise DataError(f"{annotations}:{lineno}: class '{name}' is not a train class")
        path = split_dir / "images" / file
        if not path.is_file():
            raise DataError(f"{annotations}:{lineno}: {path} does not exist")
        items.append((path, index[name]))
    return items


def to_array(img: Image.Image, resize: int | None) -> np.ndarray:
    """An opened image as uint8 ``(H, W)`` (grayscale modes) or ``(H, W, 3)`` (every other
    mode: palette, RGBA, CMYK, ...; alpha is dropped), made ``resize×resize`` when given."""
    img = img.convert("L" if img.mode in GRAY_MODES else "RGB")
    if resize is not None and img.size != (resize, resize):
        img = img.resize((resize, resize), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_image(path: Path, resize: int | None) -> np.ndarray:
    """One image file as :func:`to_array` makes it; DataError naming ``path`` if unreadable."""
    try:
        with Image.open(path) as img:
            return to_array(img, resize)
    except DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot decode image ({err})") from None


def parallel_map(
    fn: Callable[[T], np.ndarray], items: list[T], workers: int | None = None
) -> list[np.ndarray]:
    """``[fn(x) for x in items]`` on a thread pool (Pillow releases the GIL while decoding)."""
    workers = workers or min(8, os.cpu_count() or 1)
    step = max(1, -(-len(items) // (4 * workers)))
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(lambda chunk: [fn(x) for x in chunk], chunks)
        return [a for part in parts for a in part]


def stack_images(arrays: list[np.ndarray], where: Callable[[int], str], ref: str) -> np.ndarray:
    """Decoded images as one ``(N, H, W[, 3])`` uint8 array.

    Grayscale images are widened to RGB unless every image is grayscale, so no colour is lost.

    Args:
        arrays: images as :func:`to_array` returns them.
        where: names image ``i`` in messages (its file, or its shard and row).
        ref: a short name of image 0, the one every other image is compared with.

    Raises:
        DataError: an image's size differs from image 0's.
    """
    first = arrays[0].shape[:2]
    for i, a in enumerate(arrays):
        if a.shape[:2] != first:
            raise DataError(
                f"{where(i)}: image is {a.shape[1]}×{a.shape[0]} but {ref} is "
                f"{first[1]}×{first[0]}; pass resize=N (--resize N) to load mixed sizes"
            )
    if any(a.ndim == 2 for a in arrays) and any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.stack(arrays)


def decode_all(files: list[Path], resize: int | None, workers: int | None = None) -> np.ndarray:
    """Decode ``files`` with a thread pool into one array, as :func:`stack_images` stacks them."""
    arrays = parallel_map(lambda p: decode_image(p, resize), files, workers)
    ref = str(Path(files[0].parent.name, files[0].name))
    return stack_images(arrays, lambda i: str(files[i]), ref)


def cache_key(root: Path, resize: int | None, items: Sequence[tuple[Path, object]]) -> str:
    """A digest of the folder, ``resize`` and every file's path, tag, size and mtime.

    Args:
        root: the dataset's folder; every path in ``items`` lies below it.
        resize: the side images are resized to, or None.
        items: ``(file, tag)`` pairs; the tag is whatever else fixes the file's meaning (its
            class index for image folders, its split for parquet shards).
    """
    h = hashlib.sha256(f"v{CACHE_VERSION}|{root.resolve()}|{resize}".encode())
    for path, tag in items:
        st = path.stat()
        h.update(f"|{path.relative_to(root)}:{tag}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def read_cache(path: Path) -> RawData | None:
    """The cached arrays at ``path``, or None if absent or unreadable (then decode again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return RawData(
                f["train_x"], f["train_y"], f["test_x"], f["test_y"],
                class_names=[str(c) for c in f["class_names"]],
                source=str(f["source"]),
            )  # fmt: skip
    except Exception:  # a damaged cache is only a miss
        return None


def write_cache(path: Path, raw: RawData) -> None:
    """Write atomically (temp file, then rename) so readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    train_x=raw.train_images,
                    train_y=raw.train_labels,
                    test_x=raw.test_images,
                    test_y=raw.test_labels,
                    class_names=np.array(raw.class_names, dtype=str),
                    source=np.array(raw.source),
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        warnings.warn(f"could not write dataset cache {path}: {err}", stacklevel=2)


def load_imagefolder(
    data_dir: Path | None,
    *,
    resize: int | None = None,
    cache_dir: Path | None = None,
    **_: object,
) -> RawData:
    """Load an ImageFolder tree; ``cache_dir`` (None: no cache) holds ``imagefolder/*.npz``."""
    if data_dir is None:
        raise DataError("dataset 'imagefolder' needs a data directory")
    root = require_dir(data_dir, "imagefolder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder (expected train/<class>/<image>)")
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if test_dir is None:
        raise DataError(f"{root}: no test/ or val/ folder next to train/")
    classes, train_items = scan_train(train_dir)
    test_items = scan_test(test_dir, classes)

    cache_file = None
    if cache_dir is not None:
        key = cache_key(root, resize, train_items + test_items)
        cache_file = Path(cache_dir) / "imagefolder" / f"{root.resolve().name}-{key}.npz"
        cached = read_cache(cache_file)
        if cached is not None:
            return cached

    images = decode_all([p for p, _ in train_items + test_items], resize)
    n = len(train_items)
    raw = RawData(
        train_images=images[:n],
        train_labels=np.array([c for _, c in train_items], dtype=np.int64),
        test_images=images[n:],
        test_labels=np.array([c for _, c in test_items], dtype=np.int64),
        class_names=classes,
        source=str(root),
    )
    if cache_file is not None:
        write_cache(cache_file, raw)
    return raw


DATASETS.add(
    "imagefolder",
    DatasetSpec(
        name="imagefolder",
        load=load_imagefolder,
        description="folders of images: train/<class>/* and test/<class>/* (or val/)",
        default_dir=None,
    ),
)

"""``mnist`` and ``fashion-mnist``: the original IDX files, gzipped or raw.

Looks for ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` and the ``t10k-``
pair in the directory itself, then in torchvision's layouts (``DIR/MNIST/raw``,
``DIR/FashionMNIST/raw``, ``DIR/raw``). Debian's ``dataset-fashion-mnist`` installs the files to
``/usr/share/datasets/fashion-mnist``.

IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
one big-endian uint32 per dimension; the data follows.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from exdistill.data.base import DATASETS, DatasetSpec, RawData
from exdistill.data.files import read_bytes, require_dir
from exdistill.errors import DataError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
UBYTE = 0x08


def parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Decode one IDX file's bytes into a uint8 array with ``ndim`` dimensions.

    Raises DataError naming ``path`` for a wrong magic number, type, rank or a truncated body.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    if data[2] != UBYTE:
        raise DataError(f"{path}: IDX type 0x{data[2]:02x} not supported (expected 0x08, ubyte)")
    if data[3] != ndim:
        raise DataError(f"{path}: expected a {ndim}-dimensional IDX file, found {data[3]}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header says {'×'.join(map(str, dims))} = {expected} bytes of data, "
            f"file has {len(data) - header}"
        )
    # copy: frombuffer views are read-only, and torch warns about wrapping those
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_idx(root: Path, stem: str, search: list[Path]) -> Path:
    """The first ``stem`` or ``stem.gz`` (also ``a.idx3-ubyte`` spellings) in ``search``."""
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in search:
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    where = ", ".join(str(p) for p in search)
    raise DataError(f"{root}: no {stem}[.gz] found (looked in {where})")


def load_split(root: Path, prefix: str, search: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` and labels ``(N,)`` of the ``train`` or ``t10k`` files."""
    images_path = find_idx(root, f"{prefix}-images-idx3-ubyte", search)
    labels_path = find_idx(root, f"{prefix}-labels-idx1-ubyte", search)
    images = parse_idx(read_bytes(images_path), images_path, ndim=3)
    labels = parse_idx(read_bytes(labels_path), labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path}: {images.shape[0]} images but {labels_path.name} "
            f"has {labels.shape[0]} labels"
        )
    return images, labels.astype(np.int64)


def load_idx(
    data_dir: Path | None, *, dataset: str, subdir: str, class_names: list[str], **_: object
) -> RawData:
    """Load an MNIST-style dataset from ``data_dir`` (see the module docstring for layouts)."""
    if data_dir is None:
        raise DataError(f"dataset '{dataset}' needs a data directory")
    root = require_dir(data_dir, dataset)
    search = [root, root / subdir / "raw", root / "raw"]
    train_x, train_y = load_split(root, "train", search)
    test_x, test_y = load_split(root, "t10k", search)
    return RawData(train_x, train_y, test_x, test_y, list(class_names), source=str(root))


DATASETS.add(
    "mnist",
    DatasetSpec(
        name="mnist",
        load=functools.partial(
            load_idx, dataset="mnist", subdir="MNIST", class_names=[str(c) for c in range(10)]
        ),
        description="MNIST, IDX files (.gz or raw; torchvision's MNIST/raw layout too)",
        default_dir=None,
        image_size=28,
    ),
)
DATASETS.add(
    "fashion-mnist",
    DatasetSpec(
        name="fashion-mnist",
        load=functools.partial(
            load_idx, dataset="fashion-mnist", subdir="FashionMNIST", class_names=FASHION_CLASSES
        ),
        description="Fashion-MNIST, IDX files (.gz or raw; torchvision's FashionMNIST/raw too)",
        default_dir="/usr/share/datasets/fashion-mnist",
        image_size=28,
    ),
)

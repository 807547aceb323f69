"""``cifar10`` and ``cifar100``: the python pickle batches from the CIFAR website.

``data_dir`` may be the batches folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its
parent (torchvision's ``root``). Pickles can run arbitrary code, so they are read with an
unpickler that only rebuilds numpy arrays and refuses every other global.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from exdistill.data.base import DATASETS, DatasetSpec, RawData
from exdistill.data.files import read_bytes, require_dir
from exdistill.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 protocol-2 pickles store bytes; only the latin-1 form is accepted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# Everything a numpy array needs under pickle protocols 2-5, and nothing else.
SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,  # bytes in Python 3 protocol-2 pickles
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler for dicts, lists, strings, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name}") from None


def _key(k: Any) -> Any:
    return k.decode("latin1") if isinstance(k, bytes) else k


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR batch or meta file as a dict with ``str`` keys."""
    data = read_bytes(path)
    try:
        obj = ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except Exception as err:  # pickle raises many types for corrupt input
        raise DataError(f"{path}: corrupt pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {_key(k): v for k, v in obj.items()}


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` of one batch file."""
    batch = read_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{path}: no '{key}' entry (found {', '.join(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 N×3072 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    labels = np.asarray(batch[label_key])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{label_key}' must be a list of integers")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3072) → (N, H, W, C)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def find_folder(data_dir: Path, folder: str, marker: str, dataset: str) -> Path:
    """The batches folder: ``data_dir`` if it holds ``marker``, else ``data_dir/folder``."""
    root = require_dir(data_dir, dataset)
    for candidate in (root, root / folder):
        if (candidate / marker).is_file():
            return candidate
    hint = ""
    if any(root.glob("*.tar.gz")):
        hint = "; extract the .tar.gz archive first"
    raise DataError(f"{root}: no {marker} here or in {root / folder}{hint}")


def stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(data_dir: Path | None, **_: object) -> RawData:
    """CIFAR-10: ``data_batch_1..5`` (train), ``test_batch``, ``batches.meta`` (class names)."""
    if data_dir is None:
        raise DataError("dataset 'cifar10' needs a data directory")
    folder = find_folder(data_dir, "cifar-10-batches-py", "test_batch", "cifar10")
    train = stack([read_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)])
    test = read_batch(folder / "test_batch", "labels")
    names = read_names(folder / "batches.meta", "label_names")
    return RawData(*train, *test, class_names=names, source=str(folder))


def load_cifar100(data_dir: Path | None, **_: object) -> RawData:
    """CIFAR-100 with its 100 fine labels: ``train``, ``test``, ``meta``."""
    if data_dir is None:
        raise DataError("dataset 'cifar100' needs a data directory")
    folder = find_folder(data_dir, "cifar-100-python", "test", "cifar100")
    train = read_batch(folder / "train", "fine_labels")
    test = read_batch(folder / "test", "fine_labels")
    names = read_names(folder / "meta", "fine_label_names")
    return RawData(*train, *test, class_names=names, source=str(folder))


def read_names(path: Path, key: str) -> list[str]:
    meta = read_pickle(path)
    if key not in meta or not isinstance(meta[key], (list, tuple, np.ndarray)):
        raise DataError(f"{path}: no '{key}' list")
    return [_text(v) for v in meta[key]]


DATASETS.add(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        load=load_cifar10,
        description="CIFAR-10, python batches (cifar-10-batches-py or its parent folder)",
        default_dir=None,
        image_size=32,
    ),
)
DATASETS.add(
    "cifar100",
    DatasetSpec(
        name="cifar100",
        load=load_cifar100,
        description="CIFAR-100 fine labels, python batches (cifar-100-python or its parent)",
        default_dir=None,
        image_size=32,
    ),
)

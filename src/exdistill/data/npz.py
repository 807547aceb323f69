"""``npz``: numpy archives, never unpickled (``allow_pickle=False``).

Two layouts:

* a directory with ``train.npz`` and ``test.npz``, each holding ``x`` (uint8, ``N×H×W`` or
  ``N×H×W×C``) and ``y`` (integer labels);
* one ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

An optional ``class_names`` string array names the classes; otherwise they are ``"0"`` ..
``"C-1"`` with ``C`` = largest label + 1.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from exdistill.data.base import DATASETS, DatasetSpec, RawData
from exdistill.errors import DataError


def read_npz(path: Path, keys: list[str], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (all required) and ``optional`` (if present) of one ``.npz`` file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: expected an .npz archive, found a single .npy array")
            missing = [k for k in keys if k not in f.files]
            if missing:
                found = ", ".join(f.files) or "nothing"
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found {found})")
            return {k: f[k] for k in [*keys, *optional] if k in f.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: corrupt or unreadable .npz ({err})") from None


def check_labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must hold integer labels, found {y.dtype}")
    return y.astype(np.int64)


def load_npz(data_dir: Path | None, **_: object) -> RawData:
    """Load either layout described in the module docstring."""
    if data_dir is None:
        raise DataError("dataset 'npz' needs a data directory or .npz file")
    path = Path(data_dir)
    if path.is_dir():
        train_path, test_path = path / "train.npz", path / "test.npz"
        train = read_npz(train_path, ["x", "y"], optional=("class_names",))
        test = read_npz(test_path, ["x", "y"])
        x_train, y_train = train["x"], check_labels(train["y"], train_path, "y")
        x_test, y_test = test["x"], check_labels(test["y"], test_path, "y")
        names, names_path = train.get("class_names"), train_path
    else:
        arrays = read_npz(path, ["x_train", "y_train", "x_test", "y_test"], ("class_names",))
        x_train, x_test = arrays["x_train"], arrays["x_test"]
        y_train = check_labels(arrays["y_train"], path, "y_train")
        y_test = check_labels(arrays["y_test"], path, "y_test")
        names, names_path = arrays.get("class_names"), path
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{names_path}: 'class_names' must be a 1-D array of strings")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    else:
        top = max([int(y.max()) for y in (y_train, y_test) if y.size] or [0])
        class_names = [str(c) for c in range(top + 1)]
    return RawData(x_train, y_train, x_test, y_test, class_names, source=str(path))


DATASETS.add(
    "npz",
    DatasetSpec(
        name="npz",
        load=load_npz,
        description="numpy archives: DIR/{train,test}.npz (x, y) or one file with x_train, ...",
        default_dir=None,
    ),
)

"""Small file helpers shared by the format loaders: every failure becomes a one-line DataError."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from exdistill.errors import DataError


def require_dir(path: Path, dataset: str) -> Path:
    """``path`` if it is a directory, else DataError naming it."""
    if not path.exists():
        raise DataError(f"{path}: no such directory (dataset '{dataset}')")
    if not path.is_dir():
        raise DataError(f"{path}: expected a directory for dataset '{dataset}', found a file")
    return path


def read_bytes(path: Path) -> bytes:
    """The contents of ``path``, gunzipped when it ends in ``.gz``.

    Raises DataError (naming the file) for unreadable files and truncated or corrupt gzip data.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: corrupt or truncated gzip file ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None

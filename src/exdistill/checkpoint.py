"""Checkpoints of a running distillation: tensors in safetensors, scalars and records in JSON.

A checkpoint lives in ``RUN_DIR/checkpoint/``::

    checkpoint.json          the commit record: which tensor file, its sha256, the metrics-log
                             length and the method's own ``meta`` (segment, iteration, records)
    state-0.safetensors      tensors (images, optimiser state, generator states as uint8, ...)
    state-1.safetensors      the other slot: each save writes the slot the record does not name

A save writes the tensor file first (temp + rename), then the record (temp + rename), so a run
killed at any moment leaves the previous record pointing at its own, untouched tensor file.
Loading reads JSON and safetensors only (no pickle: a checkpoint cannot run code) and checks the
digest, so a truncated or edited file is a one-line ``DataError``. A tensor holding NaN/Inf is
never written: ``save`` raises ``NumericalError`` and the last good checkpoint stays on disk.
On resume, ``pipeline.distill`` cuts ``log.jsonl`` back to the record's ``log_records`` lines, so
the records written between the checkpoint and the kill are written once, not twice.

Example:
    >>> ckpt = Checkpointer(run_dir / "checkpoint")
    >>> ckpt.save({"images": x, "rng": gen.get_state()}, {"segment": 0, "iteration": 10})
    >>> ckpt.load().meta["iteration"]
    10
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from exdistill.errors import DataError, NumericalError
from exdistill.io import atomic_write, sha256_file, write_json

FORMAT_VERSION = 1
RECORD_FILE = "checkpoint.json"
SLOTS = ("state-0.safetensors", "state-1.safetensors")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the tensors, the method's meta, how many log records it covers and
    how many seconds of distillation it holds (so a resumed run's time counts them too)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    log_records: int = 0
    elapsed_seconds: float = 0.0


def checkpoint_due(done: int, total: int, every: int) -> bool:
    """Save after ``done`` of ``total`` iterations? Every ``every`` (0: never), and the last."""
    return every > 0 and (done % every == 0 or done == total)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _where(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k} {meta[k]}" for k in ("segment", "iteration") if k in meta) or "start"


@dataclass
class Checkpointer:
    """Saves and loads the checkpoint of one run under ``directory``.

    ``log_records`` (optional) returns how many metrics-log records have been written; it is
    stored with each save so a resumed run can drop the records written after the checkpoint.
    ``elapsed`` (optional) returns the seconds of distillation so far, stored the same way.
    """

    directory: Path
    log_records: Callable[[], int] | None = None
    elapsed: Callable[[], float] | None = None
    _cache: Checkpoint | None = field(default=None, init=False, repr=False)
    _swept: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    @property
    def record_path(self) -> Path:
        return self.directory / RECORD_FILE

    def save(self, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Write ``state`` (tensors) and ``meta`` (JSON-able) as the new checkpoint."""
        for name, tensor in state.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise NumericalError(f"'{name}' holds NaN/Inf at {_where(meta)}")
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        if not self._swept:  # temp files of a save that a kill interrupted (io.atomic_write)
            for stale in self.directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            self._swept = True
        slot = SLOTS[1] if self._current_slot() == SLOTS[0] else SLOTS[0]
        digest = ""

        def write(path: Path) -> None:
            nonlocal digest
            save_file(tensors, str(path), metadata={"format": "exdistill-checkpoint"})
            digest = sha256_file(path)

        atomic_write(self.directory / slot, write)
        record = {
            "format_version": FORMAT_VERSION,
            "tensors": slot,
            "sha256": digest,
            "log_records": self.log_records() if self.log_records else 0,
            "elapsed_seconds": round(self.elapsed(), 3) if self.elapsed else 0.0,
            "meta": meta,
        }
        write_json(self.record_path, record)
        self._cache = None  # the tensors may share memory with the caller's; reload from disk

    def load(self) -> Checkpoint | None:
        """The last checkpoint saved, or ``None`` if there is none; ``DataError`` if unreadable."""
        if self._cache is not None:
            return self._cache
        if not self.record_path.is_file():
            return None
        try:
            record = json.loads(self.record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{self.record_path}: not valid JSON ({_one_line(err)})") from None
        if (
            not isinstance(record, dict)
            or record.get("format_version") != FORMAT_VERSION
            or record.get("tensors") not in SLOTS
            or not isinstance(record.get("sha256"), str)
            or not isinstance(record.get("log_records"), int)
            or not isinstance(record.get("meta"), dict)
            or not isinstance(record.get("elapsed_seconds", 0.0), (int, float))
        ):
            raise DataError(f"{self.record_path}: not an exdistill checkpoint record")
        path = self.directory / record["tensors"]
        if not path.is_file():
            raise DataError(f"{path}: not found (the checkpoint record names it)")
        if sha256_file(path) != record["sha256"]:
            raise DataError(f"{path}: checksum mismatch (truncated or modified checkpoint)")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable safetensors file ({_one_line(err)})") from None
        elapsed = float(record.get("elapsed_seconds", 0.0))  # absent in older checkpoints
        self._cache = Checkpoint(tensors, record["meta"], record["log_records"], elapsed)
        return self._cache

    def describe(self) -> str:
        """Where the last good checkpoint stands, for error messages."""
        meta = self._record().get("meta")
        if not isinstance(meta, dict):
            return "no checkpoint had been written yet"
        where = f"segment {meta.get('segment')}, before iteration {meta.get('iteration')}"
        return f"the last good checkpoint ({where}) was kept in {self.directory}"

    def _record(self) -> dict[str, Any]:
        """The commit record as written, or ``{}`` (no checks: for naming slots and messages)."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def _current_slot(self) -> str | None:
        slot = self._record().get("tensors")
        return slot if slot in SLOTS else None

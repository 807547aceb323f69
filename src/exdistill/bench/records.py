"""What a suite run records and its results report: each cell's outcome, the concurrency it ran
under, the wall time of the bench commands, and the timestamps they carry.

The runner writes these and the renderer reads them, so they live below both.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Concurrency:
    """How many cells run at a time and the intra-op threads each cell's process gets."""

    jobs: int = 1
    threads: int | None = None  # per cell; None: not known
    env: dict[str, str] = field(default_factory=dict)  # added to each cell's environment


@dataclass
class CellRecord:
    """One cell's outcome, as results.json stores it."""

    dataset: str
    ipc: int
    method: str
    status: str  # done | failed | skipped | unavailable | pending
    test_acc_mean: float | None = None
    test_acc_std: float | None = None
    test_accs: list[float] = field(default_factory=list)
    val_acc_mean: float | None = None
    distill_seconds: float | None = None
    eval_seconds: float | None = None
    wall_seconds: float | None = None
    peak_rss_gib: float | None = None
    jobs: int | None = None  # cells running at a time when this one ran (None: not recorded)
    threads: int | None = None  # its intra-op threads
    update_similarity: float | None = None
    config_hash: str | None = None
    library_version: str | None = None
    run_dir: str | None = None
    grid: str | None = None
    error: str | None = None
    cached: bool = False
    # DD-Ranking's scores from the cell's own metrics.json: only a run that computed its own
    # baselines has them (a suite's distill cells do not; render scores those from the suite's
    # random and full-data rows)
    ior: float | None = None
    hlr: float | None = None
    lrs: float | None = None


def suite_wall_seconds(invocations: list[dict[str, Any]]) -> float:
    """The suite's wall time: the bench commands that computed its cells, summed."""
    return sum(i["wall_seconds"] for i in invocations)


def load_results(suite_dir: str | Path) -> dict[str, Any]:
    """A suite directory's ``results.json``, as written by ``write_results``."""
    return json.loads((Path(suite_dir) / "results.json").read_text())


def finished_cells(results: dict[str, Any]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The finished cells of loaded results, keyed by (dataset, ipc, method)."""
    return {
        (c["dataset"], c["ipc"], c["method"]): c for c in results["cells"] if c["status"] == "done"
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

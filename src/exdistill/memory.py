"""This process's peak resident memory, and a way to hand it to a parent process.

A parent's ``wait4`` is not enough: on Linux a child's ``ru_maxrss`` starts from the parent's
resident size at fork (a ``python -c pass`` child of a 0.8 GiB parent reports 0.8 GiB), while
``VmHWM`` belongs to the memory map the child got at ``exec``.
"""

from __future__ import annotations

import atexit
import os
import resource
from pathlib import Path

PEAK_FILE_ENV = "EXDISTILL_PEAK_FILE"  # set by a parent (exdistill bench) that wants the peak


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report_peak_at_exit(environ: os._Environ | dict[str, str] = os.environ) -> None:
    """If the parent asked (``EXDISTILL_PEAK_FILE``), write the peak there when this exits."""
    path = environ.get(PEAK_FILE_ENV)
    if path:
        atexit.register(lambda: Path(path).write_text(f"{peak_rss_gib():.6f}\n"))


def read_peak(path: Path) -> float | None:
    """The peak a child wrote with ``report_peak_at_exit``, or None if it wrote none."""
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None

"""The benchmark suite: datasets × ipc × methods under one protocol and seed, resumable.

    exdistill bench --suite cpu --out runs/bench-cpu --data-root ../shared/data

Comparable by construction: every cell of a suite uses the same evaluation protocol, repeats
and seed; the random-subset and full-data rows come from the same protocol.

Modules, each importing only those above it: ``suites`` (the suites and their cells, as data),
``records`` (what a run records), ``render`` (results.json, results.md, plots), ``runner``
(each cell in its own process, resumable, ``--jobs`` at a time).
"""

from exdistill.bench.records import CellRecord, suite_wall_seconds
from exdistill.bench.render import render_markdown
from exdistill.bench.runner import (
    CellContext,
    concurrency,
    expected_config_hashes,
    run_process,
    run_suite,
)
from exdistill.bench.suites import (
    BENCH_DATASETS,
    FULL,
    SUITES,
    Cell,
    Row,
    Suite,
    parse_only,
    plan,
    resolve_data_dir,
)

# Module globals that tests replace (``EXDISTILL``, ``usable_cpus``) are not re-exported: a
# copy bound here would take the patch while ``runner`` kept looking up its own.
__all__ = [
    "BENCH_DATASETS",
    "FULL",
    "SUITES",
    "Cell",
    "Row",
    "CellContext",
    "CellRecord",
    "Suite",
    "concurrency",
    "expected_config_hashes",
    "parse_only",
    "plan",
    "render_markdown",
    "resolve_data_dir",
    "run_process",
    "run_suite",
    "suite_wall_seconds",
]

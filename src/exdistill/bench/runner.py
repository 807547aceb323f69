"""Running a suite's cells, each in its own process, resumably.

Each cell runs as ``python -m exdistill distill|baseline``, so its peak resident memory is
measured alone and a crash — out of memory, a bad config — fails that cell only: it is recorded
with its error and the suite goes on. A cell's run directory is
``OUT/cells/<dataset>/ipc<k>/<method>``; a finished one is read back, never recomputed (unless
its config hash differs from what the code resolves now: then it is stale and rerun), so a
killed suite continues where it stopped (``--resume``); an unfinished one continues from its
own checkpoint. Failed cells are retried on resume.

``--jobs N`` runs N cells at a time, each process with ``OMP_NUM_THREADS`` = cores // N: on 2
cores two 1-thread processes of these small ConvNets get more done than one 2-thread process,
whose threads mostly wait on each other (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from exdistill import __version__
from exdistill.bench.records import CellRecord, Concurrency, _now
from exdistill.bench.render import describe, write_results
from exdistill.bench.suites import (
    BENCH_DATASETS,
    FULL,
    SELECTION,
    Cell,
    Suite,
    plan,
    resolve_data_dir,
)
from exdistill.distributed import usable_cpus
from exdistill.errors import ConfigError
from exdistill.io import write_json, write_text
from exdistill.memory import PEAK_FILE_ENV, read_peak
from exdistill.runs import is_finished


# ----------------------------------------------------------------------------- concurrency
def concurrency(jobs: int, environ: Mapping[str, str], cpus: int) -> Concurrency:
    """``jobs`` cells at a time on ``cpus`` cores: ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` =
    max(1, cpus // jobs) for each, unless the user set ``OMP_NUM_THREADS`` (then it is kept).
    One job leaves the environment as it is: that cell has the cores to itself, so it gets
    torch's default threads, like a plain ``exdistill distill``.

    Example: ``concurrency(2, {}, 2).env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}``.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    user = environ.get("OMP_NUM_THREADS", "").strip()
    if user:
        return Concurrency(jobs, int(user) if user.isdigit() else _default_threads())
    if jobs == 1:
        return Concurrency(1, _default_threads())
    threads = max(1, cpus // jobs)
    return Concurrency(
        jobs, threads, {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    )


def _default_threads() -> int:
    """The intra-op threads torch picks in a child started with this environment: what this
    process got (nothing in ``exdistill bench`` changes it)."""
    import torch

    return torch.get_num_threads()


class CellPool:
    """What cells running at the same time share: their child processes, so that an interrupted
    suite stops them all, and the prepare steps (MTT's experts), each run by one cell at a time
    and not again once it succeeded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()
        self._stopped = False
        self._step_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._steps_done: set[tuple[str, ...]] = set()

    @contextlib.contextmanager
    def child(self, proc: subprocess.Popen[bytes]) -> Iterator[None]:
        """Track ``proc`` while it runs; one started after ``stop()`` is killed at once."""
        with self._lock:
            self._children.add(proc)
            stopped = self._stopped
        if stopped:
            proc.kill()
        try:
            yield
        finally:
            with self._lock:
                self._children.discard(proc)

    def stop(self) -> None:
        """Kill every child running now or started from now on."""
        with self._lock:
            self._stopped = True
            children = list(self._children)
        for proc in children:
            proc.kill()  # a no-op for one already reaped (Popen polls first)

    def once(self, key: tuple[str, ...], step: Callable[[], ProcessResult]) -> ProcessResult | None:
        """``step()`` unless it already succeeded for ``key`` (then None). Callers with the same
        key wait for each other: two cells never train the same experts together."""
        with self._lock:
            lock = self._step_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._steps_done:
                return None
            result = step()
            if result.returncode == 0:
                self._steps_done.add(key)
            return result


# ----------------------------------------------------------------------------- commands
@dataclass
class CellContext:
    """What a cell's command needs besides the cell."""

    suite: Suite
    out: Path
    data_dir: str | None
    device: str
    concurrency: Concurrency = field(default_factory=Concurrency)
    pool: CellPool | None = None  # shared with the cells running at the same time
    # Evaluation mode: the suite directory whose finished sets are evaluated again (under
    # ``suite.protocol``) instead of distilled; baseline rows are recomputed under it.
    source: Path | None = None


def _cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.key


def _baseline_argv(cell: Cell, ctx: CellContext) -> list[str]:
    ds = BENCH_DATASETS.get(cell.dataset)
    kind = "full" if cell.method == FULL else "random"
    argv = ["baseline", kind, "--dataset", ds.loader, "--protocol", ctx.suite.protocol]
    argv += ["--repeats", str(ctx.suite.repeats), "--seed", str(ctx.suite.seed)]
    argv += ["--device", ctx.device, "--out", str(_cell_dir(ctx.out, cell))]
    if kind == "random":
        argv += ["--ipc", str(cell.ipc)]
    return argv + (["--data-dir", ctx.data_dir] if ctx.data_dir else [])


def _distill_argv(cell: Cell, ctx: CellContext) -> list[str]:
    ds, s = BENCH_DATASETS.get(cell.dataset), ctx.suite
    method, overrides = s.row(cell.method)
    argv = ["distill", "--method", method, "--dataset", ds.loader, "--ipc", str(cell.ipc)]
    argv += ["--preset", s.preset, "--protocol", s.protocol, "--repeats", str(s.repeats)]
    argv += ["--seed", str(s.seed), "--device", ctx.device, "--no-baselines", "--no-tsne"]
    argv += ["--out", str(_cell_dir(ctx.out, cell))]
    if ctx.data_dir:
        argv += ["--data-dir", ctx.data_dir]
    if overrides:
        config = _cell_dir(ctx.out, cell).with_suffix(".yaml")
        write_text(config, yaml.safe_dump({"method": overrides}, sort_keys=False))
        argv += ["--config", str(config)]
    return argv


def _evaluate_argv(cell: Cell, ctx: CellContext) -> list[str]:
    """A finished cell's synthetic set, evaluated again under the suite's protocol."""
    s = ctx.suite
    synset = _cell_dir(ctx.source, cell) / "synthetic"
    argv = ["evaluate", str(synset), "--protocol", s.protocol, "--repeats", str(s.repeats)]
    argv += ["--seed", str(s.seed), "--device", ctx.device, "--out", str(_cell_dir(ctx.out, cell))]
    return argv + (["--data-dir", ctx.data_dir] if ctx.data_dir else [])


def _experts_dir(cell: Cell, ctx: CellContext) -> Path:
    return ctx.out / "experts" / cell.dataset


def _mtt_argv(cell: Cell, ctx: CellContext) -> list[str]:
    """MTT needs expert trajectories: trained once per dataset (resumable), then shared."""
    return [*_distill_argv(cell, ctx), "--experts", str(_experts_dir(cell, ctx))]


def expected_config_hashes(cell: Cell, ctx: CellContext) -> set[str] | None:
    """The config hashes a distill cell computed now may carry (``None``: not a distill cell,
    or not resolvable here). A finished cell with another hash is stale: the code's presets or
    the suite's overrides changed since it ran. An MTT cell's hash names its experts by their
    manifest's digest, or by their path (the form cells on disk may carry): both name the
    same experts, so either one is current."""
    from exdistill.config import config_hash, to_dict
    from exdistill.methods import METHODS, resolve_config

    method, overrides = ctx.suite.row(cell.method)
    if cell.method in (FULL, *SELECTION) or method not in METHODS.names():
        return None
    if method == "mtt":
        overrides["experts"] = str(_experts_dir(cell, ctx))
    loader = BENCH_DATASETS.get(cell.dataset).loader
    try:
        cfg = resolve_config(method, ctx.suite.preset, loader, cell.ipc, overrides)
        return {config_hash(cfg), config_hash(to_dict(cfg))}
    except Exception:  # e.g. experts not trained yet, or unreadable: nothing to compare
        return None


# How each kind of cell is computed; any other method name is a plain ``distill``.
CELL_COMMANDS: dict[str, Callable[[Cell, CellContext], list[str]]] = {
    "random": _baseline_argv,
    FULL: _baseline_argv,
    "mtt": _mtt_argv,
}


def _experts_argv(cell: Cell, ctx: CellContext) -> list[str]:
    ds, s = BENCH_DATASETS.get(cell.dataset), ctx.suite
    argv = ["experts", "--dataset", ds.loader, "--preset", s.preset, "--seed", str(s.seed)]
    argv += ["--device", ctx.device, "--out", str(ctx.out / "experts" / cell.dataset)]
    argv += ["--resume"]
    return argv + (["--data-dir", ctx.data_dir] if ctx.data_dir else [])


# Work a cell needs first (shared between cells, itself resumable).
CELL_PREPARE: dict[str, Callable[[Cell, CellContext], list[str]]] = {"mtt": _experts_argv}


# ----------------------------------------------------------------------------- finished cells
def read_cell(cell: Cell, run_dir: Path, cached: bool) -> CellRecord:
    """The record of a finished cell, from its run directory."""
    m = json.loads((run_dir / "metrics.json").read_text())
    extra: dict[str, Any] = {}
    if (run_dir / "bench.json").is_file():
        extra = json.loads((run_dir / "bench.json").read_text())
    sim = m.get("update_similarity")
    return CellRecord(
        cell.dataset,
        cell.ipc,
        cell.method,
        "done",
        test_acc_mean=m.get("test_acc_mean"),
        test_acc_std=m.get("test_acc_std"),
        test_accs=list(m.get("test_accs", [])),
        val_acc_mean=m.get("val_acc_mean"),
        distill_seconds=m.get(
            "distill_seconds", 0.0 if cell.method in (FULL, *SELECTION) else None
        ),
        eval_seconds=m.get("eval_seconds", m.get("seconds")),
        wall_seconds=extra.get("wall_seconds"),
        peak_rss_gib=extra.get("peak_rss_gib"),
        jobs=extra.get("jobs"),
        threads=extra.get("threads"),
        update_similarity=sim.get("mean") if isinstance(sim, dict) else None,
        config_hash=m.get("config_hash"),
        library_version=m.get("library_version"),
        run_dir=str(run_dir),
        grid=str(run_dir / "grid.png") if (run_dir / "grid.png").is_file() else None,
        cached=cached,
        ior=m.get("ior"),
        hlr=m.get("hlr"),
        lrs=m.get("lrs"),
    )


# ----------------------------------------------------------------------------- processes
@dataclass
class ProcessResult:
    returncode: int
    peak_rss_gib: float | None
    wall_seconds: float
    tail: str


EXDISTILL = (sys.executable, "-m", "exdistill")  # the command a cell's argv is given to


def run_process(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    pool: CellPool | None = None,
) -> ProcessResult:
    """Run ``python -m exdistill ARGV`` with ``env`` added to this environment, output appended
    to ``log``; the child's own peak RSS. ``pool`` tracks the child while it runs.

    The peak is the one the child reports at exit (``exdistill.memory``: VmHWM of its own
    memory map); ``wait4``'s, which counts this process's size at fork, only if it reports none.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log.with_name(log.name + ".peak")
    peak_file.unlink(missing_ok=True)
    child_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        PEAK_FILE_ENV: str(peak_file),
        **(env or {}),
    }
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ exdistill {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen(
            [*EXDISTILL, *argv], stdout=fh, stderr=subprocess.STDOUT, env=child_env
        )
        tracked = pool.child(proc) if pool is not None else contextlib.nullcontext()
        try:
            with tracked:
                if hasattr(os, "wait4"):
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    peak = usage.ru_maxrss / 2**20  # KiB on Linux
                else:  # pragma: no cover - not Unix
                    proc.wait()
                    peak = None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    reported = read_peak(peak_file)
    peak_file.unlink(missing_ok=True)
    peak = reported if reported is not None else peak
    return ProcessResult(proc.returncode, peak, time.perf_counter() - t0, _tail(log))


def _tail(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    # The CLI's one-line error, else the last line (a traceback's exception).
    for ln in reversed(lines[-50:]):
        if ln.startswith("exdistill: error:"):
            return ln.removeprefix("exdistill: error:").strip()
    return lines[-1][-500:] if lines else ""


def _failure(result: ProcessResult) -> str:
    if result.returncode < 0:
        sig = signal.Signals(-result.returncode).name
        hint = " (out of memory?)" if result.returncode == -signal.SIGKILL else ""
        return f"killed by {sig}{hint}"
    return result.tail or f"exit status {result.returncode}"


# ----------------------------------------------------------------------------- running
def run_cell(cell: Cell, ctx: CellContext) -> CellRecord:
    """Compute one cell in a child process (or read it back when finished)."""
    from exdistill.methods import METHODS

    run_dir = _cell_dir(ctx.out, cell)
    stale = False
    if is_finished(run_dir):
        record = read_cell(cell, run_dir, cached=True)
        expected = expected_config_hashes(cell, ctx)
        if expected is None or record.config_hash is None or record.config_hash in expected:
            return record
        stale = True  # presets or overrides changed since it ran: recompute
    method = ctx.suite.row(cell.method)[0]
    distilled = cell.method not in (FULL, *SELECTION)
    if ctx.source is not None and distilled and not is_finished(_cell_dir(ctx.source, cell)):
        return CellRecord(
            cell.dataset,
            cell.ipc,
            cell.method,
            "skipped",
            error=f"not distilled yet in {ctx.source}",
        )
    if cell.method not in (FULL, *SELECTION) and method not in METHODS.names():
        return CellRecord(
            cell.dataset,
            cell.ipc,
            cell.method,
            "unavailable",
            error=f"method '{cell.method}' is not in this version",
        )
    log = run_dir.with_suffix(".log")
    pre = None if ctx.source is not None else _prepare(cell, ctx, log)
    if pre is not None and pre.returncode != 0:
        return CellRecord(
            cell.dataset,
            cell.ipc,
            cell.method,
            "failed",
            error=f"preparing: {_failure(pre)}",
            wall_seconds=pre.wall_seconds,
        )
    if ctx.source is not None and distilled:
        argv = _evaluate_argv(cell, ctx)
    else:
        argv = CELL_COMMANDS.get(method, _distill_argv)(cell, ctx)
    resumable = (
        ctx.source is None
        and not stale
        and (run_dir / "run.json").is_file()
        and cell.method not in (FULL, *SELECTION)
    )
    env, pool = ctx.concurrency.env, ctx.pool
    result = run_process(
        [*argv, "--resume"] if resumable else [*argv, "--overwrite"], log, env, pool
    )
    if resumable and result.returncode == 2 and "config differs" in result.tail:
        # The code's config changed since the cell started: its checkpoint is stale.
        result = run_process([*argv, "--overwrite"], log, env, pool)
    if result.returncode != 0 or not is_finished(run_dir):
        return CellRecord(
            cell.dataset,
            cell.ipc,
            cell.method,
            "failed",
            error=_failure(result),
            wall_seconds=round(result.wall_seconds, 1),
        )
    peak = None if result.peak_rss_gib is None else round(result.peak_rss_gib, 3)
    write_json(
        run_dir / "bench.json",
        {
            "wall_seconds": round(result.wall_seconds, 1),
            "peak_rss_gib": peak,
            "jobs": ctx.concurrency.jobs,
            "threads": ctx.concurrency.threads,
            "argv": argv,
        },
    )
    return read_cell(cell, run_dir, cached=False)


def _prepare(cell: Cell, ctx: CellContext, log: Path) -> ProcessResult | None:
    """Run the work the cell needs first (MTT: its dataset's experts); None when there is none,
    or when another cell of this suite run already did it (any --jobs)."""
    prepare = CELL_PREPARE.get(ctx.suite.row(cell.method)[0])
    if prepare is None:
        return None
    argv = prepare(cell, ctx)

    def step() -> ProcessResult:
        return run_process(argv, log, ctx.concurrency.env, ctx.pool)

    return step() if ctx.pool is None else ctx.pool.once(tuple(argv), step)


def run_suite(
    suite: Suite,
    out: str | Path,
    only: dict[str, set[str]] | None = None,
    resume: bool = False,
    data_dirs: dict[str, str] | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    cells_progress: Callable[[Iterable[Cell]], Iterable[Cell]] = lambda cells: cells,
    compute: bool = True,
    jobs: int = 1,
    eval_protocol: str | None = None,
    eval_repeats: int | None = None,
) -> list[CellRecord]:
    """Run (or continue) the suite's cells selected by ``only``; returns their records.

    ``eval_protocol``: evaluate the suite's finished sets in ``out`` again under that protocol
    (``eval_repeats`` networks each, default the suite's) instead of distilling, with its random
    and full-data rows recomputed under it; results go to ``out/protocols/<protocol>/`` and
    continue with ``resume`` like a suite (an evaluated cell is never recomputed: delete its
    directory after recomputing the cell it came from). Cells not distilled yet are skipped.

    results.json, results.md and the plots cover the whole suite — every finished cell on
    disk, the rest pending — and are rewritten after every cell. ``compute=False`` only
    rewrites them (``exdistill bench --report``). ``jobs`` > 1 runs that many cells at a time
    (``run_concurrently``): the same records, echoed as they finish rather than in plan order."""
    out = Path(out)
    source = None
    if eval_protocol is not None:
        from exdistill.evaluation import PROTOCOLS

        PROTOCOLS.get(eval_protocol)
        if not (out / "suite.json").is_file():
            raise ConfigError(f"out: {out} holds no suite to evaluate under {eval_protocol}")
        source, out = out, out / "protocols" / eval_protocol
        repeats = eval_repeats or suite.repeats
        suite = replace(suite, protocol=eval_protocol, repeats=repeats)
    settings = concurrency(jobs, os.environ, usable_cpus())
    cells = plan(suite, only)
    if not cells:
        raise ConfigError("--only leaves no cell of this suite to run")
    for key in data_dirs or {}:
        BENCH_DATASETS.get(key)
    _claim(out, suite, resume)
    records: dict[Cell, CellRecord] = {}
    # Wall time of every invocation that computed cells (a resumed suite keeps the earlier ones),
    # so the suite's total wall time is on record, not just the sum of its cells.
    invocations = _read_invocations(out) if resume or not compute else []
    this = {"started": _now(), "wall_seconds": 0.0, "jobs": settings.jobs, "cells_computed": 0}
    t0 = time.perf_counter()
    for cell in plan(suite):
        run_dir = _cell_dir(out, cell)
        records[cell] = read_cell(cell, run_dir, True) if is_finished(run_dir) else _pending(cell)
    if not compute:
        write_results(out, suite, list(records.values()), settings, invocations)
        return [records[c] for c in cells]
    dirs: dict[str, tuple[str | None, str | None]] = {
        ds: resolve_data_dir(ds, data_dirs or {}, data_root) for ds in suite.datasets
    }
    pool = CellPool()  # with one job too: a dataset's experts are prepared once per run

    def run(cell: Cell) -> CellRecord:
        data_dir, missing = dirs[cell.dataset]
        if missing:
            return CellRecord(cell.dataset, cell.ipc, cell.method, "skipped", error=missing)
        return run_cell(cell, CellContext(suite, out, data_dir, device, settings, pool, source))

    def finish(cell: Cell, record: CellRecord) -> None:
        records[cell] = record
        echo(describe(record))
        this["wall_seconds"] = round(time.perf_counter() - t0, 1)
        this["cells_computed"] += 0 if record.cached else 1
        write_results(out, suite, list(records.values()), settings, [*invocations, this])

    if jobs == 1:
        for cell in cells_progress(cells):
            finish(cell, run(cell))
    else:
        run_concurrently(cells, run, finish, pool, jobs, cells_progress)
    return [records[c] for c in cells]


def run_concurrently(
    cells: Sequence[Cell],
    run: Callable[[Cell], CellRecord],
    finish: Callable[[Cell, CellRecord], None],
    pool: CellPool,
    jobs: int,
    cells_progress: Callable[[Iterable[Cell]], Iterable[Cell]] = lambda cells: cells,
) -> None:
    """``run`` the cells ``jobs`` at a time, started in plan order; ``finish`` each as it ends.

    Worker threads only run a cell: start its processes and wait for them. ``finish``
    (echo, rewrite results.*) runs in this thread alone, one record at a time, and the
    progress bar advances with it. Cells sharing a prepare step wait for one another inside
    ``run`` (``CellPool.once``). On an error or Ctrl-C the cells not started are dropped and the
    running ones killed: their run directories stay resumable."""
    import importlib

    importlib.import_module("exdistill.methods")  # here, not in two workers at once
    ticks = iter(cells_progress(cells))
    next(ticks, None)  # the bar appears at 0 cells done
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bench-cell") as executor:
        futures = {executor.submit(run, cell): cell for cell in cells}  # a FIFO queue
        try:
            for future in as_completed(futures):
                finish(futures[future], future.result())
                next(ticks, None)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            pool.stop()
            raise


def _pending(cell: Cell) -> CellRecord:
    return CellRecord(cell.dataset, cell.ipc, cell.method, "pending")


def _claim(out: Path, suite: Suite, resume: bool) -> None:
    """A new suite directory, or (``resume``) one this suite made."""
    marker = out / "suite.json"
    if marker.is_file():
        if not resume:
            raise ConfigError(f"out: {out} holds a suite; continue it with --resume")
        saved = json.loads(marker.read_text()).get("suite")
        if saved != suite.name:
            raise ConfigError(f"out: {out} holds suite '{saved}', not '{suite.name}'")
        return
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"out: {out} exists and is not empty")
    write_json(marker, {"suite": suite.name, "created": _now(), "library_version": __version__})


def _read_invocations(out: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((out / "results.json").read_text()).get("invocations", []))
    except (OSError, ValueError):
        return []

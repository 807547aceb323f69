"""Results of a suite run: results.json, results.md (accuracy and cost tables per dataset), the
plots and the copied grids, and the one-line summary echoed for each cell."""

from __future__ import annotations

import os
import platform
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from exdistill import __version__
from exdistill.bench.records import CellRecord, Concurrency, _now, suite_wall_seconds
from exdistill.bench.suites import BENCH_DATASETS, FULL, Suite
from exdistill.io import write_json, write_text
from exdistill.scores import dd_ranking_scores
from exdistill.tables import best_rows, markdown_table, pct


def describe(r: CellRecord) -> str:
    where = f"{r.dataset} " + ("full data" if r.method == FULL else f"ipc {r.ipc} {r.method}")
    if r.status != "done":
        return f"{where}: {r.status}" + (f" — {r.error}" if r.error else "")
    cost = []
    if r.distill_seconds:
        cost.append(f"distill {r.distill_seconds:.0f} s")
    if r.eval_seconds is not None:
        cost.append(f"eval {r.eval_seconds:.0f} s")
    if r.peak_rss_gib is not None:
        cost.append(f"{r.peak_rss_gib:.2f} GiB")
    cached = ", cached" if r.cached else ""
    return f"{where}: {pct(r.test_acc_mean, r.test_acc_std)} % ({', '.join(cost)}{cached})"


# ----------------------------------------------------------------------------- outputs
def write_results(
    out: Path,
    suite: Suite,
    records: list[CellRecord],
    settings: Concurrency | None = None,
    invocations: list[dict[str, Any]] | None = None,
) -> None:
    """results.json, results.md, plots and grids; ``settings``: how this run runs its cells
    (each record also keeps how it ran); ``invocations``: wall time of each bench command that
    computed cells of this directory."""
    settings = settings or Concurrency()
    invocations = [i for i in invocations or [] if i.get("cells_computed")]
    done = [r for r in records if r.status == "done"]
    write_json(
        out / "results.json",
        {
            "suite": asdict(suite),
            "updated": _now(),
            "library_version": __version__,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "jobs": settings.jobs,
            "threads_per_cell": settings.threads,
            "invocations": invocations,
            "cells": [asdict(r) for r in records],
        },
    )
    write_text(out / "results.md", render_markdown(suite, records, invocations))
    _copy_grids(out, done)
    _plots(out, suite, done)


def render_markdown(
    suite: Suite, records: list[CellRecord], invocations: list[dict[str, Any]] | None = None
) -> str:
    """Per dataset: methods × ipc, test accuracy % mean ± std, best per column in bold."""
    lines = [
        f"# Benchmark suite `{suite.name}`",
        "",
        f"{suite.description}. Protocol `{suite.protocol}`, {suite.repeats} evaluation repeats, "
        f"seed {suite.seed}, preset `{suite.preset}`. Test accuracy %, mean ± std. Best per "
        f"column in bold (the full-data row is the upper bound, not a contender). "
        f"Updated {_now()}, exdistill {__version__}."
        + _ran_text(records, " Costs measured with {}.")
        + _wall_text(invocations or []),
    ]
    by_key = {(r.dataset, r.ipc, r.method): r for r in records}
    for ds in suite.datasets:
        ipcs = [i for i in suite.ipcs if any(r.dataset == ds and r.ipc == i for r in records)]
        methods = [
            m for m in suite.methods if any(r.dataset == ds and r.method == m for r in records)
        ]
        if not ipcs:
            continue
        lines += ["", f"## {BENCH_DATASETS.get(ds).label}", ""]
        rows = [[m] for m in methods]
        costs = [[m] for m in methods]
        for ipc in ipcs:
            cells = [by_key.get((ds, ipc, m)) for m in methods]
            means = [c.test_acc_mean if c and c.status == "done" else None for c in cells]
            best = best_rows(means)
            for i, c in enumerate(cells):
                text = _cell_text(c)
                rows[i].append(f"**{text}**" if i in best else text)
                costs[i].append(_cost_text(c))
        full = by_key.get((ds, 0, FULL))
        if full is not None:
            rows.append(["full data", *[_cell_text(full)] * len(ipcs)])
        header = ["method", *[f"ipc {i}" for i in ipcs]]
        lines.append(markdown_table(header, rows))
        caption = "Cost per cell: distillation s / evaluation s / peak memory GiB"
        ran = _ran_text([r for r in records if r.dataset == ds], " ({})")
        lines += ["", f"{caption}{ran}.", ""]
        lines.append(markdown_table(header, costs))
        lines += _lrs_table(header, methods, ipcs, by_key, ds)
    failed = [r for r in records if r.status in ("failed", "skipped", "unavailable")]
    if failed:
        lines += ["", "## Not computed", ""]
        lines += [f"- {r.dataset} ipc {r.ipc} {r.method}: {r.status} — {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def _ran_text(records: Iterable[CellRecord], template: str) -> str:
    """How the finished cells ran, e.g. "2 cells at a time, 1 thread each", put in
    ``template`` ("" when none is finished): their costs depend on it."""
    counts = Counter((r.jobs, r.threads) for r in records if r.status == "done")
    if not counts:
        return ""
    parts = [
        _setting_text(jobs, threads) + (f" ({n} cells)" if len(counts) > 1 else "")
        for (jobs, threads), n in counts.most_common()
    ]
    return template.format("; ".join(parts))


def _setting_text(jobs: int | None, threads: int | None) -> str:
    if jobs is None:
        return "setting not recorded"
    text = f"{jobs} cell{'s' if jobs != 1 else ''} at a time"
    if threads is not None:
        text += f", {threads} thread{'s' if threads != 1 else ''} each"
    return text


def _cell_text(r: CellRecord | None) -> str:
    if r is None or r.status == "pending":
        return "—"
    if r.status != "done":
        return r.status
    return pct(r.test_acc_mean, r.test_acc_std)


def _cost_text(r: CellRecord | None) -> str:
    if r is None or r.status != "done":
        return "—"

    def num(v: float | None, fmt: str) -> str:
        return "?" if v is None else format(v, fmt)

    return (
        f"{num(r.distill_seconds, '.0f')} / {num(r.eval_seconds, '.0f')} / "
        f"{num(r.peak_rss_gib, '.2f')}"
    )


def _lrs_table(
    header: list[str],
    methods: list[str],
    ipcs: list[int],
    by_key: dict[tuple[str, int, str], CellRecord],
    ds: str,
) -> list[str]:
    """The dataset's LRS table (after its accuracy and cost tables), or nothing when no cell has
    an LRS. A cell's LRS is its own (its metrics.json, from the baselines its run computed), else
    scored from its accuracy, the suite's random cell at the same ipc and the full-data row (the
    same protocol, repeats and seed as the baselines a distill run computes itself)."""
    full = by_key.get((ds, 0, FULL))
    full_acc = full.test_acc_mean if full is not None and full.status == "done" else None
    found: list[list[tuple[float, str] | None]] = [
        [_lrs(by_key.get((ds, ipc, m)), by_key.get((ds, ipc, "random")), full_acc) for ipc in ipcs]
        for m in methods
    ]
    sources = {v[1] for row in found for v in row if v is not None}
    if not sources:
        return []
    mixed = len(sources) > 1

    def text(v: tuple[float, str] | None) -> str:
        if v is None:
            return "—"
        return f"{v[0]:.3f}" + ("†" if mixed and v[1] == "own" else "")

    rows = [[m, *map(text, row)] for m, row in zip(methods, found, strict=True)]
    suite_source = "the cell's accuracy, the random row at the same ipc and the full-data row"
    if sources == {"own"}:
        source = "each cell's own baselines (its metrics.json)"
    elif not mixed:
        source = suite_source
    else:
        source = f"{suite_source}; † from the cell's own baselines (its metrics.json)"
    caption = (
        "DD-Ranking's label-robust score (LRS, 0–1, w = 0.5; docs/benchmarks.md) per cell, from "
        f"{source}. The random row scores itself (IOR 0): a method above it beats random."
    )
    return ["", caption, "", markdown_table(header, rows)]


def _lrs(
    cell: CellRecord | None, random: CellRecord | None, full_acc: float | None
) -> tuple[float, str] | None:
    """A finished cell's LRS and where it came from: ``"own"`` or ``"suite"``; None: not known."""
    if cell is None or cell.status != "done":
        return None
    if cell.lrs is not None:
        return cell.lrs, "own"
    if random is None or random.status != "done" or full_acc is None:
        return None
    if cell.test_acc_mean is None or random.test_acc_mean is None:
        return None
    return dd_ranking_scores(cell.test_acc_mean, random.test_acc_mean, full_acc)["lrs"], "suite"


def _wall_text(invocations: list[dict[str, Any]]) -> str:
    """' Wall time: …' over the bench commands that computed cells, or ''."""
    if not invocations:
        return ""
    total = suite_wall_seconds(invocations)
    cells = sum(i["cells_computed"] for i in invocations)
    runs = len(invocations)
    how = "one command" if runs == 1 else f"{runs} commands (resumed), summed"
    return f" Wall time: {_hours(total)} for {cells} computed cells, {how}."


def _hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _copy_grids(out: Path, records: list[CellRecord]) -> None:
    for r in records:
        if r.grid:
            dest = out / "grids" / f"{r.dataset}-ipc{r.ipc}-{r.method}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r.grid, dest)


def _plots(out: Path, suite: Suite, records: list[CellRecord]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exdistill.io import atomic_write

    for ds in suite.datasets:
        rows = [r for r in records if r.dataset == ds and r.method != FULL]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m in suite.methods:
            pts = sorted((r.ipc, r.test_acc_mean, r.test_acc_std) for r in rows if r.method == m)
            if pts:
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(
                    x,
                    [100 * v for v in y],
                    yerr=[100 * v for v in e],
                    marker="o",
                    capsize=3,
                    label=m,
                )
        full = [r for r in records if r.dataset == ds and r.method == FULL]
        if full:
            ax.axhline(100 * full[0].test_acc_mean, color="k", ls="--", lw=1, label="full data")
        ax.set(
            xscale="log",
            xlabel="images per class",
            ylabel="test accuracy %",
            title=BENCH_DATASETS.get(ds).label,
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        atomic_write(
            out / f"accuracy_vs_ipc_{ds}.png", lambda p, f=fig: f.savefig(p, dpi=110, format="png")
        )
        plt.close(fig)
    timed = [r for r in records if r.method != FULL and r.distill_seconds]
    if timed:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        markers = dict(zip(suite.datasets, "osD^v", strict=False))
        colors = {m: f"C{i}" for i, m in enumerate(suite.methods)}
        for r in timed:
            ax.scatter(
                r.distill_seconds,
                100 * r.test_acc_mean,
                c=colors.get(r.method, "k"),
                marker=markers.get(r.dataset, "o"),
                s=18,
            )
        for m, c in colors.items():
            ax.scatter([], [], c=c, label=m, s=18)
        ax.set(
            xscale="log",
            xlabel="distillation seconds",
            ylabel="test accuracy %",
            title="time vs accuracy (marker = dataset)",
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        atomic_write(
            out / "time_vs_accuracy.png", lambda p, f=fig: f.savefig(p, dpi=110, format="png")
        )
        plt.close(fig)

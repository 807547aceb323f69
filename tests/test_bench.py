"""The benchmark suite: planning, table rendering, failures recorded, resume without recompute."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from exdistill.bench import (
    FULL,
    Cell,
    CellRecord,
    Suite,
    parse_only,
    plan,
    render_markdown,
    run_suite,
)
from exdistill.errors import ConfigError
from exdistill.tables import best_rows, markdown_table, pct


def test_parse_only():
    assert parse_only("method=dc+idc,ipc=10") == {"method": {"dc", "idc"}, "ipc": {"10"}}
    assert parse_only(None) == {}
    for bad in ("color=red", "method", "ipc="):
        with pytest.raises(ConfigError, match="--only"):
            parse_only(bad)


def test_plan_orders_small_ipc_first_and_restricts_methods():
    suite = Suite("t", ("a", "b"), (1, 10), ("random", "mtt"), method_ipcs={"mtt": (1,)})
    keys = [c.key for c in plan(suite)]
    assert keys == [
        "a/ipc1/random",
        "a/ipc1/mtt",
        "b/ipc1/random",
        "b/ipc1/mtt",
        "a/ipc10/random",
        "b/ipc10/random",
        "a/full",
        "b/full",
    ]
    only = [c.key for c in plan(suite, parse_only("dataset=b,ipc=10"))]
    assert only == ["b/ipc10/random", "b/full"]  # the full-data row has no ipc


def test_tables_mark_the_best():
    assert best_rows([0.5, None, 0.7, 0.7]) == {2, 3}
    assert best_rows([None, None]) == set()
    assert pct(0.97123, 0.0031) == "97.12 ± 0.31" and pct(None) == "—"
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"

    suite = Suite("t", ("digits",), (1, 10), ("random", "dc", "idc"))
    records = [
        CellRecord("digits", 1, "random", "done", 0.50, 0.01),
        CellRecord("digits", 1, "dc", "done", 0.70, 0.02),
        CellRecord("digits", 1, "idc", "failed", error="out of memory"),
        CellRecord("digits", 10, "random", "done", 0.90, 0.01),
        CellRecord("digits", 10, "dc", "done", 0.85, 0.01),
        CellRecord("digits", 10, "idc", "pending"),
        CellRecord("digits", 0, FULL, "done", 0.99, 0.001),
    ]
    md = render_markdown(suite, records)
    assert "| dc | **70.00 ± 2.00** | 85.00 ± 1.00 |" in md
    assert "| random | 50.00 ± 1.00 | **90.00 ± 1.00** |" in md
    assert "| idc | failed | — |" in md
    assert "| full data | 99.00 ± 0.10 | 99.00 ± 0.10 |" in md  # not bold: an upper bound
    assert "digits ipc 1 idc: failed — out of memory" in md


def _mtime(path):
    return path.stat().st_mtime_ns


def test_suite_records_failures_goes_on_and_resumes_without_recompute(tmp_path):
    suite = Suite(
        "t",
        ("digits",),
        (1,),
        ("dc", "random", "idc"),
        protocol="idc-smoke",
        repeats=1,
        overrides={"dc": {"iterations": 0}, "idc": {"iterations": 1, "match_steps": 2}},
        full_data=False,
    )
    out = tmp_path / "suite"
    lines: list[str] = []
    records = run_suite(suite, out, echo=lines.append)
    status = {r.method: r for r in records}
    assert status["dc"].status == "failed" and "iterations" in status["dc"].error
    assert status["random"].status == "done" and status["idc"].status == "done"
    assert 0 <= status["idc"].test_acc_mean <= 1 and status["idc"].peak_rss_gib > 0
    results = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in results["cells"]] == ["failed", "done", "done"]
    assert (out / "results.md").is_file() and (out / "grids" / "digits-ipc1-idc.png").is_file()
    assert len(lines) == 3

    with pytest.raises(ConfigError, match="--resume"):
        run_suite(suite, out, echo=lines.append)

    # Half-finished: the idc cell never ran; random finished and must not be recomputed.
    shutil.rmtree(out / "cells" / "digits" / "ipc1" / "idc")
    random_metrics = out / "cells" / "digits" / "ipc1" / "random" / "metrics.json"
    before = _mtime(random_metrics)
    records = run_suite(suite, out, resume=True, echo=lines.append)
    status = {r.method: r for r in records}
    assert status["random"].cached and _mtime(random_metrics) == before
    assert status["idc"].status == "done" and not status["idc"].cached
    assert status["dc"].status == "failed"  # failures are retried, and fail again

    # --only runs a part; results.json still covers every finished cell of the suite.
    run_suite(suite, out, only=parse_only("method=random"), resume=True, echo=lines.append)
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert {c["method"]: c["status"] for c in cells} == {
        "dc": "pending",
        "random": "done",
        "idc": "done",
    }


def test_missing_data_is_skipped_not_failed(tmp_path):
    suite = Suite("t", ("cifar10-jpeg",), (1,), ("random",), full_data=False)
    records = run_suite(
        suite,
        tmp_path / "s",
        data_dirs={"cifar10-jpeg": str(tmp_path / "nowhere")},
        echo=lambda line: None,
    )
    assert [r.status for r in records] == ["skipped"]
    assert "not found" in records[0].error


def test_cell_key():
    assert Cell("digits", 10, "dc").key == "digits/ipc10/dc"
    assert Cell("digits", 0, FULL).key == "digits/full"


def test_a_finished_cell_with_another_config_is_stale_and_rerun(tmp_path):
    suite = Suite(
        "t",
        ("digits",),
        (1,),
        ("idc",),
        protocol="idc-smoke",
        repeats=1,
        overrides={"idc": {"iterations": 1, "match_steps": 1}},
        full_data=False,
    )
    out = tmp_path / "suite"
    first = run_suite(suite, out, echo=lambda line: None)[0]
    again = run_suite(suite, out, resume=True, echo=lambda line: None)[0]
    assert again.cached and again.config_hash == first.config_hash
    changed = dataclasses.replace(suite, overrides={"idc": {"iterations": 1, "match_steps": 2}})
    rerun = run_suite(changed, out, resume=True, echo=lambda line: None)[0]
    assert rerun.status == "done" and not rerun.cached
    assert rerun.config_hash != first.config_hash

"""The benchmark suite: planning, table rendering, failures recorded, resume without recompute."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exdistill import bench
from exdistill.bench import (
    FULL,
    Cell,
    CellRecord,
    Suite,
    concurrency,
    parse_only,
    plan,
    render_markdown,
    run_suite,
    runner,
)
from exdistill.errors import ConfigError
from exdistill.scores import normalise
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


def test_an_lrs_table_follows_each_datasets_accuracy_and_cost_tables(monkeypatch):
    suite = Suite("t", ("digits",), (1, 10), ("random", "dc", "idc"))
    records = [
        CellRecord("digits", 1, "random", "done", 0.50, 0.01),
        CellRecord("digits", 1, "dc", "done", 0.70, 0.02),
        CellRecord("digits", 1, "idc", "failed", error="out of memory"),
        CellRecord("digits", 10, "random", "done", 0.90, 0.01),
        CellRecord("digits", 10, "dc", "done", 0.85, 0.01),
        CellRecord("digits", 10, "idc", "done", 0.95, 0.01, lrs=0.4),  # scored by its own run
        CellRecord("digits", 0, FULL, "done", 0.99, 0.001),
    ]
    monkeypatch.setattr(bench.render, "_now", lambda: "now")  # two renders compared below
    md = render_markdown(suite, records)
    # w = 0.5: α = acc − (random + full) / 2; LRS = (e^α − e^−1) / (e − e^−1)
    lrs = lambda acc, random: f"{normalise(acc - (random + 0.99) / 2):.3f}"  # noqa: E731
    table = (
        "| method | ipc 1 | ipc 10 |\n|---|---|---|\n"
        f"| random | {lrs(0.50, 0.50)} | {lrs(0.90, 0.90)} |\n"
        f"| dc | {lrs(0.70, 0.50)} | {lrs(0.85, 0.90)} |\n"
        "| idc | — | 0.400† |"
    )
    assert table in md  # no full-data row: it is the upper bound LRS measures against
    assert "| dc | 0.250 |" in md  # α = 0.70 − 0.745 = −0.045, by hand
    caption = md.index("DD-Ranking's label-robust score (LRS")
    assert md.index("Cost per cell") < caption < md.index(table) < md.index("## Not computed")
    assert "random row at the same ipc and the full-data row; † from the cell's own" in md
    # everything else is as it was: without the LRS block, the same text byte for byte
    block = md[caption - 2 : md.index(table) + len(table)]
    lrs_table = bench.render._lrs_table
    monkeypatch.setattr(bench.render, "_lrs_table", lambda *args: [])
    assert md.replace(block, "") == render_markdown(suite, records)
    monkeypatch.setattr(bench.render, "_lrs_table", lrs_table)
    without_scores = [r for r in records if r.method != FULL and r.lrs is None]
    assert "LRS" not in render_markdown(suite, without_scores)  # nothing to score against
    only_own = [r for r in records if r.method == "idc"]
    assert "from each cell's own baselines (its metrics.json)." in render_markdown(suite, only_own)


def test_a_cell_reads_its_own_scores_from_metrics_json(tmp_path):
    metrics = {"test_acc_mean": 0.8, "test_acc_std": 0.0, "ior": 0.1, "hlr": 0.2, "lrs": 0.25}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    record = runner.read_cell(Cell("digits", 10, "dm"), tmp_path, cached=True)
    assert (record.ior, record.hlr, record.lrs) == (0.1, 0.2, 0.25)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc_mean": 0.8}))
    record = runner.read_cell(Cell("digits", 10, "dm"), tmp_path, cached=True)
    assert (record.ior, record.hlr, record.lrs) == (None, None, None)


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


# ----------------------------------------------------------------------------- --jobs
# Fake cells: the suite's real commands, run by a tiny script instead of ``python -m exdistill``.
# Each writes a finished run directory (or fails, for dc) and an event: when it ran, its thread
# variables, whether the experts were there. FAKE_TOGETHER=n makes a cell wait (up to 10 s)
# until n cells have started, so overlap is observed, not timed.
FAKE_EXDISTILL = """
import json, os, sys, time
from pathlib import Path

argv = sys.argv[1:]
opt = lambda name: argv[argv.index(name) + 1] if name in argv else None
kind, out, events = argv[0], Path(opt("--out")), Path(os.environ["FAKE_EVENTS"])
method = opt("--method") or (argv[1] if kind == "baseline" else kind)
stamp = f"{kind}-{os.getpid()}-{time.time_ns()}"
events.mkdir(parents=True, exist_ok=True)
(events / f"started-{stamp}").touch()
event = {"kind": kind, "method": method, "out": str(out), "start": time.time()}
event.update(omp=os.environ.get("OMP_NUM_THREADS"), mkl=os.environ.get("MKL_NUM_THREADS"))
if opt("--experts"):
    event["experts_ready"] = (Path(opt("--experts")) / "done").is_file()
together, deadline = int(os.environ.get("FAKE_TOGETHER", "0")), time.time() + 10
while len(list(events.glob("started-*"))) < together and time.time() < deadline:
    time.sleep(0.02)
event["saw_others"] = len(list(events.glob("started-*"))) >= together
time.sleep(float(os.environ.get(f"FAKE_SLEEP_{method}", "0")))
out.mkdir(parents=True, exist_ok=True)
if kind == "experts":
    time.sleep(0.5)  # long enough for a second mtt cell to want the experts too
    (out / "done").touch()
elif method != "dc":
    acc = 0.01 * len(method) + 0.001 * int(opt("--ipc") or 0)
    metrics = {"test_acc_mean": acc, "test_acc_std": 0.0, "test_accs": [acc], "eval_seconds": 1}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "run.json").write_text(json.dumps({"status": "done"}))
event["end"] = time.time()
(events / f"{stamp}.json").write_text(json.dumps(event))
if method == "dc":
    sys.exit("exdistill: error: fake failure")
"""


@pytest.fixture
def fake_cells(tmp_path, monkeypatch):
    """Cells run the fake script; returns a function reading the events of one suite run."""
    script = tmp_path / "fake_exdistill.py"
    script.write_text(FAKE_EXDISTILL)
    monkeypatch.setattr(runner, "EXDISTILL", (sys.executable, str(script)))

    def events_of(name: str) -> Callable[[], list[dict]]:
        monkeypatch.setenv("FAKE_EVENTS", str(tmp_path / "events" / name))
        return lambda: [
            json.loads(p.read_text()) for p in (tmp_path / "events" / name).glob("*.json")
        ]

    return events_of


def _comparable(r: CellRecord) -> dict:
    skip = {"run_dir", "grid", "wall_seconds", "peak_rss_gib", "jobs", "threads"}
    return {k: v for k, v in dataclasses.asdict(r).items() if k not in skip}


def test_jobs_2_gives_the_records_of_jobs_1(tmp_path, fake_cells):
    suite = Suite(
        "t", ("digits",), (1, 10), ("random", "dc", "idc", "mtt"), method_ipcs={"mtt": (1,)}
    )
    runs = {}
    for jobs in (1, 2):
        fake_cells(f"jobs{jobs}")
        lines: list[str] = []
        out = tmp_path / f"jobs{jobs}"
        records = run_suite(suite, out, echo=lines.append, jobs=jobs)
        runs[jobs] = (records, lines, json.loads((out / "results.json").read_text()))
    (serial, serial_lines, serial_json), (par, par_lines, par_json) = runs[1], runs[2]
    assert [(r.dataset, r.ipc, r.method) for r in par] == [
        (c.dataset, c.ipc, c.method) for c in plan(suite)
    ]
    assert [_comparable(r) for r in par] == [_comparable(r) for r in serial]
    assert {r.method: r.status for r in par if r.ipc == 1} == {
        "random": "done",
        "dc": "failed",
        "idc": "done",
        "mtt": "done",
    }
    assert "fake failure" in next(r.error for r in par if r.method == "dc")

    def no_rss(lines: list[str]) -> list[str]:  # peak memory varies from run to run
        return sorted(re.sub(r"[\d.]+ GiB", "GiB", line) for line in lines)

    assert no_rss(par_lines) == no_rss(serial_lines) and len(par_lines) == len(plan(suite))
    assert [c["method"] for c in par_json["cells"]] == [c["method"] for c in serial_json["cells"]]
    assert (serial_json["jobs"], par_json["jobs"]) == (1, 2)
    assert {r.jobs for r in par if r.status == "done"} == {2}


def test_jobs_2_runs_two_cells_at_once(tmp_path, fake_cells, monkeypatch):
    events = fake_cells("overlap")
    monkeypatch.setenv("FAKE_TOGETHER", "2")  # each cell waits until both have started
    suite = Suite("t", ("digits",), (1,), ("random", "idc"), full_data=False)
    records = run_suite(suite, tmp_path / "s", echo=lambda line: None, jobs=2)
    assert [r.status for r in records] == ["done", "done"]
    cells = events()
    assert len(cells) == 2 and all(e["saw_others"] for e in cells)
    assert max(e["start"] for e in cells) < min(e["end"] for e in cells)


def test_jobs_train_each_datasets_experts_once_before_its_mtt_cells(tmp_path, fake_cells):
    events = fake_cells("mtt")
    suite = Suite("t", ("digits", "fashion-mnist"), (1, 10), ("mtt",), full_data=False)
    records = run_suite(
        suite,
        tmp_path / "s",
        data_dirs={"fashion-mnist": str(tmp_path)},  # the fake cells read nothing
        echo=lambda line: None,
        jobs=4,  # all four cells start together: both of a dataset want its experts
    )
    assert [r.status for r in records] == ["done"] * 4
    experts = sorted(Path(e["out"]).name for e in events() if e["kind"] == "experts")
    assert experts == ["digits", "fashion-mnist"]
    mtt = [e for e in events() if e["kind"] == "distill"]
    assert len(mtt) == 4 and all(e["experts_ready"] for e in mtt)


def test_concurrency_sets_threads_per_cell_unless_the_user_did():
    assert concurrency(2, {}, 2).env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert concurrency(2, {}, 8).threads == 4 and concurrency(3, {}, 2).threads == 1
    kept = concurrency(2, {"OMP_NUM_THREADS": "3"}, 8)
    assert kept.env == {} and kept.threads == 3
    assert concurrency(1, {}, 8).env == {}  # one job: the environment untouched
    with pytest.raises(ConfigError, match="--jobs"):
        concurrency(0, {}, 2)


def test_cells_get_the_thread_variables(tmp_path, fake_cells, monkeypatch):
    suite = Suite("t", ("digits",), (1,), ("random", "idc"), full_data=False)
    monkeypatch.setattr(runner, "usable_cpus", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    events = fake_cells("set")
    records = run_suite(suite, tmp_path / "set", echo=lambda line: None, jobs=2)
    assert {(e["omp"], e["mkl"]) for e in events()} == {("2", "2")}
    assert {r.threads for r in records} == {2}
    results = json.loads((tmp_path / "set" / "results.json").read_text())
    assert (results["jobs"], results["threads_per_cell"]) == (2, 2)
    md = (tmp_path / "set" / "results.md").read_text()
    assert "Costs measured with 2 cells at a time, 2 threads each." in md
    assert "peak memory GiB (2 cells at a time, 2 threads each)." in md

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    events = fake_cells("kept")
    records = run_suite(suite, tmp_path / "kept", echo=lambda line: None, jobs=2)
    assert {e["omp"] for e in events()} == {"3"} and {r.threads for r in records} == {3}


def test_an_error_in_the_suite_stops_the_running_cells(tmp_path, fake_cells, monkeypatch):
    fake_cells("stop")
    monkeypatch.setenv("FAKE_SLEEP_idc", "60")
    suite = Suite("t", ("digits",), (1,), ("random", "idc"), full_data=False)

    def echo(line: str) -> None:
        raise RuntimeError("disk full")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="disk full"):
        run_suite(suite, tmp_path / "s", echo=echo, jobs=2)
    assert time.monotonic() - t0 < 30  # the sleeping idc cell was killed, not waited for


def test_peak_memory_is_the_childs_own_not_this_processs(tmp_path, monkeypatch) -> None:
    """wait4's ru_maxrss starts from the parent's size at fork; the child's VmHWM does not."""
    script = tmp_path / "child.py"
    script.write_text(
        "from exdistill.memory import report_peak_at_exit\n"
        "report_peak_at_exit()\n"
        "block = bytearray(64 * 2**20)\n"
        "block[:: 4096] = b'1' * (len(block) // 4096)\n"
    )
    monkeypatch.setattr(runner, "EXDISTILL", (sys.executable, str(script)))
    ballast = bytearray(2**30)  # 1 GiB resident in this process while the child starts
    ballast[::4096] = b"1" * (len(ballast) // 4096)
    result = runner.run_process([], tmp_path / "child.log")
    del ballast
    assert result.returncode == 0
    assert result.peak_rss_gib is not None
    assert 64 / 1024 < result.peak_rss_gib < 0.5  # the child's 64 MiB block, not our 1 GiB
    assert not (tmp_path / "child.log.peak").exists()


@pytest.mark.parametrize("dataset", ["digits", "fashion-mnist", "cifar10"])
def test_every_quick_network_of_the_cpu_suite_has_one_width(dataset):
    """The budget cut applies to every method alike: distillation, feature, filter, expert
    and evaluation networks all use QUICK_WIDTH under the quick presets."""
    from exdistill.evaluation import PROTOCOLS
    from exdistill.experts import resolve_expert_config
    from exdistill.methods import METHODS, resolve_config
    from exdistill.models import QUICK_WIDTH

    suite = bench.SUITES.get("cpu")
    widths = {"protocol": PROTOCOLS.get(suite.protocol).model_options["width"]}
    for method in suite.methods:
        if method == "random":
            continue
        for ipc in suite.ipcs:
            if method == "mtt":  # its config needs trained experts; its preset says the width
                preset = METHODS.get("mtt").presets("quick", dataset, ipc, {})
                widths[f"mtt {ipc}"] = preset["model_options"]["width"]
                continue
            cfg = resolve_config(method, "quick", dataset, ipc, suite.overrides.get(method))
            if method == "edd":
                widths[f"edd filter {ipc}"] = cfg.filter_model_options["width"]
                widths[f"edd base {ipc}"] = cfg.base_config["model_options"]["width"]
            else:
                widths[f"{method} {ipc}"] = cfg.model_options["width"]
    widths["experts"] = resolve_expert_config("quick", dataset).model_options["width"]
    assert set(widths.values()) == {QUICK_WIDTH}, widths


def test_each_bench_command_records_its_wall_time(tmp_path, fake_cells, monkeypatch):
    """results.json keeps the wall time of every command that computed cells (a resumed suite
    sums them in results.md); a command that computed nothing adds no entry."""
    suite = Suite("t", ("digits",), (1,), ("random", "idc"), full_data=False)
    out = tmp_path / "suite"
    fake_cells("wall")
    monkeypatch.setenv("FAKE_SLEEP_idc", "0.3")
    run_suite(suite, out, only=parse_only("method=random"), echo=lambda line: None)
    run_suite(suite, out, resume=True, echo=lambda line: None)
    run_suite(suite, out, resume=True, echo=lambda line: None)  # nothing left to compute
    run_suite(suite, out, resume=True, compute=False, echo=lambda line: None)  # --report
    runs = json.loads((out / "results.json").read_text())["invocations"]
    assert [r["cells_computed"] for r in runs] == [1, 1]
    assert runs[1]["wall_seconds"] >= 0.3 and all(r["jobs"] == 1 for r in runs)
    assert "for 2 computed cells, 2 commands (resumed), summed" in (out / "results.md").read_text()


# ----------------------------------------------------------------------------- labelled rows
def test_a_row_is_a_method_with_its_own_values_over_the_suites():
    suite = Suite(
        "t",
        ("digits",),
        (2,),
        ("idc", "idc-x4", "edd-dm"),
        overrides={"idc": {"match_steps": 1}, "edd": {"segment_evals": False}},
        rows={
            "idc-x4": bench.Row("idc", {"iterations": 8}),
            "edd-dm": bench.Row("edd", {"base": "dm", "base_config": {"iterations": 3}}),
        },
    )
    assert suite.row("idc") == ("idc", {"match_steps": 1})
    assert suite.row("idc-x4") == ("idc", {"match_steps": 1, "iterations": 8})
    method, values = suite.row("edd-dm")
    assert method == "edd" and values["base"] == "dm" and values["segment_evals"] is False
    ctx = runner.CellContext(suite, Path("/tmp/none"), None, "cpu")
    argv = runner._distill_argv(Cell("digits", 2, "edd-dm"), ctx)
    assert argv[argv.index("--method") + 1] == "edd"
    hashes = runner.expected_config_hashes(Cell("digits", 2, "idc-x4"), ctx)
    assert hashes and hashes != runner.expected_config_hashes(Cell("digits", 2, "idc"), ctx)


def test_the_ladder_scales_each_method_and_leaves_16x_at_ipc_50_out():
    ladder = bench.SUITES.get("ladder")
    cells = plan(ladder)
    labels = {c.method for c in cells}
    assert {"random", "idc-x1", "edd-x4", "dm-x16", "edd-dm-x16"} <= labels
    assert not any(c.ipc == 50 and c.method.endswith("-x16") for c in cells)
    assert ladder.row("idc-x16")[1]["iterations"] == 16 * ladder.row("idc-x1")[1]["iterations"]
    method, values = ladder.row("edd-dm-x4")
    assert (method, values["base"], values["base_config"]["iterations"]) == ("edd", "dm", 2000)


def test_the_ladder_table_compares_edd_with_its_base_at_the_same_rung(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ladder.py"
    spec = importlib.util.spec_from_file_location("ladder_script", path)
    ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ladder)
    cells = [
        {"dataset": "d", "ipc": 10, "method": "random", "status": "done",
         "test_acc_mean": 0.50, "test_acc_std": 0.0, "distill_seconds": 0.0},
        {"dataset": "d", "ipc": 10, "method": "idc-x4", "status": "done",
         "test_acc_mean": 0.60, "test_acc_std": 0.01, "distill_seconds": 40.0},
        {"dataset": "d", "ipc": 10, "method": "edd-x4", "status": "done",
         "test_acc_mean": 0.625, "test_acc_std": 0.01, "distill_seconds": 50.0},
        {"dataset": "d", "ipc": 10, "method": "edd-x1", "status": "done",
         "test_acc_mean": 0.45, "test_acc_std": 0.01, "distill_seconds": 12.0},
    ]  # fmt: skip
    text = ladder.table(cells)
    assert "| d | 10 | edd | 4× | 62.50 ± 1.00 | 50 | +2.50 vs idc | yes |" in text
    assert "| d | 10 | edd | 1× | 45.00 ± 1.00 | 12 | — | no |" in text  # no idc-x1 to compare


def test_a_finished_suite_is_evaluated_again_under_another_protocol(tmp_path):
    suite = Suite(
        "t",
        ("digits",),
        (1,),
        ("random", "idc", "dc"),
        protocol="idc-smoke",
        repeats=1,
        overrides={"idc": {"iterations": 1, "match_steps": 1}},
        full_data=False,  # a full-data row trains to convergence: too slow for this test
    )
    out = tmp_path / "suite"
    run_suite(suite, out, only=parse_only("method=random+idc"), echo=lambda line: None)
    again = run_suite(suite, out, echo=lambda line: None, eval_protocol="dc-quick", eval_repeats=2)
    by = {r.method: r for r in again}
    assert by["idc"].status == "done" and len(by["idc"].test_accs) == 2
    assert by["dc"].status == "skipped" and "not distilled" in by["dc"].error
    assert by["random"].status == "done" and by["random"].test_acc_mean is not None
    evaluated = json.loads(
        (out / "protocols/dc-quick/cells/digits/ipc1/idc/metrics.json").read_text()
    )
    assert evaluated["protocol"] == "dc-quick"
    assert evaluated["synset"].endswith("cells/digits/ipc1/idc/synthetic")
    table = (out / "protocols/dc-quick/results.md").read_text()
    assert "dc-quick" in table
    # resumable: nothing is recomputed
    third = run_suite(
        suite, out, resume=True, echo=lambda line: None, eval_protocol="dc-quick", eval_repeats=2
    )
    assert all(r.cached for r in third if r.status == "done")
    with pytest.raises(ConfigError, match="holds no suite"):
        run_suite(suite, tmp_path / "none", echo=lambda line: None, eval_protocol="dc-quick")


def test_the_tiny_suite_plans_edd_over_both_bases_at_ipc_10_only():
    tiny = bench.SUITES.get("tiny")
    keys = {c.key for c in plan(tiny)}
    assert "tiny-imagenet/ipc10/edd-dm" in keys and "tiny-imagenet/ipc1/edd" not in keys
    assert tiny.row("edd-dm")[1]["base"] == "dm"
    ctx = runner.CellContext(tiny, Path("/tmp/none"), None, "cpu")
    assert runner.expected_config_hashes(Cell("tiny-imagenet", 10, "edd-dm"), ctx)


def test_keep_records_copies_finished_runs_text_records_only(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "keep_records.py"
    spec = importlib.util.spec_from_file_location("keep_records_script", path)
    records = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(records)
    src = tmp_path / "sweep"
    done, running, resumed = (src / "idc" / f"seed{s}" for s in range(3))
    for run in (done, running, resumed):
        (run / "synthetic").mkdir(parents=True)
        (run / "run.json").write_text('{"status": "done"}')
        (run / "config.yaml").write_text("ipc: 10\n")
        (run / "synthetic" / "images.safetensors").write_bytes(b"\0" * 64)
        (run / "grid.png").write_bytes(b"\0" * 64)
    (done / "metrics.json").write_text("{}")
    (done / "variant.json").write_text("{}")
    # metrics.json of an earlier attempt, but the run was resumed and is not done again yet
    (resumed / "metrics.json").write_text("{}")
    (resumed / "run.json").write_text('{"status": "running"}')
    (src / "sweep.md").write_text("| table |")
    (src / "idc" / "seed0.log").write_text("log")
    # a suite nested in it (--eval-protocol): its tables, not a stray .json elsewhere
    nested = src / "protocols" / "idc"
    nested.mkdir(parents=True)
    for name in ("suite.json", "results.json", "results.md"):
        (nested / name).write_text("{}")
    (src / "idc" / "notes.json").write_text("{}")
    written = records.keep(src, tmp_path / "kept")
    got = sorted(str(p.relative_to(tmp_path / "kept")) for p in written)
    assert got == [
        "idc/seed0/config.yaml",
        "idc/seed0/metrics.json",
        "idc/seed0/run.json",
        "idc/seed0/variant.json",
        "protocols/idc/results.json",
        "protocols/idc/results.md",
        "protocols/idc/suite.json",
        "sweep.md",
    ]

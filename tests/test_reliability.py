"""Reliability (DESIGN.md §6): kill and resume bitwise, resume checks, safe checkpoints, NaN guard.

The kill tests start ``python -m exdistill distill`` in a subprocess, SIGKILL it once its
checkpoint record shows the wanted point, resume in process, and compare with an uninterrupted
run. Budgets are tiny (digits, ipc 2, width 16, 8 × 4 matching steps, dc-quick, one repeat) and
``write_report`` is stubbed (its t-SNE costs ≈ 4 s a run and is not under test here).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from exdistill.checkpoint import RECORD_FILE, Checkpointer
from exdistill.cli import main
from exdistill.errors import DataError, NumericalError
from exdistill.io import read_jsonl
from exdistill.synthetic import SyntheticSet

TINY = ["--ipc", "2", "--repeats", "1", "--no-baselines", "--set", "run.protocol=dc-quick"]
GRAD = ["model_options.width=16", "iterations=8", "match_steps=4", "checkpoint_every=1"]
IDC = ["distill", "--method", "idc", *TINY]
IDC += [a for kv in GRAD for a in ("--set", f"method.{kv}")]
EDD = ["distill", "--method", "edd", "--segments", "1,1", *TINY]
EDD += [a for kv in GRAD for a in ("--set", f"method.base_config.{kv}")]
EDD += ["--set", "method.filter.max_steps=30", "--set", "method.filter_model_options.width=16"]


@contextlib.contextmanager
def quiet_env(cache: Path):
    """One thread (as the killed subprocess), a private cache, no report pictures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXDISTILL_CACHE", str(cache))
        mp.setattr("exdistill.report.write_report", lambda run_dir, **kw: run_dir)
        try:
            yield mp
        finally:
            torch.set_num_threads(before)


@pytest.fixture
def env(monkeypatch):
    """No report pictures (conftest.py gives every test a private cache and one thread)."""
    monkeypatch.setattr("exdistill.report.write_report", lambda run_dir, **kw: run_dir)
    return monkeypatch


def run_cli(argv: list) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def kill_when(argv: list, out: Path, cache: Path, segment: int) -> dict:
    """Run the CLI in a subprocess; SIGKILL it once a checkpoint of ``segment`` has an outer
    iteration ≥ 1 done. Returns that checkpoint's meta."""
    env = {**os.environ, "EXDISTILL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    log = open(out.parent / f"{out.name}.stderr", "w+")  # noqa: SIM115 - read back on failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "exdistill", *map(str, argv), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    record, deadline = out / "checkpoint" / RECORD_FILE, time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"finished before the kill: {log.seek(0) or log.read()}"
            with contextlib.suppress(FileNotFoundError):
                meta = json.loads(record.read_text())["meta"]
                if meta["segment"] == segment and meta["iteration"] >= 1:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return meta
            time.sleep(0.02)
        raise AssertionError("no checkpoint within 120 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def tensors(run: Path, name: str = "synthetic/synthetic.safetensors") -> dict:
    return load_file(str(run / name))


def without_seconds(obj):
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def kill_resume_and_compare(
    argv: list, root: Path, segment: int, by_dir: bool = False
) -> tuple[Path, Path, dict]:
    """Kill, resume, compare; ``by_dir``: resume as ``exdistill distill --resume RUN_DIR`` alone
    (the run's config.yaml supplies every setting)."""
    a, b, cache = root / "killed", root / "straight", root / "cache"
    meta = kill_when(argv, a, cache, segment)
    assert json.loads((a / "run.json").read_text())["status"] == "running"
    assert not (a / "synthetic").exists()  # the kill landed mid-distillation
    before = json.loads((a / "checkpoint" / "checkpoint.json").read_text())["elapsed_seconds"]
    assert before > 0  # the checkpoint holds the seconds distilled before the kill
    with quiet_env(cache):
        resume = [argv[0], "--resume", a] if by_dir else [*argv, "--out", a, "--resume"]
        code, _, err = run_cli(resume)
        assert code == 0, err
        code, _, err = run_cli([*argv, "--out", b])
        assert code == 0, err
    for name in ("synthetic/synthetic.safetensors", "initial.safetensors"):
        ta, tb = tensors(a, name), tensors(b, name)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    # the log was cut back to the checkpoint: no duplicates, same records as the straight run
    assert without_seconds(read_jsonl(a / "log.jsonl")) == without_seconds(
        read_jsonl(b / "log.jsonl")
    )
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["resumed_at"] == {"segment": meta["segment"], "iteration": meta["iteration"]}
    assert metrics["distill_seconds"] > before  # the whole run's time, not the resumed tail
    return a, b, meta


# ----------------------------------------------------------------------------- kill and resume
@pytest.fixture(scope="module")
def idc_runs(tmp_path_factory) -> tuple[Path, Path, dict]:
    return kill_resume_and_compare(IDC, tmp_path_factory.mktemp("idc"), segment=0)


def test_idc_killed_and_resumed_equals_an_uninterrupted_run(idc_runs) -> None:
    a, b, meta = idc_runs
    assert 1 <= meta["iteration"] < 8
    assert json.loads((a / "run.json").read_text()) == {"status": "done"}
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["test_accs"] == mb["test_accs"]


def test_edd_killed_in_the_second_segment_resumes_bitwise(tmp_path: Path) -> None:
    a, b, meta = kill_resume_and_compare(EDD, tmp_path, segment=1, by_dir=True)
    assert 1 <= meta["iteration"] < 4 and len(meta["records"]) == 1  # budgets 4 + 4
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert without_seconds(ma["segments"]) == without_seconds(mb["segments"])
    assert ma["test_accs"] == mb["test_accs"]


class Killed(Exception):
    pass


class DiesAfter(Checkpointer):
    """A checkpointer whose process "dies" right after its n-th save (in process, cheap)."""

    def __init__(self, directory: Path, n: int) -> None:
        super().__init__(directory)
        self.n = n

    def save(self, state, meta) -> None:
        super().save(state, meta)
        self.n -= 1
        if self.n == 0:
            raise Killed


SMALL = {"iterations": 4, "match_steps": 2, "checkpoint_every": 1, "model_options": {"width": 16}}
LIBRARY_CASES = {
    # DC: θ trained on S between matches, SGD momentum on the images
    "dc": ({**SMALL, "net_epochs": 2}, 2, (0, 2)),
    # EDD with fresh (filtered) initial images and a random drop order; dies inside segment 1
    "edd": (
        {
            "segments": (1, 1),
            "init_from": "filtered",
            "drop_order": "random",
            "base_config": SMALL,
            "filter": {"max_steps": 20},
            "filter_model_options": {"width": 16},
        },
        4,  # saves: segment 0 after iterations 1 and 2, its boundary, segment 1 after 1
        (1, 1),
    ),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_library_resume_is_bitwise_for_dc_and_filtered_edd(name: str, tmp_path: Path) -> None:
    from exdistill.data import load_dataset
    from exdistill.methods import METHODS, DistillContext, resolve_config

    overrides, deaths, (segment, iteration) = LIBRARY_CASES[name]
    cfg = resolve_config(name, "quick", "digits", 2, overrides)
    digits = load_dataset("digits")

    def run(ckpt):
        return METHODS.get(name).run(DistillContext(digits, 2, 0, checkpoint=ckpt), cfg)

    with pytest.raises(Killed):
        run(DiesAfter(tmp_path / "a", deaths))
    meta = Checkpointer(tmp_path / "a").load().meta
    assert (meta["segment"], meta["iteration"]) == (segment, iteration)
    resumed, straight = run(Checkpointer(tmp_path / "a")), run(None)
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert torch.equal(resumed.synthetic.segments, straight.synthetic.segments)
    assert torch.equal(resumed.initial_images, straight.initial_images)
    assert resumed.records == straight.records


# ----------------------------------------------------------------------------- resume checks
def test_resume_with_another_config_is_refused(idc_runs, env) -> None:
    a, _, _ = idc_runs
    before = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    code, out, err = run_cli([*IDC, "--set", "method.lr_img=0.1", "--out", a, "--resume"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "config differs" in err and "method.lr_img: 0.005 → 0.1" in err
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == before


def test_resume_of_a_finished_run_recomputes_nothing(idc_runs, env) -> None:
    a, _, _ = idc_runs
    before = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    code, out, err = run_cli([*IDC, "--out", a, "--resume"])
    assert code == 0, err
    metrics = json.loads((a / "metrics.json").read_text())
    assert f"{100 * metrics['test_acc_mean']:.2f}" in out  # the summary is printed again
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == before


def test_resume_needs_a_run(tmp_path: Path, env) -> None:
    code, out, err = run_cli([*IDC, "--out", tmp_path / "none", "--resume"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "holds no run to resume" in err and not (tmp_path / "none").exists()


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path, env) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli([*IDC, "--out", tmp_path / "none", "--resume", "--overwrite"])
    assert exit_.value.code == 2 and not (tmp_path / "none").exists()


def test_damaged_checkpoint_stops_resume_with_one_line(idc_runs, tmp_path: Path, env) -> None:
    run = tmp_path / "run"
    shutil.copytree(idc_runs[0], run)
    (run / "run.json").write_text('{"status": "running"}')
    record = json.loads((run / "checkpoint" / RECORD_FILE).read_text())
    state = run / "checkpoint" / record["tensors"]
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    code, out, err = run_cli([*IDC, "--out", run, "--resume"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "checksum mismatch" in err


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoint_round_trip_keeps_two_slots_and_sweeps_temp_files(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "ck", log_records=lambda: 7)
    assert ckpt.load() is None
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ".state-0.safetensors.x1.tmp").write_bytes(b"a save killed midway")
    gen = torch.Generator().manual_seed(1)
    state = {"x": torch.randn(3, 2), "rng": gen.get_state(), "ok": torch.tensor([True, False])}
    for i in range(3):
        ckpt.save({**state, "i": torch.tensor([i])}, {"segment": 0, "iteration": i})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        RECORD_FILE,
        "state-0.safetensors",
        "state-1.safetensors",
    ]
    loaded = Checkpointer(tmp_path / "ck").load()
    assert loaded.meta == {"segment": 0, "iteration": 2} and loaded.log_records == 7
    assert all(torch.equal(loaded.tensors[k], v) for k, v in state.items())
    assert torch.Generator().set_state(loaded.tensors["rng"]).initial_seed() == 1
    # a kill after the tensor file was renamed, before the record: the record's slot is intact
    other = {"state-0.safetensors", "state-1.safetensors"} - {
        json.loads((tmp_path / "ck" / RECORD_FILE).read_text())["tensors"]
    }
    (tmp_path / "ck" / other.pop()).write_bytes(b"half a file")
    assert Checkpointer(tmp_path / "ck").load().meta["iteration"] == 2


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "truncated", "record"])
def test_bad_checkpoint_files_raise_data_error_and_run_nothing(kind: str, tmp_path: Path) -> None:
    import hashlib

    ckpt = Checkpointer(tmp_path / "ck")
    ckpt.save({"x": torch.ones(4)}, {"segment": 0, "iteration": 1})
    record_path = tmp_path / "ck" / RECORD_FILE
    record = json.loads(record_path.read_text())
    state, marker = tmp_path / "ck" / record["tensors"], tmp_path / "executed"
    if kind == "pickle":
        state.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "torch.save":
        torch.save(Payload(marker), state)
    elif kind == "truncated":
        state.write_bytes(state.read_bytes()[:20])
    if kind == "record":
        record_path.write_text(record_path.read_text()[:30])
    else:  # a matching digest, so the safetensors reader itself must refuse the file
        record["sha256"] = hashlib.sha256(state.read_bytes()).hexdigest()
        record_path.write_text(json.dumps(record))
    with pytest.raises(DataError) as err:
        Checkpointer(tmp_path / "ck").load()
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_checkpoint_with_nan_is_never_written(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "ck")
    ckpt.save({"x": torch.ones(2)}, {"segment": 0, "iteration": 1})
    with pytest.raises(NumericalError, match="'x' holds NaN/Inf at segment 0, iteration 2"):
        ckpt.save({"x": torch.tensor([1.0, float("nan")])}, {"segment": 0, "iteration": 2})
    loaded = Checkpointer(tmp_path / "ck").load()
    assert loaded.meta["iteration"] == 1 and torch.equal(loaded.tensors["x"], torch.ones(2))


# ----------------------------------------------------------------------------- numerical guard
@pytest.mark.parametrize(
    ("where", "call", "message"),
    [
        ("loss", 10, "matching loss is nan at segment 0, iteration 2, step 1"),
        ("images", 12, "synthetic images hold NaN/Inf after segment 0, iteration 2"),
    ],
)
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    where: str, call: int, message: str, tmp_path: Path, env
) -> None:
    from exdistill.methods import gradient

    real, calls = gradient.match_and_backward, []

    def poisoned(*args, **kwargs):  # 4 matching steps per outer iteration
        loss = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            if where == "loss":
                return float("nan")
            kwargs["inputs"][0].grad.fill_(float("nan"))  # the last step: images go NaN
        return loss

    env.setattr(gradient, "match_and_backward", poisoned)
    run = tmp_path / "run"
    code, out, err = run_cli([*IDC, "--out", run])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
    assert "the last good checkpoint (segment 0, before iteration 2) was kept" in err
    loaded = Checkpointer(run / "checkpoint").load()
    assert loaded.meta["iteration"] == 2
    assert torch.isfinite(loaded.tensors["syn.images"]).all()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "synthetic").exists()


SAVE_LOOP = """
import sys, torch
from exdistill.synthetic import SyntheticSet
out = sys.argv[1]
i = 0
while True:  # every save holds images all equal to i: a torn write would mix values
    n = 200
    syn = SyntheticSet(torch.full((n, 3, 32, 32), float(i)), torch.arange(n) % 10,
                       dataset={"class_names": [str(c) for c in range(10)]}, info={"i": i})
    syn.save(out)
    print(i, flush=True)
    i += 1
"""


@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_killed_during_a_save_loop_leaves_a_whole_set(tmp_path: Path, delay: float) -> None:
    out = tmp_path / "set"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVE_LOOP, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline()  # at least one save finished
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    syn = SyntheticSet.load(out)  # whole files only: loads, and every image is one value
    value = syn.images.flatten()[0].item()
    assert torch.all(syn.images == value)
    assert syn.info["i"] >= value - 1  # the sidecar is whole too (at most one save behind)

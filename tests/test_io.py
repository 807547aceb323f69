"""Atomic writes and JSON-lines logs: a killed run never leaves a half-written file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exdistill.io import append_jsonl, atomic_write, read_jsonl, write_bytes, write_json, write_text


class Boom(Exception):
    pass


def half_then_raise(path: Path) -> None:
    with open(path, "w") as f:
        f.write("half of the ")
        f.flush()
        raise Boom("killed midway")


def test_atomic_write_creates_parents_and_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    assert atomic_write(target, lambda p: p.write_text("hello")) == target
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failed_write_leaves_no_temp_file_and_no_target(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(Boom):
        atomic_write(target, half_then_raise)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"old": True})
    before = target.read_bytes()
    with pytest.raises(Boom):
        atomic_write(target, half_then_raise)
    assert target.read_bytes() == before  # never a partial target
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    def interrupted(path: Path) -> None:
        path.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_write_helpers(tmp_path: Path) -> None:
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    write_text(tmp_path / "t.txt", "é")
    write_json(tmp_path / "j.json", {"a": [1, 2.5], "p": tmp_path})  # non-JSON types as str
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text() == "é"
    text = (tmp_path / "j.json").read_text()
    assert text.endswith("\n")
    assert json.loads(text) == {"a": [1, 2.5], "p": str(tmp_path)}
    write_json(tmp_path / "j.json", [1])  # overwrite in place
    assert json.loads((tmp_path / "j.json").read_text()) == [1]


def test_jsonl_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "log.jsonl"
    assert read_jsonl(path) == []
    records = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(3)]
    for r in records:
        append_jsonl(path, r)
    assert read_jsonl(path) == records


def test_read_jsonl_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 0})
    append_jsonl(path, {"step": 1})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # a run killed mid-write
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]

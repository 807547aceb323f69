"""``benchmarks/two_protocols.py``: the same sets under two protocols beside published numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _results(path: Path, protocol: str, cells: list[dict], wall: float = 0.0) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = [{"status": "done", "test_acc_std": 0.01, "eval_seconds": 120.0, **c} for c in cells]
    body = {"suite": {"protocol": protocol}, "invocations": [{"wall_seconds": wall}], "cells": done}
    (path / "results.json").write_text(json.dumps(body))


def test_table_pairs_each_set_with_its_other_protocol_and_paper(
    tmp_path, monkeypatch, load_benchmark
):
    bench = load_benchmark("two_protocols")
    cell = {"dataset": "cifar10-jpeg", "ipc": 10}
    _results(
        tmp_path,
        "idc-quick",
        [
            {**cell, "method": "idc", "test_acc_mean": 0.46},
            {**cell, "method": "random", "test_acc_mean": 0.32},
            {**cell, "method": "dc", "test_acc_mean": 0.39},  # not re-evaluated: no row
        ],
    )
    _results(
        tmp_path / "protocols" / "idc",
        "idc",
        [
            {**cell, "method": "idc", "test_acc_mean": 0.55},
            {**cell, "method": "random", "test_acc_mean": 0.30},
            {**cell, "ipc": 50, "method": "idc", "test_acc_mean": 0.60},  # another ipc
        ],
        wall=600.0,
    )
    text, means = bench.table(tmp_path, "idc")
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, random, idc (in the methods' order)
    assert lines[2].startswith("| cifar10-jpeg | random | 32.00 ± 1.00 | 30.00 ± 1.00 | 26.0")
    idc = lines[3].split(" | ")
    assert idc[1:7] == ["idc", "46.00 ± 1.00", "55.00 ± 1.00", "67.5 ± 0.5", "+9.00", "+12.5"]
    assert abs(means["cifar10-jpeg"] - 3.5) < 1e-9  # (+9 − 2) / 2
    monkeypatch.setattr(sys, "argv", ["two_protocols.py", str(tmp_path)])
    bench.main()

"""``benchmarks/validation_sweep.py``: its table keeps the variants of earlier invocations."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _finished_run(root: Path, label: str, seed: int, val_accs: list[float]) -> None:
    run = root / label / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {"models": {"convnet": {"val_accs": val_accs}}, "distill_seconds": 10.0}
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_report_merges_new_variants_into_the_earlier_table(tmp_path, monkeypatch, load_benchmark):
    sweep = load_benchmark("validation_sweep")
    _finished_run(tmp_path, "a", 0, [0.5, 0.7])
    _finished_run(tmp_path, "b", 0, [0.8, 0.8])
    _finished_run(tmp_path, "b", 1, [0.6, 0.6])

    def report(*variants: str) -> dict:
        argv = ["validation_sweep.py", "--out", str(tmp_path), "--seeds", "0,1", "--report"]
        for v in variants:
            argv += ["--variant", v]
        monkeypatch.setattr(sys, "argv", argv)
        sweep.main()
        return json.loads((tmp_path / "sweep.json").read_text())

    first = report("a=idc")
    assert first["a"]["per_seed"] == {"0": 0.6} and first["a"]["val_acc_std"] == 0.0
    second = report("b=dm:iterations=5")
    assert list(second) == ["a", "b"]  # the earlier variant stays, in its place
    assert second["a"] == first["a"]
    assert second["b"]["overrides"] == {"iterations": 5}
    assert abs(second["b"]["val_acc_mean"] - 0.7) < 1e-9
    assert abs(second["b"]["val_acc_std"] - 0.1) < 1e-9
    table = (tmp_path / "sweep.md").read_text()
    assert "| a | 60.00" in table and "| b | 70.00 ± 10.00 | 80.00, 60.00 |" in table

"""Two bench suite directories side by side: test accuracy and cell time of every cell both ran.

    python benchmarks/compare_suites.py runs/bench-cpu runs/bench-cpu-w32 [--labels "w64,w32"]

For a change to the quick presets (such as the network width) this shows what it cost in
accuracy and what it saved in time, cell by cell. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cells(path: str) -> dict[tuple[str, int, str], dict]:
    results = json.loads((Path(path) / "results.json").read_text())
    return {
        (c["dataset"], c["ipc"], c["method"]): c for c in results["cells"] if c["status"] == "done"
    }


def _acc(c: dict) -> str:
    return f"{100 * c['test_acc_mean']:.2f} ± {100 * c['test_acc_std']:.2f}"


def _minutes(c: dict) -> float:
    return ((c.get("distill_seconds") or 0) + (c.get("eval_seconds") or 0)) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--labels", default="A,B")
    args = parser.parse_args()
    la, lb = args.labels.split(",")
    a, b = _cells(args.a), _cells(args.b)
    print(f"| dataset | ipc | method | {la} acc | {lb} acc | Δ points | {la} min | {lb} min |")
    print("|---|---|---|---|---|---|---|---|")
    for key in [k for k in b if k in a]:
        ca, cb = a[key], b[key]
        delta = 100 * (cb["test_acc_mean"] - ca["test_acc_mean"])
        ipc = "full" if key[1] == 0 else key[1]
        print(
            f"| {key[0]} | {ipc} | {key[2]} | {_acc(ca)} | {_acc(cb)} | {delta:+.2f} | "
            f"{_minutes(ca):.1f} | {_minutes(cb):.1f} |"
        )


if __name__ == "__main__":
    main()

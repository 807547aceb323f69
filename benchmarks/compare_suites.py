"""Two bench suite directories side by side: test accuracy and cell time of every cell both ran.

    python benchmarks/compare_suites.py runs/bench-cpu runs/bench-cpu-w32 [--labels "w64,w32"]

For a change to the quick presets (such as the network width) this shows what it cost in
accuracy and what it saved in time, cell by cell. Prints one Markdown table.
"""

from __future__ import annotations

import argparse

from exdistill.bench.records import finished_cells, load_results
from exdistill.tables import markdown_table, pct


def _minutes(c: dict) -> float:
    return ((c.get("distill_seconds") or 0) + (c.get("eval_seconds") or 0)) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--labels", default="A,B")
    args = parser.parse_args()
    la, lb = args.labels.split(",")
    a, b = (finished_cells(load_results(p)) for p in (args.a, args.b))
    rows = []
    for key in [k for k in b if k in a]:
        ca, cb = a[key], b[key]
        delta = 100 * (cb["test_acc_mean"] - ca["test_acc_mean"])
        rows.append(
            [
                key[0],
                "full" if key[1] == 0 else key[1],
                key[2],
                pct(ca["test_acc_mean"], ca["test_acc_std"]),
                pct(cb["test_acc_mean"], cb["test_acc_std"]),
                f"{delta:+.2f}",
                f"{_minutes(ca):.1f}",
                f"{_minutes(cb):.1f}",
            ]
        )
    header = ["dataset", "ipc", "method", f"{la} acc", f"{lb} acc", "Δ points"]
    print(markdown_table([*header, f"{la} min", f"{lb} min"], rows))


if __name__ == "__main__":
    main()

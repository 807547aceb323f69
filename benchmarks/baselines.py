"""Random-subset (ipc 1, 10, 50) and full-data accuracy under one protocol, per dataset.

    python benchmarks/baselines.py --out runs/baselines [--protocol idc-quick] [--repeats 3]

Datasets: built-in digits, Fashion-MNIST (IDX) and CIFAR-10 (JPEG ImageFolder) from
``--data-root`` (default ``../shared/data``; skipped when absent). Prints a Markdown table and
writes it with every cell's metrics to ``OUT/baselines.md`` and ``OUT/baselines.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from exdistill.baselines import baseline
from exdistill.data import load_dataset
from exdistill.data.load import cache_root
from exdistill.io import write_json, write_text

DATASETS = (
    ("digits", "digits", None),
    ("Fashion-MNIST", "fashion-mnist", "fashion-mnist"),
    ("CIFAR-10 (JPEG)", "imagefolder", "cifar10-jpeg"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--protocol", default="idc-quick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ipcs", default="1,10,50")
    parser.add_argument("--only", help="comma-separated dataset keys to run (e.g. digits)")
    args = parser.parse_args()
    out = Path(args.out)
    ipcs = [int(i) for i in args.ipcs.split(",")]
    results, rows = {}, []
    for label, name, sub in DATASETS:
        if args.only and name not in args.only.split(","):
            continue
        data_dir = None if sub is None else Path(args.data_root) / sub
        if data_dir is not None and not data_dir.exists():
            print(f"skip {label}: {data_dir} not found")
            continue
        dataset = load_dataset(name, data_dir)
        cells = {}
        for kind, ipc in [("random", i) for i in ipcs] + [("full", 0)]:
            t = time.perf_counter()
            res = baseline(
                kind, dataset, ipc, args.protocol, args.repeats, 0, cache_dir=cache_root()
            )
            key = f"{kind}-{ipc}" if kind == "random" else "full"
            cells[key] = {**res.to_dict(), "wall_seconds": round(time.perf_counter() - t, 1)}
            print(
                f"{label} {key}: {100 * res.mean:.2f} ± {100 * res.std:.2f} "
                f"({cells[key]['wall_seconds']} s)",
                flush=True,
            )
        results[label] = cells
        row = [label] + [_fmt(cells[f"random-{i}"]) for i in ipcs] + [_fmt(cells["full"])]
        rows.append("| " + " | ".join(row) + " |")
    header = "| dataset | " + " | ".join(f"random ipc {i}" for i in ipcs) + " | full data |"
    rule = "|---" * (len(ipcs) + 2) + "|"
    table = "\n".join([header, rule, *rows])
    note = (
        f"\nTest accuracy (%), mean ± std over {args.repeats} repeats, protocol "
        f"`{args.protocol}`, seed 0.\n"
    )
    write_text(out / "baselines.md", table + "\n" + note)
    write_json(out / "baselines.json", results)
    print(table + note)


def _fmt(cell: dict) -> str:
    return f"{100 * cell['test_acc_mean']:.2f} ± {100 * cell['test_acc_std']:.2f}"


if __name__ == "__main__":
    main()

"""Where a bench suite's time went: cell time per dataset × ipc, from its results.json.

    python benchmarks/bench_budget.py runs/bench-cpu-w32 [--doc docs/benchmarks.md]

Prints a Markdown table (cells done, distillation, evaluation and cell wall minutes per dataset
and ipc, with the sums) and the suite's recorded wall time (``invocations``, if the bench that
wrote it records them). With ``--doc`` the table replaces the text between
``<!-- budget:start -->`` and ``<!-- budget:end -->`` in that file.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from exdistill.bench import suite_wall_seconds
from exdistill.bench.records import load_results
from exdistill.tables import markdown_table


def table(results: dict) -> str:
    sums: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    pending: dict[tuple[str, int], list[str]] = defaultdict(list)
    for c in results["cells"]:
        key = (c["dataset"], c["ipc"])
        if c["status"] != "done":
            pending[key].append(c["method"])
            continue
        s = sums[key]
        s[0] += 1
        s[1] += (c.get("distill_seconds") or 0) / 60
        s[2] += (c.get("eval_seconds") or 0) / 60
        s[3] += (c.get("wall_seconds") or 0) / 60
    order = results["suite"]["datasets"]  # the suite's order; the full-data row last
    keys = sorted({*sums, *pending}, key=lambda k: (order.index(k[0]), k[1] == 0, k[1]))
    rows, total = [], [0, 0.0, 0.0, 0.0]
    for key in keys:
        s = sums[key]
        total = [a + b for a, b in zip(total, s, strict=True)]
        ipc = "full" if key[1] == 0 else str(key[1])
        minutes = [f"{m:.0f}" for m in s[1:]]
        rows.append([key[0], ipc, s[0], *minutes, ", ".join(pending[key]) or "—"])
    rows.append(["**all**", "", total[0], *(f"{m:.0f}" for m in total[1:]), ""])
    header = "dataset,ipc,cells done,distill min,eval min,cell wall min,not done".split(",")
    text = markdown_table(header, rows)
    runs = results.get("invocations") or []
    if runs:
        wall = suite_wall_seconds(runs) / 60
        text += (
            f"\n\nSuite wall time: {wall:.0f} min over {len(runs)} command(s) "
            f"(--jobs {', '.join(str(r['jobs']) for r in runs)})."
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_dir")
    parser.add_argument("--doc", help="Markdown file with budget:start/end markers to update")
    args = parser.parse_args()
    results = load_results(args.suite_dir)
    text = table(results)
    print(text)
    if args.doc:
        doc = Path(args.doc)
        new, n = re.subn(
            r"<!-- budget:start -->.*?<!-- budget:end -->",
            lambda _: f"<!-- budget:start -->\n{text}\n<!-- budget:end -->",
            doc.read_text(),
            flags=re.S,
        )
        if n != 1:
            raise SystemExit(f"{doc}: no budget:start/end markers")
        doc.write_text(new)


if __name__ == "__main__":
    main()

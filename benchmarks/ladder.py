"""Accuracy against budget from a ``ladder`` suite: one plot per dataset and ipc, one table.

    exdistill bench --suite ladder --out runs/ladder --data-root ../shared/data --jobs 2
    python benchmarks/ladder.py runs/ladder            # → runs/ladder/ladder.md, ladder-*.png

Each method is a line through its rungs (1×, 4×, 16× the quick preset's rounds): test accuracy
(mean ± std over the evaluation networks) against the cell's distillation seconds, with the
random subset as a horizontal band. The table gives, per dataset and ipc, every rung's accuracy
and seconds, EDD's margin over IDC (and EDD over DM's over DM) at the same rung, i.e. at equal
compute, and where each method first reaches the random subset. Cells not finished yet are
left out (the suite is resumable; rerun this script as it fills).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from exdistill.bench.records import finished_cells, load_results
from exdistill.io import write_text
from exdistill.tables import markdown_table, pct

RUNG = re.compile(r"^(?P<method>.+)-x(?P<scale>\d+)$")
PAIRS = (("edd", "idc"), ("edd-dm", "dm"))  # (EDD over a base, that base)


def load_cells(out: Path) -> list[dict[str, Any]]:
    """Finished cells; those re-evaluated under another protocol (``--eval-protocol``) carry
    no distillation seconds, so the plot takes them from the suite's own cells."""
    cells = list(finished_cells(load_results(out)).values())
    source = out.parent.parent / "results.json" if out.parent.name == "protocols" else None
    if source is not None and source.is_file():
        seconds = {
            (c["dataset"], c["ipc"], c["method"]): c["distill_seconds"]
            for c in load_results(source.parent)["cells"]
        }
        for c in cells:
            if c.get("distill_seconds") is None:
                c["distill_seconds"] = seconds.get((c["dataset"], c["ipc"], c["method"]))
    return cells


def rungs(cells: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, dict[int, dict]]]:
    """(dataset, ipc) → method → scale → cell."""
    out: dict[tuple[str, int], dict[str, dict[int, dict]]] = {}
    for cell in cells:
        match = RUNG.match(cell["method"])
        if match is None:
            continue
        key = (cell["dataset"], cell["ipc"])
        out.setdefault(key, {}).setdefault(match["method"], {})[int(match["scale"])] = cell
    return out


def random_cell(cells: list[dict[str, Any]], dataset: str, ipc: int) -> dict | None:
    return next(
        (c for c in cells if (c["dataset"], c["ipc"], c["method"]) == (dataset, ipc, "random")),
        None,
    )


def table(cells: list[dict[str, Any]]) -> str:
    rows = []
    for (dataset, ipc), methods in sorted(rungs(cells).items()):
        rnd = random_cell(cells, dataset, ipc)
        for method, by_scale in sorted(methods.items()):
            base = dict(PAIRS).get(method)
            for scale, cell in sorted(by_scale.items()):
                margin = "—"
                other = methods.get(base, {}).get(scale) if base else None
                if other is not None:
                    diff = 100 * (cell["test_acc_mean"] - other["test_acc_mean"])
                    margin = f"{diff:+.2f} vs {base}"
                above = "—"
                if rnd is not None:
                    above = "yes" if cell["test_acc_mean"] >= rnd["test_acc_mean"] else "no"
                rows.append(
                    [
                        dataset,
                        ipc,
                        method,
                        f"{scale}×",
                        pct(cell["test_acc_mean"], cell["test_acc_std"]),
                        "—"
                        if cell["distill_seconds"] is None
                        else f"{cell['distill_seconds']:.0f}",
                        margin,
                        above,
                    ]
                )
        if rnd is not None:
            row = [dataset, ipc, "random", "—", pct(rnd["test_acc_mean"], rnd["test_acc_std"])]
            rows.append([*row, "0", "—", "—"])
    header = ["dataset", "ipc", "method", "rounds", "test acc (%)", "distill s"]
    return markdown_table([*header, "margin at equal compute", "≥ random"], rows)


def plot(cells: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (dataset, ipc), methods in sorted(rungs(cells).items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, by_scale in sorted(methods.items()):
            pts = [(k, c) for k, c in sorted(by_scale.items()) if c["distill_seconds"]]
            xs = [c["distill_seconds"] for _, c in pts]
            ys = [100 * c["test_acc_mean"] for _, c in pts]
            es = [100 * (c["test_acc_std"] or 0) for _, c in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
            for (scale, _), x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(f"{scale}×", (x, y), textcoords="offset points", xytext=(4, 4))
        rnd = random_cell(cells, dataset, ipc)
        if rnd is not None:
            mean, std = 100 * rnd["test_acc_mean"], 100 * (rnd["test_acc_std"] or 0)
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.2)
            ax.axhline(mean, color="grey", linestyle="--", label="random subset")
        ax.set_xscale("log")
        ax.set_xlabel("distillation seconds (2 cores, one cell per core)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}, ipc {ipc}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"ladder-{dataset}-ipc{ipc}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_dir", type=Path, help="the ladder suite's --out directory")
    args = parser.parse_args()
    cells = load_cells(args.suite_dir)
    text = table(cells)
    write_text(args.suite_dir / "ladder.md", text + "\n")
    paths = plot(cells, args.suite_dir)
    print(text)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()

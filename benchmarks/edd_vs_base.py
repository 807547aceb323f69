"""EDD against its base at equal budget: same seed, same initial images, same protocol.

    # standalone: base, EDD and EDD with λ = 0, each distilled here
    python benchmarks/edd_vs_base.py --out runs/edd-vs-idc --dataset digits --ipcs 10,50
    # from a finished `exdistill bench` directory: its idc, edd and random cells are reused,
    # only EDD with λ = 0 is distilled (same preset, protocol, overrides, seed and repeats)
    python benchmarks/edd_vs_base.py --out runs/edd-vs-idc-cpu --suite runs/bench-cpu-w32 \\
        --dataset fashion-mnist --ipcs 10,50 --data-root ../shared/data

For each ipc: the base (``--base``, default idc), EDD with the default λ and EDD with λ = 0.
Prints and writes a Markdown table (``OUT/comparison.md``) with test accuracy (mean ± std), the
random-subset baseline, update similarity and the number of real images forgotten per segment.
Finished λ = 0 runs are reused, so a killed run continues.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exdistill.bench.records import load_results
from exdistill.io import write_json, write_text
from exdistill.pipeline import RunConfig, distill
from exdistill.tables import pct

HEADER = (
    "| ipc | method | test acc (%) | random subset (%) | update similarity | "
    "forgotten per segment | distill s |\n|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="digits", help="a loader, or a suite's dataset key")
    parser.add_argument("--data-dir")
    parser.add_argument("--data-root", help="with --suite: where the suite's datasets live")
    parser.add_argument("--suite", help="a finished `exdistill bench` directory to reuse")
    parser.add_argument("--base", default="idc")
    parser.add_argument("--ipcs", default="10,50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--no-lambda0", action="store_true", help="with --suite: table only")
    args = parser.parse_args()
    out = Path(args.out)
    source = SuiteSource(args) if args.suite else LocalSource(args)
    rows, cells = [], {}
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        variants = list(source.variants(ipc))
        random_acc = source.random(ipc)
        for label, m in variants:
            cells[f"{label} ipc {ipc}"] = m
            forgot = [s.get("forgotten") for s in m.get("segments", [])]
            forgot_text = ", ".join("—" if f is None else str(f) for f in forgot) or "—"
            sim = (m.get("update_similarity") or {}).get("mean")
            rows.append(
                f"| {ipc} | {label} | {_acc(m)} | {random_acc} | "
                f"{'—' if sim is None else f'{sim:.3f}'} | {forgot_text} | "
                f"{m['distill_seconds']:.0f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join([HEADER, *rows])
    note = f"\n{source.describe()}; test split.\n"
    write_text(out / "comparison.md", table + "\n" + note)
    write_json(out / "comparison.json", cells)
    print(table + note)


class LocalSource:
    """Every variant distilled here, each with its random-subset baseline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._random: dict[int, str] = {}

    def _run(self, ipc: int, method: str) -> RunConfig:
        a = self.args
        return RunConfig(
            method=method,
            dataset=a.dataset,
            data_dir=a.data_dir,
            ipc=ipc,
            preset=a.preset,
            seed=a.seed,
            repeats=a.repeats,
        )

    def variants(self, ipc: int):
        base = self.args.base
        for label, method, overrides in (
            (base, base, {}),
            ("edd", "edd", {"base": base}),
            ("edd λ=0", "edd", {"base": base, "reg_weight": 0.0}),
        ):
            tag = label.replace(" ", "").replace("λ=", "-lambda")
            out = Path(self.args.out) / f"{tag}-ipc{ipc}"
            m = distill(self._run(ipc, method), overrides, out, overwrite=True).metrics
            self._random[ipc] = _acc(m["baselines"]["random"])
            yield label, m

    def random(self, ipc: int) -> str:
        return self._random[ipc]

    def describe(self) -> str:
        a = self.args
        return f"{a.dataset}, preset {a.preset}, {a.repeats} evaluation repeats, seed {a.seed}"


class SuiteSource:
    """The base, EDD and random cells of a bench suite; EDD with λ = 0 distilled alike."""

    def __init__(self, args: argparse.Namespace) -> None:
        from exdistill.bench import BENCH_DATASETS, SUITES, resolve_data_dir

        self.args = args
        self.root = Path(args.suite)
        record = load_results(self.root)
        self.suite = SUITES.get(record["suite"]["name"])
        self.dataset = BENCH_DATASETS.get(args.dataset)
        data_dir, missing = resolve_data_dir(args.dataset, {}, args.data_root)
        if missing:
            raise SystemExit(f"{args.dataset}: {missing}")
        self.data_dir = args.data_dir or data_dir

    def _cell(self, ipc: int, method: str) -> dict[str, Any]:
        path = self.root / "cells" / self.args.dataset / f"ipc{ipc}" / method / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (run that suite cell first)")
        return json.loads(path.read_text())

    def variants(self, ipc: int):
        yield self.args.base, self._cell(ipc, self.args.base)
        yield "edd", self._cell(ipc, "edd")
        if self.args.no_lambda0:
            return
        s = self.suite
        run = RunConfig(
            method="edd",
            dataset=self.dataset.loader,
            data_dir=self.data_dir,
            ipc=ipc,
            preset=s.preset,
            protocol=s.protocol,
            seed=s.seed,
            repeats=s.repeats,
            baselines=False,
        )
        overrides = {**s.overrides.get("edd", {}), "reg_weight": 0.0}
        out = Path(self.args.out) / f"edd-lambda0-ipc{ipc}"
        started = (out / "run.json").is_file()  # finished or killed: continue it
        yield "edd λ=0", distill(run, overrides, out, resume=started).metrics

    def random(self, ipc: int) -> str:
        return _acc(self._cell(ipc, "random"))

    def describe(self) -> str:
        s = self.suite
        return (
            f"{self.dataset.label}, suite `{s.name}` cells from {self.root} (preset {s.preset}, "
            f"protocol {s.protocol}, {s.repeats} evaluation repeats, seed {s.seed})"
            + ("" if self.args.no_lambda0 else " and EDD with λ = 0 run alike")
        )


def _acc(m: dict) -> str:
    return pct(m["test_acc_mean"], m["test_acc_std"])


if __name__ == "__main__":
    main()

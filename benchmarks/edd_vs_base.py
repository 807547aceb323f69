"""EDD against its base at equal budget: same seed, same initial images, same protocol.

    python benchmarks/edd_vs_base.py --out runs/edd-vs-idc --dataset digits --ipcs 10,50

For each ipc: the base (``--base``, default idc), EDD with the default λ and EDD with λ = 0, all
with the quick preset and ``--repeats`` evaluation repeats. Prints and writes a Markdown table
with test accuracy (mean ± std), the random-subset baseline, update similarity and the number of
real images forgotten per segment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exdistill.io import write_json, write_text
from exdistill.pipeline import RunConfig, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--base", default="idc")
    parser.add_argument("--ipcs", default="10,50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    out = Path(args.out)
    rows, cells = [], {}
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        variants = [
            (args.base, args.base, {}),
            ("edd", "edd", {"base": args.base}),
            ("edd λ=0", "edd", {"base": args.base, "reg_weight": 0.0}),
        ]
        for label, method, overrides in variants:
            run = RunConfig(
                method=method,
                dataset=args.dataset,
                data_dir=args.data_dir,
                ipc=ipc,
                preset=args.preset,
                seed=args.seed,
                repeats=args.repeats,
            )
            tag = label.replace(" ", "").replace("λ=", "-lambda")
            m = distill(run, overrides, out / f"{tag}-ipc{ipc}", overwrite=True).metrics
            cells[f"{label} ipc {ipc}"] = m
            forgot = [s.get("forgotten") for s in m.get("segments", [])]
            forgot_text = ", ".join("—" if f is None else str(f) for f in forgot) or "—"
            sim = (m.get("update_similarity") or {}).get("mean")
            rows.append(
                f"| {ipc} | {label} | {_acc(m)} | {_acc(m['baselines']['random'])} | "
                f"{'—' if sim is None else f'{sim:.3f}'} | {forgot_text} | "
                f"{m['distill_seconds']:.0f} |"
            )
            print(rows[-1], flush=True)
    header = (
        "| ipc | method | test acc (%) | random subset (%) | update similarity | "
        "forgotten per segment | distill s |\n|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *rows])
    note = (
        f"\n{args.dataset}, preset {args.preset}, {args.repeats} evaluation repeats, "
        f"seed {args.seed}; test split.\n"
    )
    write_text(out / "comparison.md", table + "\n" + note)
    write_json(out / "comparison.json", cells)
    print(table + note)


def _acc(m: dict) -> str:
    return f"{100 * m['test_acc_mean']:.2f} ± {100 * m['test_acc_std']:.2f}"


if __name__ == "__main__":
    main()

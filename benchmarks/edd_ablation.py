"""EDD ablation on the VALIDATION split: λ, drop, drop order, segment size, image lr, one at a time.

    python benchmarks/edd_ablation.py --out runs/ablation-digits --dataset digits --ipc 10

Every variant changes one setting of the default EDD config (λ 0.5, drop 0.7, confident order,
default segments) and is distilled with the same seed, preset and budget; each is judged by the
accuracy of ``--repeats`` fresh networks on the validation split (10 % of the training data,
stratified). The pipeline also computes each run's test accuracy (it is in the variant's
metrics.json), but this script never reads it: the table and the choice of defaults use
validation accuracy only. Finished variants are reused (``OUT/<variant>/metrics.json``), so a
killed run continues; ``--only 0,2,4`` runs a subset (two processes with disjoint subsets use
two cores). EDD's per-segment evaluations are off (an analysis the table does not use).

Writes ``OUT/ablation.md`` and ``OUT/ablation.json``: validation accuracy mean ± std, update
similarity, forgotten images per segment and distillation time for each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from exdistill.pipeline import RunConfig, distill
from exdistill.tables import pct, publish_table

DEFAULT = "default (λ 0.5, drop 0.7, confident)"


def variants(ipc: int) -> list[tuple[str, dict[str, Any]]]:
    half = (ipc - ipc // 2, ipc // 2)
    small = max(1, ipc // 5)
    return [
        (DEFAULT, {}),
        ("λ 0", {"reg_weight": 0.0}),
        ("λ 0.1", {"reg_weight": 0.1}),
        ("λ 1", {"reg_weight": 1.0}),
        ("drop 0.5", {"drop": 0.5}),
        ("drop 0.9", {"drop": 0.9}),
        ("drop order random", {"drop_order": "random"}),
        (f"segments of {small}", {"segment_ipc": small}),
        (f"segments {half[0]},{half[1]}", {"segments": list(half)}),
        (f"one segment ({ipc}) = base", {"segments": [ipc]}),
        ("image lr by total ipc", {"lr_ipc": "total"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--base", default="idc")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--only", help="comma-separated variant indices to run (0 = default)")
    args = parser.parse_args()
    out = Path(args.out)
    chosen = variants(args.ipc)
    if args.only:
        chosen = [chosen[int(i)] for i in args.only.split(",")]
    cells: dict[str, Any] = {}
    rows = []
    for label, overrides in chosen:
        tag = label.split(" (")[0].replace(" ", "-").replace(",", "-").replace("λ", "lambda")
        run_dir = out / tag
        if (run_dir / "metrics.json").is_file():
            m = json.loads((run_dir / "metrics.json").read_text())
        else:
            run = RunConfig(
                method="edd",
                dataset=args.dataset,
                data_dir=args.data_dir,
                ipc=args.ipc,
                preset=args.preset,
                seed=args.seed,
                repeats=args.repeats,
                baselines=False,
            )
            method = {"base": args.base, "segment_evals": False, **overrides}
            m = distill(run, method, run_dir, overwrite=True).metrics
        vals = m["models"][next(iter(m["models"]))]["val_accs"]
        cells[label] = {
            "overrides": overrides,
            "val_accs": vals,
            "val_acc_mean": statistics.fmean(vals),
            "val_acc_std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "update_similarity": (m.get("update_similarity") or {}).get("mean"),
            "forgotten": [s.get("forgotten") for s in m.get("segments", [])],
            "distill_seconds": m["distill_seconds"],
        }
        c = cells[label]
        forgot = ", ".join("—" if f is None else str(f) for f in c["forgotten"]) or "—"
        sim = c["update_similarity"]
        rows.append(
            [
                label,
                pct(c["val_acc_mean"], c["val_acc_std"]),
                "—" if sim is None else f"{sim:.3f}",
                forgot,
                f"{c['distill_seconds']:.0f}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    header = ["variant", "val acc (%)", "update similarity", "forgotten per segment", "distill s"]
    note = (
        f"EDD over {args.base} on {args.dataset}, ipc {args.ipc}, preset {args.preset}, seed "
        f"{args.seed}, {args.repeats} evaluation repeats on the validation split (test accuracy is "
        f"not used). One distillation per variant."
    )
    publish_table(out, "ablation", header, rows, note, cells)


if __name__ == "__main__":
    main()

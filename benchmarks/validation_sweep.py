"""Compare method settings on the VALIDATION split, over several distillation seeds.

    python benchmarks/validation_sweep.py --out runs/sweep-fmnist10 --dataset fashion-mnist \
        --data-dir ../shared/data/fashion-mnist --ipc 10 --seeds 0,1 \
        --variant "random=random" --variant "idc f2=idc" --variant "idc f1=idc:factor=1"

A variant is ``LABEL=METHOD[:key=value,key=value]`` (values parsed as YAML; ``;`` separates list
items, e.g. ``segments=5;5``; a dotted key sets a nested value, e.g. ``base_config.factor=1``).
Every variant is distilled once per seed with the same preset, and each set is judged by the
validation accuracy of ``--repeats`` fresh networks (10 % of the training data, stratified).
The pipeline also computes test accuracy (in each run's
metrics.json); this script never reads it, so the choice it informs is made on validation only.

A seed's score is the mean over its evaluation networks; the table gives the mean ± std of those
per-seed scores (seed-to-seed spread is what decides whether a difference is real) and every
per-seed score. Finished runs are reused (``OUT/<variant>/seed<S>/metrics.json``), so a killed
sweep continues where it stopped; ``--shard 0/2`` and ``--shard 1/2`` split the runs between
two processes (give each ``--threads 1`` on 2 cores).

Writes ``OUT/sweep.md`` and ``OUT/sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

import torch
import yaml

from exdistill.config import config_hash
from exdistill.errors import ExdistillError
from exdistill.io import write_json
from exdistill.methods import resolve_config
from exdistill.pipeline import RunConfig, distill
from exdistill.tables import pct, publish_table


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``"idc f1=idc:factor=1,lr_img=0.01"`` → ``("idc f1", "idc", {"factor": 1, "lr_img": 0.01})``.

    >>> parse_variant("edd=edd:segments=5;5,reg_weight=0")
    ('edd', 'edd', {'segments': [5, 5], 'reg_weight': 0})
    >>> parse_variant("f1=edd:base_config.factor=1,base_config.iterations=2")
    ('f1', 'edd', {'base_config': {'factor': 1, 'iterations': 2}})
    """
    label, _, spec = text.partition("=")
    method, _, rest = spec.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        parsed = [yaml.safe_load(v) for v in value.split(";")] if ";" in value else None
        *parents, leaf = key.strip().split(".")
        target = overrides
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = parsed if parsed is not None else yaml.safe_load(value)
    if not label or not method:
        raise SystemExit(f"--variant {text!r}: expected LABEL=METHOD[:key=value,...]")
    return label.strip(), method.strip(), overrides


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace("λ", "lambda")).strip("-")


def current_hash(args: argparse.Namespace, method: str, values: dict) -> str | None:
    """The config hash a run of this variant would carry now (None: not resolvable here)."""
    try:
        return config_hash(resolve_config(method, args.preset, args.dataset, args.ipc, values))
    except ExdistillError:
        return None


def run_one(args: argparse.Namespace, method: str, overrides: dict, seed: int, out: Path) -> dict:
    """A finished run is reused only if it was made by the same variant (``variant.json``) and
    its resolved config is still what the variant resolves to (``config_hash``: a preset
    default changed since it ran makes it stale)."""
    variant = {"method": method, "overrides": overrides, "preset": args.preset, "ipc": args.ipc}
    if args.precision != "fp32":  # fp32 runs made before --precision existed stay reusable
        variant["precision"] = args.precision
    method_values = {"segment_evals": False, **overrides} if method in ("edd", "pdd") else overrides
    if (out / "metrics.json").is_file():
        try:
            same = json.loads((out / "variant.json").read_text()) == variant
        except (OSError, json.JSONDecodeError):
            same = True  # made before variant.json was written: the label is all there is
        metrics = json.loads((out / "metrics.json").read_text())
        now = current_hash(args, method, method_values)
        current = now is None or metrics.get("config_hash") in (None, now)
        if same and current:
            return metrics
        why = "another variant" if not same else "an older config (a preset default changed)"
        print(f"{out}: made by {why}; recomputing", flush=True)
    run = RunConfig(
        method=method,
        dataset=args.dataset,
        data_dir=args.data_dir,
        ipc=args.ipc,
        preset=args.preset,
        seed=seed,
        repeats=args.repeats,
        baselines=False,
        precision=args.precision,
    )
    metrics = distill(run, method_values, out, overwrite=True).metrics
    write_json(out / "variant.json", variant)
    return metrics


def table_row(label: str, cell: dict[str, Any]) -> list[str]:
    """One variant's row of ``sweep.md`` from its ``sweep.json`` entry."""
    per_seed, seconds = cell["per_seed"], cell["distill_seconds"]
    return [
        label,
        pct(cell["val_acc_mean"], cell["val_acc_std"]) if per_seed else "—",
        ", ".join(f"{100 * v:.2f}" for v in per_seed.values()) or "—",
        f"{statistics.fmean(seconds):.0f}" if seconds else "—",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job from the i-th")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--precision", default="fp32", help="fp32, bf16 or auto for every run of the sweep"
    )
    parser.add_argument(
        "--report", action="store_true", help="only write the table of the finished runs"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    index, count = (int(x) for x in args.shard.split("/"))
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [parse_variant(v) for v in args.variant]
    root = Path(args.out)
    jobs = [(v, s) for v in variants for s in seeds]
    for i, ((label, method, overrides), seed) in enumerate(jobs):
        if i % count == index and not args.report:
            try:
                run_one(args, method, overrides, seed, root / slug(label) / f"seed{seed}")
            except ExdistillError as err:  # a bad variant must not stop the others
                print(f"{label}, seed {seed}: {err}", flush=True)
    if count > 1 and index != 0:
        return
    # Variants of earlier invocations into the same OUT stay in the table (a later run of one
    # variant must not drop the others); this invocation's variants are recomputed from disk.
    previous = root / "sweep.json"
    cells: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    for label, method, overrides in variants:
        per_seed, seconds = {}, []
        for seed in seeds:
            path = root / slug(label) / f"seed{seed}" / "metrics.json"
            if not path.is_file():
                continue
            m = json.loads(path.read_text())
            vals = m["models"][next(iter(m["models"]))]["val_accs"]
            per_seed[str(seed)] = statistics.fmean(vals)
            seconds.append(m.get("distill_seconds", 0.0))
        scores = list(per_seed.values())
        cells[label] = {
            "method": method,
            "overrides": overrides,
            "per_seed": per_seed,
            "val_acc_mean": statistics.fmean(scores) if scores else float("nan"),
            "val_acc_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
            "distill_seconds": seconds,
        }
    rows = [table_row(label, cell) for label, cell in cells.items()]
    note = (
        f"{args.dataset}, ipc {args.ipc}, preset {args.preset}, precision {args.precision}, "
        f"seeds as listed per row; each seed's score is the mean validation accuracy of "
        f"{args.repeats} evaluation networks (test accuracy is not read)."
    )
    header = ["variant", "val acc (%) over seeds", "per seed", "distill s"]
    publish_table(root, "sweep", header, rows, note, cells)


if __name__ == "__main__":
    main()

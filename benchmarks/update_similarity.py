"""Recompute update similarity of saved runs (final − initial stored images, per class).

    python benchmarks/update_similarity.py runs/edd-vs-idc-digits/*-ipc10

Runs made before 2026-11-29 wrote EDD's ``initial.safetensors`` segment by segment while the
final set is class-major (class, then segment), so their recorded ``update_similarity`` paired
images wrongly. This script pairs them by the final set's ``segments`` tensor whatever the run's
age: a file written since carries ``{"order": "final"}`` in its metadata and is used as is; an
older one has segment k's block put where segment k's images are in the final set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from exdistill.analysis import update_similarity


def paired_initial(
    initial: torch.Tensor, segments: torch.Tensor, segment_major: bool
) -> torch.Tensor:
    """``initial`` in the final set's order; ``segment_major``: the file is as old runs wrote it."""
    if not segment_major:
        return initial
    out, start = torch.empty_like(initial), 0
    for k in segments.unique().tolist():
        n = int((segments == k).sum())
        out[segments == k] = initial[start : start + n]
        start += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | recorded | recomputed |")
    print("|---|---|---|")
    for run in args.runs:
        initial = load_file(str(run / "initial.safetensors"))["images"]
        final = load_file(str(run / "synthetic" / "synthetic.safetensors"))
        segments = final.get("segments", torch.zeros(len(initial), dtype=torch.long))
        metrics = json.loads((run / "metrics.json").read_text())
        recorded = (metrics.get("update_similarity") or {}).get("mean")
        with safe_open(str(run / "initial.safetensors"), "pt") as f:
            old = (f.metadata() or {}).get("order") != "final"
        sim = update_similarity(
            paired_initial(initial, segments, old), final["images"], final["labels"]
        )
        rec = "—" if recorded is None else f"{recorded:.3f}"
        print(f"| {run} | {rec} | {sim['mean']:.3f} |")


if __name__ == "__main__":
    main()

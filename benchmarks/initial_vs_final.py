"""What distillation added: a run's *initial* set evaluated exactly as its final set was.

    python benchmarks/initial_vs_final.py RUN_DIR --out DIR [--data-dir P]

RUN_DIR is a finished ``exdistill distill`` (or bench cell) directory with ``initial.safetensors``
(gradient matching, EDD, DM: where each stored image started). The initial images are saved as a
synthetic set beside the final one's labels, factor and sidecar (``DIR/initial/``) and evaluated
with ``exdistill evaluate``'s code under the run's protocol, repeats and seed. Prints the final
set's test accuracy (from the run's metrics.json) next to the initial set's, and writes
``DIR/metrics.json``. A final set no better than its start means the matching steps did not
move the images far enough to matter at that budget.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from safetensors.torch import load_file

from exdistill.config import load_yaml
from exdistill.pipeline import evaluate_dir
from exdistill.synthetic import SyntheticSet
from exdistill.tables import pct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", help="the dataset's files, if the run used --data-dir")
    args = parser.parse_args()
    run_dir, out = Path(args.run_dir), Path(args.out)
    final_metrics = json.loads((run_dir / "metrics.json").read_text())
    initial_file = run_dir / "initial.safetensors"
    if not initial_file.is_file():
        raise SystemExit(f"{initial_file}: not found (this method keeps no initial set)")
    final = SyntheticSet.load(run_dir / "synthetic")
    initial = load_file(str(initial_file))["images"]
    info = {**final.info, "note": f"initial images of {run_dir}"}
    start = replace(final, images=initial.to(final.images.dtype), step_size=None, info=info)
    start.save(out / "initial")
    data_dir = args.data_dir or _run_data_dir(run_dir)
    metrics = evaluate_dir(
        out / "initial",
        out / "eval",
        final_metrics["protocol"],
        len(final_metrics["test_accs"]),
        final_metrics["seed"],
        ["convnet"],
        data_dir,
        "cpu",
        True,
    )
    result = metrics["models"]["convnet"]
    row = {
        "run": str(run_dir),
        "protocol": final_metrics["protocol"],
        "final_test_acc_mean": final_metrics["test_acc_mean"],
        "final_test_acc_std": final_metrics["test_acc_std"],
        "initial_test_acc_mean": result["test_acc_mean"],
        "initial_test_acc_std": result["test_acc_std"],
    }
    (out / "metrics.json").write_text(json.dumps(row, indent=2))
    print(
        f"{run_dir}: final {_pct(row, 'final')} vs initial {_pct(row, 'initial')} "
        f"(test %, protocol {row['protocol']})"
    )


def _run_data_dir(run_dir: Path) -> str | None:
    return (load_yaml(run_dir / "config.yaml").get("run") or {}).get("data_dir")


def _pct(row: dict, which: str) -> str:
    return pct(row[f"{which}_test_acc_mean"], row[f"{which}_test_acc_std"])


if __name__ == "__main__":
    main()

"""Copy the small text records of finished runs (a sweep's or a bench suite's) into the repo.

    python benchmarks/keep_records.py runs/sweep-X benchmarks/records/sweep-X

Runs live under ``runs/`` (ignored by git), which a new machine does not have. What makes a
table reproducible and a sweep or suite resumable is a few kilobytes per run: ``metrics.json``,
``run.json``, ``config.yaml`` and a sweep's ``variant.json``, plus the tables themselves
(``*.md``, ``*.json`` at the top, and beside the ``suite.json`` of a suite nested in it, such
as ``protocols/P/`` of ``--eval-protocol``). This copies exactly those, keeping the layout, and
never the images, checkpoints or plots, and nothing of a run that is not marked done. To continue
a sweep or suite on another machine, copy the records back (``cp -r benchmarks/records/X
runs/X``) and rerun its command: finished runs are reused and only the missing ones are
computed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from exdistill.runs import is_finished

RUN_FILES = ("metrics.json", "run.json", "config.yaml", "variant.json")
MAX_BYTES = 256 * 1024  # a record larger than this is not a record


def keep(src: Path, dest: Path) -> list[Path]:
    """Copy every finished run's record files and the top-level tables; returns what it wrote."""
    written = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        rel = path.relative_to(src)
        table = path.suffix in (".md", ".json") and path.name not in RUN_FILES
        # the top's tables, and those of a suite nested in it (``protocols/P/``: --eval-protocol)
        top_table = table and (len(rel.parts) == 1 or (path.parent / "suite.json").is_file())
        in_finished_run = path.name in RUN_FILES and is_finished(path.parent)
        if top_table or in_finished_run:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a sweep's or suite's output directory")
    parser.add_argument("dest", type=Path, help="where the records go (e.g. benchmarks/records/X)")
    args = parser.parse_args()
    written = keep(args.src, args.dest)
    size = sum(p.stat().st_size for p in written)
    print(f"kept {len(written)} files ({size / 1024:.0f} KiB) in {args.dest}")


if __name__ == "__main__":
    main()

"""Copy a bench suite's tables into README.md, between ``<!-- bench-<suite>:start -->`` and
``<!-- bench-<suite>:end -->``, with the command, date, commit and progress written above them.

    python benchmarks/bench_readme.py runs/bench-cpu [--readme README.md]

The tables are ``results.md`` as ``exdistill bench`` (or ``--report``) wrote it: nothing is
recomputed or edited here, so the README shows exactly what the suite measured.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from exdistill.bench import suite_wall_seconds
from exdistill.bench.records import finished_cells, load_results


def _commit() -> str:
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.strip()


def section(out: Path, commit: str | None = None) -> tuple[str, str]:
    """(suite name, markdown for the README) from a suite directory."""
    results = load_results(out)
    suite = results["suite"]
    cells = results["cells"]
    done = list(finished_cells(results).values())
    wall = sum(c.get("wall_seconds") or 0 for c in done)
    jobs = f" --jobs {results['jobs']}" if results.get("jobs", 1) > 1 else ""
    runs = results.get("invocations") or []
    suite_wall = (
        f" Suite wall time: {suite_wall_seconds(runs) / 3600:.2f} h"
        f" ({len(runs)} command{'s' if len(runs) > 1 else ''})."
        if runs
        else ""
    )
    body = (out / "results.md").read_text().split("\n## ", 1)[1]
    body = ("## " + body).split("\n## Not computed")[0]
    body = re.sub(r"^## ", "#### ", body, flags=re.M)
    intro = (
        f"Command: `exdistill bench --suite {suite['name']} --out {out} --data-root ../shared/data"
        f"{jobs}`"
        f" (`--resume` continues it); results updated {results['updated']}, library commit "
        f"{commit or _commit()}, {results['machine']['cpus']} CPU cores. Test accuracy %, mean "
        f"± std over {suite['repeats']} evaluation repeats, protocol `{suite['protocol']}`, seed "
        f"{suite['seed']}, {suite['preset']} presets; best per column in bold; `—` = not computed "
        "yet. At ipc 1 EDD has one segment and is IDC image for image, so it has no cell. The "
        "cost tables give distillation s / evaluation s / peak resident GiB per cell. "
        f"{len(done)} of the suite's {len(cells)} cells are done ({wall / 3600:.1f} h of cell "
        f"time: the cells' own wall times, summed).{suite_wall}\n\n"
    )
    return suite["name"], intro + body.strip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the suite's --out directory")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--commit", help="the commit the suite ran (default: HEAD)")
    args = parser.parse_args()
    name, text = section(args.out, args.commit)
    start, end = f"<!-- bench-{name}:start -->", f"<!-- bench-{name}:end -->"
    readme = args.readme.read_text()
    if start not in readme or end not in readme:
        raise SystemExit(f"{args.readme}: no {start} … {end} markers to write between")
    before, rest = readme.split(start, 1)
    after = rest.split(end, 1)[1]
    args.readme.write_text(before + start + "\n" + text + end + after)
    print(f"{args.readme}: wrote the {name} suite's tables")


if __name__ == "__main__":
    main()

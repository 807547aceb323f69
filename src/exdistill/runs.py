"""Run directories: refuse to clobber another run, record the resolved config and metrics,
and the lifecycle of a resumed run (its status, the config it must match, its log cut back)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from exdistill.config import first_difference
from exdistill.errors import ConfigError
from exdistill.io import append_jsonl, read_jsonl, write_json, write_text

MARKER = "run.json"


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check that ``path`` may take a new run (empty, missing, or ``overwrite``). Writes nothing.

    The directory itself is created by ``start_run`` once all validation has passed.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out: {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"out: {path} already holds files (another run?); pass --resume to continue it "
            "or --overwrite to replace it"
        )
    return path


def start_run(path: Path, config: dict[str, Any], overwrite: bool = False) -> Path:
    if overwrite and path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json(path / MARKER, {"status": "running"})
    return path


class MetricsLog:
    """Appends one JSON line per record to ``DIR/log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)


def finish_run(path: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``, then mark the run done (a run without the mark is unfinished)."""
    write_json(path / "metrics.json", metrics)
    write_json(path / MARKER, {"status": "done"})


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: marked done, with its metrics written."""
    try:
        status = json.loads((run_dir / MARKER).read_text()).get("status")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
    return status == "done" and (run_dir / "metrics.json").is_file()


def run_status(out: Path) -> str:
    """The status in ``out/run.json`` of a run that ``--resume`` may continue."""
    try:
        status = json.loads((out / MARKER).read_text()).get("status")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ConfigError(
            f"out: {out} holds no run to resume (no readable {MARKER}); drop --resume"
        ) from None
    if not isinstance(status, str):
        raise ConfigError(f"out: {out / MARKER} has no status")
    return status


def check_same_config(out: Path, resolved: dict[str, Any]) -> None:
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        raise ConfigError(
            f"out: {out}/config.yaml is missing or unreadable; cannot resume"
        ) from None
    if not isinstance(saved, dict) or not {"run", "method"} <= set(saved):
        raise ConfigError(f"out: {out} holds no distillation run (its config.yaml has no method)")
    diff = first_difference(saved, json.loads(json.dumps(resolved)))
    if diff:
        raise ConfigError(f"resume: the config differs from the run in {out} ({diff})")


def truncate_log(path: Path, keep: int) -> None:
    """Drop the records written after the checkpoint (they will be written again)."""
    records = read_jsonl(path)[:keep]
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))

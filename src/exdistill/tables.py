"""Markdown tables and accuracy formatting, shared by the CLI, reports and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exdistill.io import write_json, write_text


def pct(mean: float | None, std: float | None = None) -> str:
    """``0.9712, 0.0031`` → ``"97.12 ± 0.31"``; ``None`` → ``"—"``."""
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def best_rows(values: Sequence[float | None]) -> set[int]:
    """Indices holding the largest value (ties all count); ``None`` never wins."""
    present = [v for v in values if v is not None]
    if not present:
        return set()
    top = max(present)
    return {i for i, v in enumerate(values) if v is not None and v == top}


def publish_table(
    root: Path,
    stem: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    note: str,
    cells: dict[str, Any],
) -> str:
    """Write ``root/<stem>.md`` (the table and its note) and ``root/<stem>.json`` (``cells``, the
    numbers behind it), print the table, and return its Markdown."""
    text = markdown_table(header, rows) + "\n\n" + note.strip() + "\n"
    write_text(root / f"{stem}.md", text)
    write_json(root / f"{stem}.json", cells)
    print(text, flush=True)
    return text

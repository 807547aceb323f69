"""Progress reporting without printing: library loops take an optional ``Progress``.

The CLI passes ``tqdm`` bars (which satisfy this protocol); library code never prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...


class NullProgress:
    """A progress sink that does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass


def or_null(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()


# Makes a progress context: ``with factory(total, description) as bar: bar.update(1)``.
ProgressFactory = Callable[[int, str], Any]


def no_progress(total: int, desc: str) -> Any:
    """A ``ProgressFactory`` that shows nothing (library default; the CLI passes tqdm)."""
    return contextlib.nullcontext(NullProgress())

"""Progress reporting without printing: library loops take an optional ``Progress``.

The CLI passes ``tqdm`` bars (which satisfy this protocol); library code never prints.
"""

from __future__ import annotations

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

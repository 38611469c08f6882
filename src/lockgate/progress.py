"""Progress reporting without drawing: the core calls an observer, the CLI draws bars."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullProgress", "Progress"]


class Progress(Protocol):
    """Receives progress of long steps (export, parity). ``total`` is None when unknown."""

    def start(self, task: str, total: int | None = None) -> None: ...

    def advance(self, task: str, steps: int = 1) -> None: ...

    def finish(self, task: str) -> None: ...


class NullProgress:
    """The observer used when nobody is watching."""

    def start(self, task: str, total: int | None = None) -> None:
        return None

    def advance(self, task: str, steps: int = 1) -> None:
        return None

    def finish(self, task: str) -> None:
        return None

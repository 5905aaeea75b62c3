"""Stage timing and progress bars for long-running commands.

:class:`Stages` times named stages and, when enabled, shows a rich progress bar for each
(a spinner when the total is unknown). Library functions take plain ``on_done(n)``
callbacks; this class turns them into bars.

Example:
    >>> stages = Stages(enabled=False)
    >>> with stages.stage("count", total=3) as advance:
    ...     for n in range(1, 4):
    ...         advance(n)
    >>> list(stages.timings)
    ['count']
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = [
    "Stages",
]


class Stages:
    """Time stages; show a progress bar per stage when ``enabled``."""

    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Time the block; yield ``advance(done)`` that moves the bar to ``done`` of ``total``."""
        start = time.perf_counter()
        if not self.enabled:
            try:
                yield lambda done: None
            finally:
                self.timings[name] = time.perf_counter() - start
            return

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description:<22}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(name, total=total)

            def advance(done: int) -> None:
                bar.update(task, completed=done)

            try:
                yield advance
            finally:
                self.timings[name] = time.perf_counter() - start
                if total is not None:
                    bar.update(task, completed=total)

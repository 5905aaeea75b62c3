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
    def stage(
        self, name: str, total: int | None = None, *, counted: bool = False
    ) -> Iterator[Callable[..., None]]:
        """Time the block; yield ``advance(done, total=None)`` that moves the bar to
        ``done`` of ``total`` (a spinner when the total is unknown; ``counted``: a bar whose
        total ``advance`` gives as it becomes known)."""
        start = time.perf_counter()
        if not self.enabled:
            try:
                yield lambda done, total=None: None
            finally:
                self.timings[name] = time.perf_counter() - start
            return

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description:<22}")]
        if total is not None or counted:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(name, total=total)

            def advance(done: int, total: int | None = None) -> None:
                if total is not None:
                    bar.update(task, completed=done, total=total)
                else:
                    bar.update(task, completed=done)

            try:
                yield advance
                final = bar.tasks[0].total
                if final is not None:
                    bar.update(task, completed=final)
            except BaseException:
                bar.live.transient = True  # the bar goes: a refusal stays its one line
                raise
            finally:
                self.timings[name] = time.perf_counter() - start

    @contextlib.contextmanager
    def counter(self, name: str) -> Iterator[Callable[[int, int], None]]:
        """A counted stage (see :meth:`stage`) opened by the first ``advance(done, total)``:
        work refused before it starts shows no bar above its one-line error."""
        with contextlib.ExitStack() as stack:
            opened: list[Callable[..., None]] = []

            def advance(done: int, total: int) -> None:
                if not opened:
                    opened.append(stack.enter_context(self.stage(name, counted=True)))
                opened[0](done, total)

            yield advance

"""Run many small tasks: a bounded thread pool (the default engine).

GDAL, numpy and the codecs release the GIL, so threads are the right default on one machine.
At most ``workers * 4`` tasks are in flight, so memory does not grow with the number of
tasks. Results come back as they finish, tagged with their position, so callers that write
by position produce the same output whatever the completion order.

Example:
    >>> sorted(run_tasks(lambda x: x * x, [1, 2, 3], workers=2))
    [(0, 1), (1, 4), (2, 9)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["run_tasks"]

T = TypeVar("T")
R = TypeVar("R")


def run_tasks(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 2,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """Apply ``fn`` to every item on ``workers`` threads; yield ``(position, result)``.

    The first exception stops submitting new work, waits for the running tasks, and is
    re-raised. ``on_done(n)`` is called with the number of tasks finished so far.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        for n, (i, item) in enumerate(enumerate(items), start=1):
            result = fn(item)
            if on_done:
                on_done(n)
            yield i, result
        return
    iterator = iter(enumerate(items))
    pending: dict[Future[R], int] = {}
    done_count = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geochip") as pool:

        def fill() -> None:
            while len(pending) < workers * 4:
                try:
                    i, item = next(iterator)
                except StopIteration:
                    return
                pending[pool.submit(fn, item)] = i

        fill()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                done_count += 1
                if on_done:
                    on_done(done_count)
                yield i, future.result()
            fill()

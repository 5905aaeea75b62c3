"""Run many tasks: a bounded thread pool (the default), a local Dask cluster, or an existing
Dask scheduler.

GDAL, numpy and the codecs release the GIL, so threads are the right default on one machine.
:func:`open_engine` gives the same interface for the three: ``engine.map(fn, tasks)`` yields
``(position, result)`` as tasks finish, with at most ``engine.max_in_flight`` tasks
submitted at any time, so neither memory nor the Dask graph grows with the number of tasks
(a task is a batch of chips: the scheduler holds at most ``max_in_flight`` small tasks).

Tasks retry their own reads (:mod:`geochip.core.retry`) and carry their GDAL options
(:func:`geochip.core.env.worker_options`). :func:`synchronous_dask` computes a task's dask
graphs in the thread that runs it. A Dask engine refuses a local output folder that any of
its workers does not see (:meth:`Engine.check_sees`: workers on other machines would write
the chips to their own disks).

Example:
    >>> sorted(run_tasks(lambda x: x * x, [1, 2, 3], workers=2))
    [(0, 1), (1, 4), (2, 9)]
    >>> with open_engine(threads=2) as engine:
    ...     sorted(engine.map(abs, [-1, -2]))
    [(0, 1), (1, 2)]
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError, StoreError
from .security import redact

__all__ = [
    "Engine",
    "open_engine",
    "run_tasks",
    "synchronous_dask",
]

T = TypeVar("T")

#: How often a wait on running tasks wakes up to see whether Ctrl-C was pressed (seconds).
INTERRUPT_POLL = 0.2

R = TypeVar("R")


def run_tasks(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 2,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """Apply ``fn`` to every item on ``workers`` threads; yield ``(position, result)``.

    At most ``workers * 4`` tasks are in flight. The first exception stops submitting new
    work, waits for the running tasks, and is re-raised. ``on_done(n)`` is called with the
    number of tasks finished so far.
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
        try:
            with _deferred_interrupt() as interrupted:
                while pending:
                    finished = _wait_first(pending, interrupted)
                    for future in finished:
                        i = pending.pop(future)
                        error = future.exception()
                        if error is not None:
                            raise error
                        done_count += 1
                        if on_done:
                            on_done(done_count)
                        yield i, future.result()
                    fill()
        finally:
            for other in pending:
                other.cancel()


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """While the main thread waits on futures, Ctrl-C only raises a flag (the yielded
    function tells whether it is up), so that :func:`_wait_first` raises
    ``KeyboardInterrupt`` between two waits, never inside one.

    A ``KeyboardInterrupt`` raised inside ``concurrent.futures.wait`` (while it takes the
    futures' locks one by one, or installs its waiter) can leave a future's lock held: the
    worker that finishes that future then blocks forever, and the pool's shutdown with it,
    so Ctrl-C hung the build instead of stopping it. A second Ctrl-C raises at once.
    Outside the main thread, or when the program installed its own SIGINT handler, nothing
    changes.
    """
    hit: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return

    def remember(signum: int, frame: Any) -> None:
        if hit:
            raise KeyboardInterrupt
        hit.append(signum)

    signal.signal(signal.SIGINT, remember)
    try:
        yield lambda: bool(hit)
    finally:
        # a generator may be finalised elsewhere: restore only what is still ours
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                if signal.getsignal(signal.SIGINT) is remember:
                    signal.signal(signal.SIGINT, signal.default_int_handler)


def _wait_first(pending: Iterable[Future[Any]], interrupted: Callable[[], bool]) -> set[Any]:
    """The futures of ``pending`` that are done, once at least one is; raises
    ``KeyboardInterrupt`` (between waits) when Ctrl-C was pressed."""
    while True:
        if interrupted():
            raise KeyboardInterrupt
        finished, _ = wait(pending, timeout=INTERRUPT_POLL, return_when=FIRST_COMPLETED)
        if finished:
            return finished


class Engine:
    """Where tasks run. Use :func:`open_engine`; call :meth:`map` inside the ``with``."""

    kind = "threads"
    description = ""
    dashboard: str | None = None
    max_in_flight = 1

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        """Run ``fn`` on every task; yield ``(position, result)`` as they finish."""
        raise NotImplementedError

    def check_sees(self, folder: Path) -> None:
        """Refuse a local output ``folder`` that some of the engine's workers do not see
        (threads share this process's disk: nothing to check)."""

    def close(self) -> None:
        """Release the pool or the cluster."""


class _ThreadEngine(Engine):
    def __init__(self, threads: int, max_in_flight: int | None) -> None:
        self.threads = threads
        self.max_in_flight = max_in_flight or 2 * threads
        self.description = f"{threads} thread{'s' if threads > 1 else ''}"
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geochip")

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        iterator = iter(enumerate(tasks))
        pending: dict[Future[R], int] = {}

        def fill() -> None:
            while len(pending) < self.max_in_flight:
                try:
                    i, task = next(iterator)
                except StopIteration:
                    return
                pending[self._pool.submit(fn, task)] = i

        fill()
        try:
            with _deferred_interrupt() as interrupted:
                while pending:
                    finished = _wait_first(pending, interrupted)
                    for future in finished:
                        i = pending.pop(future)
                        yield i, future.result()
                    fill()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _DaskEngine(Engine):
    kind = "dask"

    def __init__(
        self,
        *,
        workers: int | None,
        scheduler: str | None,
        threads_per_worker: int,
        memory_limit: str,
        max_in_flight: int | None,
    ) -> None:
        from distributed import Client, LocalCluster  # lazy: ~0.9 s, only Dask engines

        self._cluster = None
        if scheduler is None:
            self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers or 1,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                memory_limit=memory_limit,
                silence_logs=40,
            )
            self.client = Client(self._cluster)  # type: ignore[no-untyped-call]
            where = "a local Dask cluster on 127.0.0.1"
        else:
            self.client = Client(scheduler, timeout="20s")  # type: ignore[no-untyped-call]

            where = f"the Dask scheduler at {redact(scheduler)}"
        info = self.client.scheduler_info()
        nthreads = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())
        self.threads = max(nthreads, 1)
        self.max_in_flight = max_in_flight or 2 * self.threads
        self.description = (
            f"{where}, {len(info.get('workers', {}))} workers, {self.threads} threads"
        )
        services = info.get("services", {})
        self.dashboard = self.client.dashboard_link if "dashboard" in services else None

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        from distributed import as_completed  # lazy: see above

        iterator = iter(enumerate(tasks))
        position: dict[Any, int] = {}
        done = as_completed()  # type: ignore[no-untyped-call]
        in_flight = 0
        token = f"{time.time_ns():x}"

        def submit() -> bool:
            try:
                i, task = next(iterator)
            except StopIteration:
                return False
            future = self.client.submit(fn, task, key=f"geochip-batch-{token}-{i}", pure=False)
            position[future.key] = i
            done.add(future)  # type: ignore[no-untyped-call]
            return True

        while in_flight < self.max_in_flight and submit():
            in_flight += 1
        try:
            for future in done:
                i = position.pop(future.key)
                in_flight -= 1
                try:
                    result = future.result()
                finally:
                    future.release()
                yield i, result
                if submit():
                    in_flight += 1
        finally:
            for key in list(position):
                with contextlib.suppress(Exception):
                    self.client.cancel([key])  # type: ignore[no-untyped-call]

    def check_sees(self, folder: Path) -> None:
        """Every worker must read back a probe file written into ``folder`` here: workers on
        other machines would write the chips to their own disks, and the store would name
        chunks this machine never gets. A :class:`~geochip.errors.StoreError` names them."""
        token = uuid.uuid4().hex
        probe = folder / f".geochip-worker-probe-{token}"
        probe.write_text(token)
        try:
            seen = self.client.run(_holds, str(probe), token)
        finally:
            probe.unlink(missing_ok=True)
        blind = sorted(address for address, ok in seen.items() if not ok)
        if blind:
            raise StoreError(
                f"{len(blind)} of {len(seen)} Dask workers ({', '.join(blind[:3])}) do not see "
                f"the output folder {folder}: they would write the chips to their own disks. "
                "Write to a bucket (--out s3://..., gs://..., az://...) or to a folder every "
                "worker mounts at the same path"
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()  # type: ignore[no-untyped-call]
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def _holds(path: str, token: str) -> bool:
    """On a worker: whether the file ``path`` holds ``token`` (the worker sees the folder)."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


@contextlib.contextmanager
def open_engine(
    *,
    threads: int = 4,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
    max_in_flight: int | None = None,
) -> Iterator[Engine]:
    """Threads by default; ``workers=N`` starts a ``distributed.LocalCluster`` of N
    processes bound to 127.0.0.1; ``scheduler="tcp://HOST:PORT"`` uses an existing one.

    ``max_in_flight`` bounds the tasks submitted at once (default: 2 per thread).
    """
    if workers is not None and scheduler is not None:
        raise InputError("give workers (a local cluster) or scheduler (an existing one), not both")
    engine: Engine
    if workers is None and scheduler is None:
        engine = _ThreadEngine(threads, max_in_flight)
    else:
        engine = _DaskEngine(
            workers=workers,
            scheduler=scheduler,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            max_in_flight=max_in_flight,
        )
    try:
        yield engine
    finally:
        engine.close()


@contextlib.contextmanager
def synchronous_dask() -> Iterator[None]:
    """Compute dask graphs in the calling thread (inside geochip's own worker threads)."""
    import dask  # lazy: ~1 s; only Dask computations need it

    with dask.config.set(scheduler="synchronous"):
        yield

"""A real Dask cluster on loopback for tests: a ``dask scheduler`` process and ``dask worker``
processes (:class:`DaskCluster`), and :class:`TaskLog`, a scheduler plugin that keeps the
pickled bytes of every task the scheduler receives, so that a test can grep what a build
ships to its workers (no credential, no local path the workers cannot see).

``DaskCluster(tmp, isolated=True)`` starts each worker as a separate machine would: in its own
new, empty working directory with its own ``--local-directory`` (Dask's scratch space), and
with the environment ``env`` (e.g. the object store's endpoint and credentials, which reach
workers through their environment, never through tasks). :meth:`DaskCluster.worker_files`
lists what each worker wrote into its working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = ["DaskCluster", "TaskLog"]

BIN = Path(sys.executable).parent


class DaskCluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1 (one
    thread each, no nanny), stopped by :meth:`close` (or on exit of a ``with`` block)."""

    def __init__(
        self,
        tmp: Path,
        workers: int = 2,
        *,
        isolated: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.isolated = isolated
        self.env = {**os.environ, **(env or {})}
        self.started = 0
        tmp.mkdir(parents=True, exist_ok=True)
        sched_file = tmp / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(
                    f"`dask scheduler` exited with status {self.scheduler.returncode}"
                )
            time.sleep(0.1)
        self.address: str = json.loads(sched_file.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        self.workers = [self.start_worker() for _ in range(workers)]
        self.wait_for(workers)

    def worker_dirs(self, n: int) -> tuple[Path, Path]:
        """Worker ``n``'s working directory and its ``--local-directory``."""
        return self.tmp / f"worker-{n}" / "cwd", self.tmp / f"worker-{n}" / "local"

    def start_worker(self, hide: Path | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker (isolated: in new, empty folders of its own). ``hide``: a
        folder this worker sees empty and writes apart from every other process, as a
        worker on another machine would (an empty tmpfs mounted over it in a mount
        namespace of the worker's own: ``unshare``, which needs root)."""
        command = [
            str(BIN / "dask"),
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--memory-limit",
            "2GiB",
            "--no-nanny",
        ]
        cwd = None
        if self.isolated:
            cwd, local = self.worker_dirs(self.started)
            cwd.mkdir(parents=True)
            local.mkdir(parents=True)
            command += ["--local-directory", str(local)]
        self.started += 1
        if hide is not None:
            # root makes a mount namespace; anyone else a user namespace (mapped to root) too
            user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
            mount = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
            command = ["unshare", *user, "--mount", "--propagation", "private", "sh", "-c",
                       mount, str(hide), *command]  # fmt: skip
        return subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=self.env,
        )

    def worker_files(self) -> dict[str, list[str]]:
        """Per isolated worker, the files (and folders) in its working directory."""
        out = {}
        for n in range(self.started):
            cwd, _ = self.worker_dirs(n)
            out[f"worker-{n}"] = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
        return out

    def client(self) -> Any:
        """A ``distributed.Client`` of the scheduler (close it, or use it in ``with``)."""
        return Client(self.address, timeout="20s")  # type: ignore[no-untyped-call]

    def wait_for(self, n: int) -> None:
        """Wait until ``n`` workers are connected."""
        with self.client() as client:
            client.wait_for_workers(n, timeout=60)

    def close(self) -> None:
        """Stop the workers, then the scheduler."""
        for proc in [*self.workers, self.scheduler]:
            proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskLog(SchedulerPlugin):
    """Keeps, on the scheduler, the cloudpickled bytes of every task that enters it
    (``register`` it with a client; :meth:`fetch` them)."""

    name = "geochip-task-log"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        import cloudpickle  # type: ignore[import-untyped]  # lazy: on the scheduler only

        for key in tasks:
            state = scheduler.tasks.get(key)
            if state is not None:
                self.blobs[str(key)] = cloudpickle.dumps(state.run_spec)

    @classmethod
    def register(cls, client: Any) -> None:
        """Start logging the tasks of every client of ``client``'s scheduler."""
        client.register_plugin(cls())

    @classmethod
    def fetch(cls, client: Any) -> dict[str, bytes]:
        """The tasks logged so far: key -> pickled bytes."""
        blobs: dict[str, bytes] = client.run_on_scheduler(_logged)
        return blobs


def _logged(dask_scheduler: Any) -> dict[str, bytes]:
    return dict(dask_scheduler.plugins[TaskLog.name].blobs)

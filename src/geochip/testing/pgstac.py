"""A real pgstac STAC API on loopback: PostgreSQL + PostGIS, the pgstac schema
(``pypgstac migrate``) and ``stac-fastapi-pgstac`` under uvicorn (:class:`PgstacServer`).

This is the stack the big public catalogs run (the Planetary Computer among others): CQL2
``filter``, ``query``, ``sortby``, paging tokens in ``next`` links and its own error answers.

One cluster per server: ``initdb`` into a temporary folder (fsync off: it is thrown away),
TCP on an ephemeral ``127.0.0.1`` port, the unix socket off, trust authentication on
loopback. PostgreSQL refuses to run as root: when the tests run as root (CI containers),
the cluster runs as the ``postgres`` user that Debian's package creates. Needs Debian's
``postgresql`` and ``postgis`` packages (``apt-get install postgresql postgis``) and the
dev group's ``pypgstac[psycopg]``, ``stac-fastapi-pgstac`` and ``uvicorn``.

Example (not run here: it starts PostgreSQL)::

    with PgstacServer() as server:
        server.load(collections, items)
        catalog = open_catalog(server.url)
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pystac

from .rustac import as_dicts, collection_dicts, free_port, stop_process, wait_until_up

__all__ = [
    "PgstacServer",
    "PgstacUnavailableError",
    "postgres_bindir",
]

_APT_HINT = (
    "install them with `apt-get install -y postgresql postgis` (Debian/Ubuntu; .ci/run does "
    "it) and the dev group (pypgstac[psycopg], stac-fastapi-pgstac, uvicorn)"
)


class PgstacUnavailableError(RuntimeError):
    """PostgreSQL, PostGIS or the pgstac Python packages are not installed."""


def postgres_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``: ``$GEOCHIP_PG_BINDIR``, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian), else ``initdb`` on PATH."""
    given = os.environ.get("GEOCHIP_PG_BINDIR")
    if given:
        return Path(given)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PgstacUnavailableError(f"PostgreSQL (initdb) is not installed; {_APT_HINT}")


def _has_postgis(bindir: Path) -> bool:
    sharedir = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    candidates = [Path(sharedir)] if sharedir else []
    candidates.append(Path("/usr/share/postgresql") / bindir.parent.name)
    return any((c / "extension" / "postgis.control").exists() for c in candidates)


class PgstacServer:
    """PostgreSQL + pgstac + stac-fastapi-pgstac on loopback (a context manager).

    ``url`` (ending with a slash) is the STAC API; ``dsn`` the database. :meth:`load`
    upserts collections and items (pystac objects or dicts). ``startup_seconds`` is how
    long :meth:`start` took, ``timings`` its steps (``postgres``: initdb and start;
    ``migrate``: the pgstac schema; ``api``: uvicorn up).
    """

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.url = ""
        self.dsn = ""
        self.port = 0
        self.startup_seconds = 0.0
        self.timings: dict[str, float] = {}
        self._dir: Path | None = None
        self._bindir: Path | None = None
        self._user: str | None = None
        self._pg_started = False
        self._api: subprocess.Popen[bytes] | None = None

    # -- PostgreSQL ----------------------------------------------------------------------

    def _run_pg(self, *args: str) -> None:
        assert self._bindir is not None
        result = subprocess.run(
            [str(self._bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
            cwd=self._dir,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr[-2000:]}"
                f"{result.stdout[-1000:]}{self._pg_log()}"
            )

    def _pg_log(self) -> str:
        path = self._dir / "postgres.log" if self._dir else None
        if path is None or not path.exists():
            return ""
        return "\npostgres.log:\n" + path.read_text(errors="replace")[-2000:]

    def _start_postgres(self) -> None:
        self._bindir = postgres_bindir()
        if not _has_postgis(self._bindir):
            raise PgstacUnavailableError(
                f"PostGIS is not installed for the PostgreSQL in {self._bindir}; {_APT_HINT}"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="geochip-pgstac-"))
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PgstacUnavailableError(
                    "running as root, and there is no `postgres` user to run PostgreSQL as "
                    f"(it refuses root); {_APT_HINT}"
                ) from None
            self._user = "postgres"
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        data = self._dir / "data"
        self._run_pg(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=''",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=60",
                "-c shared_buffers=64MB",
            ]
        )
        last = ""
        for _ in range(3):
            self.port = free_port()
            try:
                self._run_pg(
                    "pg_ctl", "-D", str(data), "-l", str(self._dir / "postgres.log"), "-w",
                    "-t", str(int(self.startup_timeout)), "-o", f"{options} -p {self.port}",
                    "start",
                )  # fmt: skip
            except RuntimeError as err:  # the port was taken meanwhile: another one
                last = str(err)
                continue
            self._pg_started = True
            break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _migrate(self) -> None:
        try:
            from pypgstac.db import PgstacDB  # lazy: dev-only dependency
            from pypgstac.migrate import Migrate  # lazy: dev-only dependency
        except ImportError as err:
            raise PgstacUnavailableError(f"{err}; {_APT_HINT}") from None
        with PgstacDB(dsn=self.dsn) as db:
            Migrate(db).run_migration()
            # eo:cloud_cover as a number, as public catalogs register it: without it pgstac
            # compares and sorts it as text ("7.9" > "68.14")
            db.query_one(
                "INSERT INTO pgstac.queryables (name, definition, property_wrapper) "
                'VALUES (\'eo:cloud_cover\', \'{"type": "number", "minimum": 0, '
                "\"maximum\": 100}', 'to_float') RETURNING name"
            )

    # -- stac-fastapi-pgstac ---------------------------------------------------------------

    def _start_api(self) -> None:
        assert self._dir is not None
        env = {
            **os.environ,
            "PGUSER": "postgres",
            "PGPASSWORD": "unused",  # trust authentication on loopback
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": "postgres",
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "8",
        }
        last: Exception | None = None
        for _ in range(3):
            port = free_port()
            with (self._dir / "api.log").open("ab") as log_file:
                self._api = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "stac_fastapi.pgstac.app:create_app",
                        "--factory",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self._dir,  # no stray .env is read
                    env=env,
                )
            self.url = f"http://127.0.0.1:{port}/"
            try:
                wait_until_up(self.url, time.monotonic() + self.startup_timeout, self._api)
                return
            except (RuntimeError, TimeoutError) as err:
                last = err
                self._stop_api()
        log = (self._dir / "api.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"stac-fastapi-pgstac did not start: {last}\n{log}")

    def _stop_api(self) -> None:
        stop_process(self._api)
        self._api = None

    # -- public ----------------------------------------------------------------------------

    def start(self) -> PgstacServer:
        """Start PostgreSQL, install pgstac, start the API; stops what started on failure."""
        began = time.perf_counter()
        try:
            for name, step in (
                ("postgres", self._start_postgres),
                ("migrate", self._migrate),
                ("api", self._start_api),
            ):
                t = time.perf_counter()
                step()
                self.timings[name] = time.perf_counter() - t
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def load(
        self,
        collections: Iterable[pystac.Collection | Mapping[str, Any]] = (),
        items: Iterable[pystac.Item | Mapping[str, Any]] = (),
    ) -> None:
        """Upsert ``collections`` (dicts or pystac; the ones items name but not given are made
        up with a world extent) and then ``items``."""
        from pypgstac.db import PgstacDB  # lazy: dev-only dependency
        from pypgstac.load import Loader, Methods  # lazy: dev-only dependency

        item_dicts = as_dicts(items)
        given = [c for c in collections if isinstance(c, pystac.Collection)]
        plain = [json.loads(json.dumps(c)) for c in collections if isinstance(c, Mapping)]
        names = {c["id"] for c in plain}
        colls = [c for c in collection_dicts(item_dicts, given) if c["id"] not in names]
        colls += plain
        with PgstacDB(dsn=self.dsn) as db:
            loader = Loader(db=db)
            if colls:
                loader.load_collections(iter(colls), Methods.upsert)
            if item_dicts:
                loader.load_items(iter(item_dicts), Methods.upsert)

    def stop(self) -> None:
        """Stop the API and PostgreSQL, remove the folder (safe to call twice)."""
        self._stop_api()
        if self._pg_started and self._dir is not None:
            with contextlib.suppress(RuntimeError):  # already gone: nothing to stop
                self._run_pg("pg_ctl", "-D", str(self._dir / "data"), "-m", "fast", "-w", "stop")
            self._pg_started = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PgstacServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

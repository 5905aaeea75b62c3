"""A real STAC API on loopback: ``rustac serve`` (PyPI ``rustac``) started on a free port
with the given items (:class:`RustacServer`). Its memory backend ignores the query and
filter extensions: geochip then filters client-side (and says so).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import pystac

__all__ = [
    "RustacServer",
    "free_port",
    "rustac_executable",
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rustac_executable() -> str:
    """Path of the ``rustac`` command (next to the running Python, else on PATH)."""
    here = Path(sys.executable).parent / "rustac"
    if here.exists():
        return str(here)
    found = shutil.which("rustac")
    if found is None:
        raise FileNotFoundError(
            "the `rustac` command is not installed; install the dev group (pip install rustac)"
        )
    return found


def as_dicts(items: Iterable[pystac.Item | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Items (pystac or dicts) as STAC dicts."""
    out = []
    for item in items:
        if isinstance(item, pystac.Item):
            clone = item.clone()
            clone.make_asset_hrefs_absolute() if clone.get_self_href() else None
            d = clone.to_dict(include_self_link=False, transform_hrefs=False)
        else:
            d = json.loads(json.dumps(item))
        d["links"] = []
        out.append(d)
    return out


def collection_dicts(
    items: Sequence[Mapping[str, Any]], collections: Iterable[pystac.Collection] | None
) -> list[dict[str, Any]]:
    """The collections of ``items`` as STAC dicts (given ones, or made from the items)."""
    given = {c.id: c for c in collections or []}
    out = []
    for cid in sorted(
        {str(i.get("collection")) for i in items if i.get("collection")} | set(given)
    ):
        if cid in given:
            d = given[cid].to_dict(include_self_link=False, transform_hrefs=False)
        else:
            d = {
                "type": "Collection",
                "stac_version": "1.1.0",
                "id": cid,
                "description": cid,
                "license": "other",
                "extent": {
                    "spatial": {"bbox": [[-180, -90, 180, 90]]},
                    "temporal": {"interval": [[None, None]]},
                },
            }
        d["links"] = []
        out.append(d)
    return out


def wait_until_up(
    url: str, deadline: float, proc: subprocess.Popen[bytes] | None, any_answer: bool = False
) -> None:
    """Wait until ``url`` answers 200 (``any_answer``: any HTTP status, e.g. a 403 to an
    unsigned request), or ``proc`` exits, or ``deadline`` passes."""
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_answer:
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server process started by a fixture and wait for it (killed after 10 s);
    nothing when it is None or has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class ServerProcess:
    """A loopback server in a process of its own (``_process``): subclasses start it in
    :meth:`start`; :meth:`stop` ends it; a ``with`` block does both."""

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def wait(self, url: str, seconds: float, any_answer: bool = False) -> Self:
        """Return once ``url`` answers (see :func:`wait_until_up`); stop the process and
        raise when it does not within ``seconds``."""
        try:
            wait_until_up(url, time.monotonic() + seconds, self._process, any_answer)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start: {err}") from None
        return self

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RustacServer:
    """``rustac serve`` on a free loopback port, loaded with ``items`` (a context manager).

    ``collections`` are loaded as given; a collection named by an item but not given is
    made up with a world extent. ``url`` ends with a slash.

    Items served by an API get a self link on the server, so an absolute local path such as
    ``/tmp/x.tif`` in an asset href resolves to ``http://127.0.0.1:<port>/tmp/x.tif``
    (URL semantics, and the href policy: a network catalog does not read local files).
    To read pixels through an API in a test, serve the files with
    ``StacApiServer(files_root=...)`` and use its :meth:`StacApiServer.file_url` as hrefs.
    """

    def __init__(
        self,
        items: Iterable[pystac.Item | Mapping[str, Any]],
        collections: Iterable[pystac.Collection] | None = None,
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        self.items = as_dicts(items)
        self.collections = collection_dicts(self.items, collections)
        self.startup_timeout = startup_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    def start(self) -> RustacServer:
        """Write the items to a temporary folder and start the server (3 tries at a port)."""
        self._dir = tempfile.mkdtemp(prefix="geochip-rustac-")
        files = []
        for n, coll in enumerate(self.collections):
            path = Path(self._dir) / f"collection-{n}.json"
            path.write_text(json.dumps(coll))
            files.append(str(path))
        if self.items:
            path = Path(self._dir) / "items.json"
            path.write_text(json.dumps({"type": "FeatureCollection", "features": self.items}))
            files.append(str(path))
        last: Exception | None = None
        for _ in range(3):
            port = free_port()
            log_path = Path(self._dir) / "serve.log"
            with log_path.open("wb") as log_file:
                self._proc = subprocess.Popen(
                    [rustac_executable(), "serve", "--addr", f"127.0.0.1:{port}", *files],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.url = f"http://127.0.0.1:{port}/"
            try:
                wait_until_up(self.url, time.monotonic() + self.startup_timeout, self._proc)
                return self
            except (RuntimeError, TimeoutError) as err:
                last = err
                self._terminate()
        log = (Path(self._dir) / "serve.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"rustac serve did not start: {last}\n{log}")

    def _terminate(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RustacServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Stores in object storage (``s3://``, ``gs://``, ``az://``, ``memory://``): how chunk
objects are written, the default layout of remote stores, and the lock that keeps two
writers off one prefix.

**One PUT per chunk object, through obstore.** A batch's chunk files (shards) are encoded by
Zarr in memory with the arrays' own metadata, then each is one PUT (:func:`put_objects`).
Writing through a remote Zarr store took 8 requests per shard instead (Zarr reads a shard
before it writes it; 12 MB went up as a multipart upload of 3 parts), which at 20 ms per
request cost the benchmark's build a tenth of its speed. PUTs of 12.8 MB objects to moto's
S3 server on loopback, 2 threads: obstore 146-252 MB/s, s3fs 134-159 MB/s (400 KB: 52-64
against 26-35 MB/s; botocore spends the client's CPU), so obstore writes to S3 where it
is installed (the ``s3`` extra), fsspec otherwise (``gs://``, ``az://``, ``memory://``: one
client, and one way credentials are read, per scheme).
Reading goes through fsspec (:class:`~geochip.core.storage.ObjectPath`): obstore's client
hangs in a process forked after it was used (a DataLoader worker), fsspec makes fresh
clients after ``fork``.

**Commit protocol without rename.** One PUT makes one object whole or absent; a store is
complete when ``manifest.json`` exists. A build writes the chunk objects of a batch, then
that batch's record (with the sha256 of every chunk object), then the index, the band
statistics and the manifest last. A resume re-reads the chunk objects of every recorded
batch and hashes their bytes (ETags are not checksums of the bytes for multipart uploads,
and differ between stores); a batch whose objects do not match is written again.

**One writer per prefix.** A writer first creates ``.geochip/lock`` with a conditional
write (``If-None-Match: *``): a second build of the same prefix gets
:class:`~geochip.errors.StoreBusyError` naming the owner. The lock is removed when the build
ends (also on an error or Ctrl-C); only a killed process leaves it, and then
``--force-unlock`` (``force=True``) takes it over. There is no lease or heartbeat: a lock
never expires on its own, so a slow build is never overtaken by a second one.

Example:
    >>> root = ObjectPath("memory://geochip-remote-doc/ds")
    >>> with store_lock(root):
    ...     try:
    ...         store_lock(root).__enter__()
    ...     except StoreBusyError as err:
    ...         print(type(err).__name__)
    StoreBusyError
    >>> (root / ".geochip" / "lock").exists()
    False
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.retry import retry
from ..core.storage import ObjectPath, scheme_of
from ..errors import StoreBusyError

__all__ = [
    "LOCK_FILE",
    "REMOTE_CHIPS_PER_SHARD",
    "put_objects",
    "store_lock",
    "zarr_store",
]

#: Chips per shard of remote stores unless the config says otherwise. Measured with
#: write_store (256 chips of 4 x 64 x 64 uint16, 2 threads) against moto on loopback, then
#: 256 chips read in random order in batches of 32: one chip per object wrote in 3.3 s,
#: shards of 16 in 1.0-1.1 s, 32 in 0.61-0.63 s, 64 in 0.61-0.66 s; reads took 1.2-1.9 s
#: for every size (1.00-1.06 requests per chip: the shard indexes, then one range per chip).
#: 32 writes as fast as 64 with half the chips per build task (batches are whole shards).
REMOTE_CHIPS_PER_SHARD = 32

#: The lock object of a writer, relative to the store's root.
LOCK_FILE = ".geochip/lock"


def zarr_store(path: Path | ObjectPath, *, read_only: bool = False) -> Any:
    """The Zarr store of ``path``: the local path itself, or fsspec's store of the URL (the
    arrays' metadata; chunk objects are written by :func:`put_objects`)."""
    if isinstance(path, Path):
        return str(path)
    import zarr.storage  # lazy: ~0.6 s; DataLoader workers read chunk files without it

    path.fs  # noqa: B018 - a MissingExtraError when the scheme's package is missing
    return zarr.storage.FsspecStore.from_url(path.url, read_only=read_only)


def put_objects(root: ObjectPath, blobs: Mapping[str, bytes]) -> None:
    """PUT each of ``blobs`` (keys relative to ``root``) as one whole object, all at once:
    to S3 through obstore where it is installed, one request per object (no multipart: a
    shard of 12 MB went up in 5 requests), else (and to ``gs://``, ``az://``) through
    fsspec, which reads the same credentials as the readers. A transient failure is tried
    again (a PUT of the same bytes is idempotent)."""
    if not blobs:
        return
    if scheme_of(root.url) != "s3" or not importlib.util.find_spec("obstore"):
        root.fs.pipe({(root / key).path: data for key, data in blobs.items()})
        return
    import obstore  # lazy: an optional package (the s3 extra)

    store = _obstore(root.url)

    def put(item: tuple[str, bytes]) -> None:
        key, data = item
        retry(lambda: obstore.put(store, key, data, use_multipart=False))

    with ThreadPoolExecutor(len(blobs), thread_name_prefix="geochip-put") as pool:
        list(pool.map(put, blobs.items()))


_CLIENTS: dict[tuple[Any, ...], Any] = {}


def _obstore(url: str) -> Any:
    """obstore's store of ``url``, one per process and endpoint (its connections are kept
    between batches; a forked process makes its own)."""
    from obstore.store import from_url  # lazy: an optional package (the s3 extra)

    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"))
    key = (os.getpid(), url, endpoint)
    if key not in _CLIENTS:
        _CLIENTS[key] = from_url(url)
    return _CLIENTS[key]


def _owner() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def store_lock(
    root: Path | ObjectPath, *, force: bool = False, name: str = LOCK_FILE
) -> Iterator[None]:
    """Hold the writer's lock of the remote store ``root`` for the block (nothing for a
    local folder: local builds keep their rename-based protocol). ``force``: take over a
    lock left by a killed build. A lock held by someone else: StoreBusyError."""
    if not isinstance(root, ObjectPath):
        yield
        return
    lock = root / name
    owner = _owner()
    data = json.dumps(owner, sort_keys=True).encode()
    if force:
        lock.unlink(missing_ok=True)
    try:
        lock.create(data)
    except FileExistsError:
        try:
            held = json.loads(lock.read_text())
            who = f"{held.get('host')} pid {held.get('pid')} since {held.get('started')}"
        except (OSError, ValueError):
            held, who = {}, "an unknown writer"
        # our own token: the answer to our create was lost and the client's retry found it
        if held.get("token") != owner["token"]:
            raise StoreBusyError(
                f"{root} is being written by another build ({who}; lock {lock}). Wait for it "
                "to finish; if that build was killed, run again with --force-unlock "
                "(build(..., force_unlock=True)) to take the lock over and resume"
            ) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            # ours still (not taken over by --force-unlock): remove it
            if json.loads(lock.read_text()).get("token") == owner["token"]:
                lock.unlink(missing_ok=True)

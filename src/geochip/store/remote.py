"""Stores in object storage (``s3://``, ``gs://``, ``az://``, ``memory://``): the Zarr store
the arrays are written through, the default layout of remote stores, and the lock that keeps
two writers off one prefix.

**Zarr through obstore.** Writing 256 chips (4 x 64 x 64 uint16) to moto's S3 server on
loopback took 0.13 s through ``zarr.storage.ObjectStore`` (obstore) and 0.24 s through
``zarr.storage.FsspecStore`` (s3fs) with shards of 32 chips, 0.71 s and 1.26 s with one
chip per object: obstore writes about twice as fast, so the writer uses it where it is
installed (the ``s3``/``gcs``/``azure`` extras) and falls back to fsspec (and for
``memory://``). Reading goes through fsspec (:class:`~geochip.core.storage.ObjectPath`):
obstore's client hangs in a process forked after it was used (a DataLoader worker), fsspec
makes fresh clients after ``fork``.

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
import hashlib
import importlib.util
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.retry import retry_async
from ..core.storage import ObjectPath, scheme_of
from ..errors import StoreBusyError

__all__ = [
    "LOCK_FILE",
    "REMOTE_CHIPS_PER_SHARD",
    "hashing_store",
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
    """The Zarr store of ``path``: the local path itself, obstore's store for ``s3://``,
    ``gs://`` and ``az://`` when obstore is installed and the store is written, fsspec's
    otherwise (reads: fork-safe)."""
    if isinstance(path, Path):
        return str(path)
    import zarr.storage  # lazy: ~0.6 s; DataLoader workers read chunk files without it

    scheme = scheme_of(path.url)
    if not read_only and scheme != "memory" and importlib.util.find_spec("obstore"):
        from obstore.store import from_url  # lazy: an optional package (the s3 extra)

        return zarr.storage.ObjectStore(from_url(path.url))
    path.fs  # noqa: B018 - a MissingExtraError when the scheme's package is missing
    return zarr.storage.FsspecStore.from_url(path.url, read_only=read_only)


def hashing_store(path: Path | ObjectPath) -> Any:
    """:func:`zarr_store` of ``path`` wrapped so that ``store.digests`` maps every key
    written to the sha256 of its bytes (remote stores: a batch's record comes from the bytes
    PUT, without reading them back), and reads are retried (see below)."""
    from zarr.storage import WrapperStore  # lazy: ~0.6 s

    class _Hashing(WrapperStore[Any]):
        def __init__(self, store: Any) -> None:
            super().__init__(store)
            self.digests: dict[str, str] = {}

        async def set(self, key: str, value: Any) -> None:
            await self._store.set(key, value)
            self.digests[key] = hashlib.sha256(value.to_bytes()).hexdigest()

        # Reads (array metadata, a shard a batch completes) tried again on a transient
        # failure: obstore retries a request that got no answer, not a body cut short after
        # its headers (through testing.proxy, 10% of GETs cut short failed builds on
        # chips.zarr/image/zarr.json)
        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            return await retry_async(lambda: self._store.get(key, prototype, byte_range))

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
            ranges = list(key_ranges)
            return await retry_async(lambda: self._store.get_partial_values(prototype, ranges))

    return _Hashing(zarr_store(path))


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

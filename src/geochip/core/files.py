"""Files that appear complete or not at all, and their checksums.

Every file geochip writes goes through :func:`atomic_path`: it is written under a hidden
temporary name in the same folder (``.<name>.<pid>.<n>.partial``, so the same file
system) and renamed onto its final name only once it is complete, so an interrupted
write never leaves a file with the final name (RELIABILITY.md). Stores remove leftover
``.*.partial`` files when a build resumes. An object-store path
(:class:`~geochip.core.storage.ObjectPath`) needs no rename: one PUT makes the object
appear whole or not at all, so the functions here write it directly.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "manifest.json"
    >>> atomic_write_text(path, "{}")
    >>> path.read_text(), sha256_file(path)[:12], sorted(p.name for p in path.parent.iterdir())
    ('{}', '44136fa355b3', ['manifest.json'])
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .storage import ObjectPath

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_partials",
    "remove_tree",
    "sha256_file",
]

_COUNTER = itertools.count()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; renamed onto ``path`` when the block
    ends without an error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_COUNTER)}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove what interrupted :func:`atomic_path` writes of ``path`` left beside it: its
    ``.<name>.<pid>.<n>.partial`` files (and the side files GDAL makes next to them, such as
    ``.partial.ovr.tmp``) whose process is gone. Returns what was removed."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}.*.partial*"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write_bytes(path: str | Path | ObjectPath, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename; one PUT
    for an object)."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path | ObjectPath, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path | ObjectPath) -> str | None:
    """The sha256 of a file's (or an object's) bytes (hex), or None when it does not exist.
    Objects are hashed from their bytes, not trusted by their ETag."""
    try:
        if isinstance(path, ObjectPath):
            return hashlib.sha256(path.read_bytes()).hexdigest()
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def remove_tree(path: str | Path | ObjectPath) -> None:
    """Remove a folder (or every object under a prefix); nothing when it is not there."""
    if isinstance(path, ObjectPath):
        path.remove_tree()
    else:
        shutil.rmtree(path, ignore_errors=True)

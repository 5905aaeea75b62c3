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
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, StoreError
from .security import redact
from .storage import ObjectPath, check_writable, filesystem, is_url, local_path, parent

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_file_name",
    "check_file_output",
    "output_file",
    "output_folder",
    "remove_stale_partials",
    "remove_tree",
    "sha256_file",
    "write_bytes",
    "write_text",
]

_COUNTER = itertools.count()


def check_file_name(location: str | Path) -> None:
    """Refuse (:class:`~geochip.errors.InputError`) a file output that names a folder: a
    local folder that exists, a path or URL ending in ``/``, or a bare bucket
    (``s3://bucket``), before anything is written. :func:`output_file` and
    :func:`write_bytes` (every file a user names) call it; the store's own files, written
    through :func:`atomic_path` one per chip, are named by geochip and skip the check.

    >>> check_file_name("s3://bucket/out/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geochip.errors.InputError: s3://bucket/out/ names a folder, not a file: ...
    """
    text = str(location)
    if is_url(text):
        key = text.split("://", 1)[1].partition("/")[2]
        folder = not key or text.endswith("/")
    else:
        folder = text.endswith(("/", os.sep)) or local_path(text).is_dir()
    if folder:
        raise InputError(
            f"{text} names a folder, not a file: give a file name in it "
            f"({text.rstrip('/' + os.sep)}/NAME)"
        )


def check_file_output(location: str | Path) -> None:
    """:func:`check_file_name`, then :func:`~geochip.core.storage.check_writable` of the
    folder it goes in: a file output refused before any work."""
    check_file_name(location)
    check_writable(parent(location))


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
    if not isinstance(path, ObjectPath) and is_url(path):
        path = ObjectPath(str(path))
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


# --- outputs: an object appears complete (one PUT, or a completed multipart upload) or not
# at all; object stores have no rename, so a file is made locally and uploaded once done


def _upload_error(location: str | Path, err: BaseException) -> StoreError:
    return StoreError(
        f"cannot write {location}: {type(err).__name__}: {redact(str(err))}; check that the "
        "bucket exists and that the credentials in the environment may write it"
    )


@contextlib.contextmanager
def output_file(location: str | Path) -> Iterator[Path]:
    """A local path to write the file ``location`` into (any writer: GDAL, pyarrow,
    netCDF). It appears at ``location`` complete or not at all: a local path through
    :func:`geochip.core.files.atomic_path` (renamed once complete), a URL by one upload
    of the finished temporary file (``put_file``: one PUT, or a multipart upload that only
    shows once completed). Nothing is written when the block raises.

    >>> with output_file("memory://out/a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> from geochip.core.storage import read_bytes
    >>> read_bytes("memory://out/a.txt")
    b'done'
    """
    check_file_name(location)
    if not is_url(location):
        with atomic_path(local_path(location)) as tmp:
            yield tmp
        return
    fs, path = filesystem(location)
    with tempfile.TemporaryDirectory(prefix="geochip-out-") as folder:
        tmp = Path(folder) / posixpath.basename(path.rstrip("/"))
        yield tmp
        try:
            fs.put_file(str(tmp), path)
        except Exception as err:
            raise _upload_error(location, err) from None


@contextlib.contextmanager
def output_folder(location: str | Path, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local folder to write the folder ``location`` into (a Zarr store). A local
    ``location`` gets it by one rename; a URL gets its files uploaded one object each,
    the top-level files named in ``last`` (the metadata a reader opens first, such as
    ``.zmetadata``) after all others, in that order, so a reader that finds the last one
    finds a complete folder."""
    if not is_url(location):
        target = local_path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as made:
            yield Path(made) / target.name
            os.replace(Path(made) / target.name, target)
        return
    fs, root = filesystem(location)
    with tempfile.TemporaryDirectory(prefix="geochip-out-") as folder:
        tmp = Path(folder) / posixpath.basename(root.rstrip("/"))
        yield tmp

        def rank(file: Path) -> int:  # top-level files named in `last`: in that order
            return last.index(file.name) + 1 if file.parent == tmp and file.name in last else 0

        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=rank)
        try:
            for file in files:
                fs.put_file(str(file), f"{root.rstrip('/')}/{file.relative_to(tmp).as_posix()}")
        except Exception as err:
            raise _upload_error(location, err) from None


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write ``data`` to ``location`` atomically (a local rename, or one PUT)."""
    check_file_name(location)
    if not is_url(location):
        atomic_write_bytes(local_path(location), data)
        return
    fs, path = filesystem(location)
    try:
        fs.pipe_file(path, data)
    except Exception as err:
        raise _upload_error(location, err) from None


def write_text(location: str | Path, text: str) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    write_bytes(location, text.encode("utf-8"))

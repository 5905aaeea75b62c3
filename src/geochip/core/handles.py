"""Open raster handles, kept per thread and per process, and dropped after a fork.

Reading a window through a fresh ``rasterio.open`` costs a header read (over HTTP, a
request); geochip's readers keep one handle per (path, overview level) in each thread
(:func:`get_handle`), at most 64, and close the oldest beyond that. A forked child (a
DataLoader worker) never uses or closes the parent's handles (they share file offsets);
it opens its own. Local files are checked once per read generation
(:func:`refresh_handles`): a file replaced or rewritten since it was opened is reopened.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import rasterio

from .env import GdalEnv, is_remote


class _Handles(threading.local):
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[tuple[str, int | None], _Handle] = {}


@dataclass
class _Handle:
    ds: Any
    signature: tuple[int, ...] | None  # the local file's identity when it was opened
    generation: int  # the read generation it was last checked in


_HANDLES = _Handles()

_FORKED: list[Any] = []  # handles inherited through fork: never used, never closed

_GENERATION = [0]


def _forget_handles_after_fork() -> None:
    # A forked child must not use (or close) the parent's GDAL handles: they share file
    # offsets with the parent (xbatcher's ZIPDecode errors under DataLoader fork).
    _FORKED.append(_HANDLES.open)
    _HANDLES.open = {}
    _HANDLES.pid = os.getpid()


os.register_at_fork(after_in_child=_forget_handles_after_fork)


_MAX_HANDLES = 64


def refresh_handles() -> None:
    """Start a new read generation: handles kept open from earlier reads (geochip's reader
    threads live as long as the process) check, at their next use, that their local file
    was not replaced or rewritten meanwhile, and reopen it if it was."""
    _GENERATION[0] += 1


def _signature(path: str) -> tuple[int, ...] | None:
    if is_remote(path) or path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (-1,)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def get_handle(path: str, overview_level: int | None, env: GdalEnv) -> Any:
    """This thread's open handle on ``path`` at ``overview_level`` (opened on first use)."""
    handles = _HANDLES
    if handles.pid != os.getpid():  # pragma: no cover - covered by the fork hook
        _forget_handles_after_fork()
    key = (path, overview_level)
    generation = _GENERATION[0]
    entry = handles.open.get(key)
    if entry is not None and entry.generation != generation:
        if _signature(path) == entry.signature:
            entry.generation = generation
        else:  # the file changed since it was opened
            handles.open.pop(key).ds.close()
            entry = None
    if entry is None:
        if len(handles.open) >= _MAX_HANDLES:
            oldest = next(iter(handles.open))
            handles.open.pop(oldest).ds.close()
        signature = _signature(path)
        with env.activate():
            kwargs = {} if overview_level is None else {"overview_level": overview_level}
            ds = rasterio.open(path, **kwargs)
        entry = _Handle(ds, signature, generation)
        handles.open[key] = entry
    return entry.ds


def drop_handle(path: str, overview_level: int | None) -> None:
    """Close and forget this thread's handle on ``path`` (after a failed read)."""
    entry = _HANDLES.open.pop((path, overview_level), None)
    if entry is not None:
        entry.ds.close()


def close_handles() -> None:
    """Close the calling thread's open file handles."""
    for entry in _HANDLES.open.values():
        entry.ds.close()
    _HANDLES.open.clear()

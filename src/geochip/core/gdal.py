"""The GDAL C API functions rasterio does not expose (through ctypes, on rasterio's own
libgdal), and the tap that sees errors GDAL signals without raising them.

* :func:`clear_curl_cache` forgets what GDAL cached about a URL (a failed request is cached
  and would otherwise fail again with a vaguer message, OSGeo/gdal#8922);
* :func:`set_block_cache` caps GDAL's block cache of the process;
* :func:`checked` runs a read and fails it when GDAL signalled an error meanwhile (a
  truncated COG tile index otherwise reads as zeros).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import rasterio._base  # noqa: F401 - loads rasterio's libgdal, the one _gdal() looks up

__all__ = [
    "checked",
    "clear_curl_cache",
    "set_block_cache",
    "tap_gdal_errors",
]

T = TypeVar("T")

_LIB: Any = None

_LIB_LOCK = threading.Lock()


def _gdal() -> Any:
    """The libgdal that rasterio loaded (same library instance), or None if not found."""
    global _LIB  # noqa: PLW0603 - one process-wide handle on the loaded library
    with _LIB_LOCK:
        if _LIB is None:
            lib: Any = False
            try:
                with open("/proc/self/maps", encoding="utf-8") as maps:
                    paths = sorted({ln.split()[-1] for ln in maps if "libgdal" in ln})
                # other wheels (pyogrio) bundle their own libgdal: take rasterio's
                paths.sort(key=lambda p: "rasterio" not in p)
                for path in paths:
                    candidate = ctypes.CDLL(path)
                    if hasattr(candidate, "VSICurlPartialClearCache"):
                        lib = candidate
                        lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
                        lib.GDALSetCacheMax64.argtypes = [ctypes.c_int64]
                        lib.GDALGetCacheMax64.restype = ctypes.c_int64
                        break
            except OSError:  # pragma: no cover - not Linux, or no /proc
                lib = False
            _LIB = lib
        return _LIB or None


def clear_curl_cache(path: str) -> bool:
    """Forget what GDAL cached about ``path`` (file size, failed requests, data ranges).

    Returns False when the GDAL library could not be reached (the retry then reopens with
    ``CPL_VSIL_CURL_NON_CACHED`` instead).
    """
    lib = _gdal()
    if lib is None:  # pragma: no cover - depends on the platform
        return False
    target = path if path.startswith("/vsi") else f"/vsicurl/{path}"
    lib.VSICurlPartialClearCache(target.encode())
    return True


def set_block_cache(megabytes: int) -> None:
    """Cap GDAL's block cache of this process at ``megabytes`` (never raises it)."""
    lib = _gdal()
    if lib is None:  # pragma: no cover - depends on the platform
        return
    wanted = int(megabytes) << 20
    if lib.GDALGetCacheMax64() > wanted:
        lib.GDALSetCacheMax64(wanted)


class _GdalErrorTap(logging.Filter):
    """Collects the GDAL errors rasterio logs on the calling thread without raising them.

    GDAL can signal a failure and still return success: a truncated transfer of a COG's
    tile index leaves some tiles without an offset, and GDAL then reads them as empty
    tiles, i.e. zeros (seen with HTTP bodies cut short). rasterio logs every signalled
    error at INFO; this filter sees those records (the logger is lowered to INFO for it)
    and passes on only what the logger would have passed before, so nothing new is
    printed.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.level = logger.level

    def filter(self, record: logging.LogRecord) -> bool:
        box = getattr(_ERRORS, "box", None)
        if box is not None and str(record.msg).startswith("GDAL signalled an error"):
            box.append(record.getMessage())
        before = self.level
        if before == logging.NOTSET:
            before = self.logger.parent.getEffectiveLevel() if self.logger.parent else 0
        return record.levelno >= before


_ERRORS = threading.local()

_TAP: list[_GdalErrorTap] = []

_TAP_LOCK = threading.Lock()


def tap_gdal_errors() -> None:
    """Install the tap :func:`checked` needs (once per process)."""
    if _TAP:
        return
    with _TAP_LOCK:
        if not _TAP:
            logger = logging.getLogger("rasterio._err")
            tap = _GdalErrorTap(logger)
            logger.addFilter(tap)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            _TAP.append(tap)


def checked(fn: Callable[[], T]) -> T:
    """``fn()``, failing when GDAL signalled an error on this thread meanwhile."""
    outer = getattr(_ERRORS, "box", None)
    box: list[str] = []
    _ERRORS.box = box
    try:
        result = fn()
    finally:
        _ERRORS.box = outer
    if box:
        raise OSError(f"GDAL reported an error but returned data: {box[-1]}")
    return result

"""Which failures are worth another try, and trying again.

:func:`is_transient` is geochip's one policy: throttling (429), server errors (5xx),
resets, timeouts and truncated transfers are transient; a 4xx answer, a missing file, a
refused permission or a missing overview level is not. A local path never fails
transiently. A remote file that GDAL "does not recognise" is ambiguous (a truncated header
looks like that): it is tried again only when the path is known to be remote.

:func:`call_with_retries` wraps GDAL reads of one path (clears GDAL's curl cache before
each retry, and counts a read during which GDAL signalled an error as failed even when
GDAL returned data); :func:`retry` wraps any call (a build task's reads through odc-stac).

Example:
    >>> is_transient(OSError("HTTP response code: 503"))
    True
    >>> is_transient(OSError("HTTP response code: 404"), "https://h/a.tif")
    False
    >>> is_transient(OSError("TIFFReadEncodedTile() failed"), "/data/a.tif")
    False
    >>> is_transient(OSError("TIFFReadEncodedTile() failed"), "https://h/a.tif")
    True
"""

from __future__ import annotations

import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from .env import GdalEnv, is_remote
from .gdal import checked, clear_curl_cache, tap_gdal_errors
from .security import redact

__all__ = [
    "call_with_retries",
    "http_status",
    "is_transient",
    "retry",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Failures a retry cannot fix: an HTTP answer that will not change, a missing file, a
#: refused permission, an overview the file does not have.
_PERMANENT = re.compile(
    r"HTTP response code: (40[0-4]|41[0-9]|451)\b|\b(40[0134]|410)\b.*(not found|forbidden|"
    r"unauthori[sz]ed|bad request)|does not exist|no such file|not found|forbidden|"
    r"permission denied|Cannot open overview level",
    re.IGNORECASE,
)
#: What a truncated transfer can also cause (GDAL parses the bytes it got): transient only
#: for a remote path, and then tried at most twice unless the file was opened before.
_AMBIGUOUS = re.compile(
    r"not recognized as (being in )?a supported|not a supported file format", re.IGNORECASE
)
#: Failures worth retrying: throttling, server errors, resets, timeouts.
_TRANSIENT = re.compile(
    r"\b(429|500|502|503|504)\b|too many requests|timed? ?out|timeout|connection (reset|"
    r"aborted|refused)|broken pipe|temporar(y|ily)|try again|service unavailable|"
    r"curl error|reset by peer|unexpected eof|ssl|"
    # obstore (reqwest/hyper): a body cut short after the headers, a request that got no answer
    r"request or response body error|incomplete ?body|error sending request",
    re.IGNORECASE,
)


def _text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    if cause is not None:
        text += f" / {type(cause).__name__}: {cause}"
    return text


def is_transient(error: BaseException, path: str | None = None) -> bool:
    """Whether a failed call may succeed when tried again (see the module doc).

    ``path`` is the file the call read, when known: a local path never fails transiently,
    and a remote read that failed for a reason no pattern names (a truncated body, a
    failed tile decode) is transient. Without a path, such an unnamed failure is not.
    """
    if path is not None and not is_remote(path):
        return False
    text = _text(error)
    if _PERMANENT.search(text):
        return False
    if _AMBIGUOUS.search(text):
        return path is not None
    if isinstance(error, TimeoutError | ConnectionError) or _TRANSIENT.search(text):
        return True
    return path is not None


def _retry_budget(err: BaseException, path: str, env: GdalEnv, known: bool) -> int:
    if not is_transient(err, path):
        return 0
    if _AMBIGUOUS.search(str(err)) and not known:
        return min(2, env.retries)
    return env.retries


def http_status(path: str, env: GdalEnv) -> int | None:
    """The HTTP status a one-byte range request for ``path`` gets now (None: no answer).

    GDAL reports a failed open as "not recognized as a supported format" whatever the
    server said; geochip asks the server once to tell a 403/404 from a transient failure.
    """
    url = path[len("/vsicurl/") :] if path.startswith("/vsicurl/") else path
    if not url.startswith(("http://", "https://")):
        return None
    headers = {"Range": "bytes=0-0"}
    for line in env.options.get("GDAL_HTTP_HEADERS", "").replace("\r\n", "\n").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip()] = value.strip()
    request = urllib.request.Request(url, headers=headers)
    timeout = float(env.options.get("GDAL_HTTP_CONNECTTIMEOUT", "10"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def _explain(err: BaseException, path: str, env: GdalEnv) -> BaseException:
    """``err``, or an OSError saying what the server answers when GDAL's message hides it
    (GDAL often reports a 403 or 404 as a failed block read or an unrecognised file)."""
    if not is_remote(path) or _PERMANENT.search(str(err)):
        return err
    status = http_status(path, env)
    if status is None or status < 300 or f"code: {status}" in str(err):
        return err
    explained = OSError(f"the server answers HTTP response code: {status} ({err})")
    explained.__cause__ = err
    return explained


def call_with_retries(
    fn: Callable[[], T],
    path: str,
    env: GdalEnv,
    *,
    on_retry: Callable[[int, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    known_raster: bool = False,
) -> T:
    """Call ``fn``; on a transient failure of remote ``path``, clear GDAL's curl cache for
    it, wait with backoff, and call again, at most ``env.retries`` times.

    ``on_retry(attempt, error)`` runs before each retry (readers drop their handle there).
    Permanent failures (404, 403, local files) are raised at once. A remote file that GDAL
    does not recognise is tried twice more (a truncated transfer looks like that), or with
    the full budget when ``known_raster`` (it was opened before).
    """
    tap_gdal_errors()
    attempt = 0
    while True:
        try:
            return checked(fn)
        except Exception as caught:
            err = _explain(caught, path, env)
            if attempt >= _retry_budget(err, path, env, known_raster):
                if err is caught:
                    raise
                raise err from caught

            log.info(
                "retrying %s after %s (attempt %d)", redact(path), redact(str(err)), attempt + 1
            )
            clear_curl_cache(path)
            if on_retry is not None:
                on_retry(attempt, err)
            sleep(env.delay(attempt))
            attempt += 1


def retry(
    fn: Callable[[], T],
    *,
    retries: int = 3,
    delay: float = 0.5,
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``fn``; on a transient error retry up to ``retries`` times, waiting ``delay``,
    then twice as long each time (capped at 30 s). Permanent errors are raised at once.

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise OSError("HTTP 503")
    ...     return "ok"
    >>> retry(flaky, retries=3, delay=0), len(calls)
    ('ok', 3)
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if attempt >= retries or not transient(err):
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, err)
            sleep(min(delay * 2 ** (attempt - 1), 30.0))

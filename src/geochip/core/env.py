"""GDAL and HTTP settings in one place: for reads in this process, and for a build's tasks.

GDAL does not retry by default, has no total timeout and never aborts a stalled transfer;
misspelt option names are silently ignored. :class:`GdalEnv` holds geochip's defaults
(:data:`DEFAULTS`), takes user overrides whose names are checked against GDAL's option names,
never shows secret values in its ``repr``, and is applied around every open and read
(thread-locally in geochip's reader threads, so it also holds in DataLoader workers).

A build's tasks carry their GDAL options (:func:`worker_options`: the defaults, the config's
overrides, never a credential) and apply them around each read (:func:`gdal_env`).
Both add, under their own options, GDAL's options for the S3 endpoint the environment names
the way the AWS SDKs read it (:func:`geochip.core.storage.gdal_options`: ``AWS_ENDPOINT_URL``
becomes ``AWS_S3_ENDPOINT``...), read from the environment of the process that reads, so
``s3://`` rasters on MinIO, Ceph or a local test server open without GDAL-specific settings.
Retrying reads is :mod:`geochip.core.retry`; the credential option names are
:data:`geochip.core.security.CREDENTIAL_OPTIONS`.

Example:
    >>> env = GdalEnv.default().with_options(GDAL_HTTP_TIMEOUT=5)
    >>> env.options["GDAL_HTTP_TIMEOUT"], env.options["GDAL_DISABLE_READDIR_ON_OPEN"]
    ('5', 'EMPTY_DIR')
    >>> GdalEnv.default().with_options(GDAL_HTTP_TIMOUT=5)
    Traceback (most recent call last):
    ...
    geochip.errors.ConfigError: unknown GDAL option 'GDAL_HTTP_TIMOUT' (did you mean ...
    >>> GdalEnv.default().with_options(GDAL_HTTP_HEADERS="Authorization: Bearer s3cr3t")
    GdalEnv(GDAL_HTTP_HEADERS='REDACTED', ..., retries=4)
"""

from __future__ import annotations

import contextlib
import difflib
import random
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import rasterio
import rasterio.env

from ..errors import ConfigError, InputError
from .security import CREDENTIAL_OPTIONS, is_credential_option, redact
from .storage import gdal_options

__all__ = [
    "DEFAULTS",
    "KNOWN_OPTIONS",
    "WORKER_DEFAULTS",
    "GdalEnv",
    "gdal_env",
    "is_remote",
    "probe_gdal",
    "safe_gdal_options",
    "worker_options",
]

#: geochip's GDAL defaults (RELIABILITY.md): retries, timeouts that end stalled transfers,
#: no directory listing on open, range merging. Override any of them per :class:`GdalEnv`.
DEFAULTS: dict[str, str] = {
    # GDAL's own retries of HTTP 429/5xx responses; geochip retries the rest
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    # a total limit per request and a connect limit
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    # abort a transfer that runs below 1 kB/s for 20 s (a stall)
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1024",
    "GDAL_HTTP_LOW_SPEED_TIME": "20",
    # do not list the remote "directory" to look for sidecar files on open
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}

#: GDAL options every build worker gets besides :data:`DEFAULTS`: GDAL's block cache is 5 %
#: of RAM per process by default and adds up over Dask workers (RELIABILITY.md).
WORKER_DEFAULTS: dict[str, str | int | float | bool] = {"GDAL_CACHEMAX": 256}

#: GDAL configuration options geochip accepts by name (GDAL silently ignores unknown names).
KNOWN_OPTIONS: frozenset[str] = frozenset(
    {
        *DEFAULTS,
        "GDAL_CACHEMAX",
        "GDAL_NUM_THREADS",
        "GDAL_HTTP_AUTH",
        "GDAL_HTTP_BEARER",
        "GDAL_HTTP_COOKIE",
        "GDAL_HTTP_COOKIEFILE",
        "GDAL_HTTP_HEADERS",
        "GDAL_HTTP_HEADER_FILE",
        "GDAL_HTTP_MAX_CACHED_CONNECTIONS",
        "GDAL_HTTP_MAX_HOST_CONNECTIONS",
        "GDAL_HTTP_MULTIPLEX",
        "GDAL_HTTP_VERSION",
        "GDAL_HTTP_PROXY",
        "GDAL_HTTP_PROXYUSERPWD",
        "GDAL_HTTP_RETRY_CODES",
        "GDAL_HTTP_TCP_KEEPALIVE",
        "GDAL_HTTP_UNSAFESSL",
        "GDAL_HTTP_USERAGENT",
        "GDAL_HTTP_USERPWD",
        "GDAL_HTTPS_PROXY",
        "GDAL_INGESTED_BYTES_AT_OPEN",
        "GDAL_PROXY_AUTH",
        "CPL_CURL_VERBOSE",
        "CPL_DEBUG",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS",
        "CPL_VSIL_CURL_CACHE_SIZE",
        "CPL_VSIL_CURL_CHUNK_SIZE",
        "CPL_VSIL_CURL_NON_CACHED",
        "CPL_VSIL_CURL_USE_HEAD",
        "CPL_VSIL_CURL_USE_S3_REDIRECT",
        "CURL_CA_BUNDLE",
        "VSI_CACHE",
        "VSI_CACHE_SIZE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_NO_SIGN_REQUEST",
        "AWS_PROFILE",
        "AWS_REQUEST_PAYER",
        "AWS_S3_ENDPOINT",
        "AWS_HTTPS",
        "AWS_VIRTUAL_HOSTING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_NO_SIGN_REQUEST",
        "GS_ACCESS_KEY_ID",
        "GS_SECRET_ACCESS_KEY",
        "GS_NO_SIGN_REQUEST",
        "GOOGLE_APPLICATION_CREDENTIALS",
        *CREDENTIAL_OPTIONS,
    }
)

_REMOTE = re.compile(
    r"^(/vsicurl|/vsis3|/vsigs|/vsiaz|/vsiadls|/vsioss|/vsiswift|https?://|s3://|gs://|az://)"
)


def is_remote(path: str) -> bool:
    """Whether ``path`` is read over the network (http(s) URLs, /vsicurl/, cloud buckets)."""
    return bool(_REMOTE.match(path))


def _validate(options: Mapping[str, Any], allow_unknown: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in options.items():
        if not isinstance(name, str) or name != name.upper():
            raise ConfigError(f"GDAL option names are upper case, got {name!r}")
        if name not in KNOWN_OPTIONS and not allow_unknown:
            close = difflib.get_close_matches(name, sorted(KNOWN_OPTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown GDAL option {name!r}{hint}; GDAL would silently ignore it. "
                "Pass allow_unknown=True if it is a new option"
            )
        out[name] = ("YES" if value else "NO") if isinstance(value, bool) else str(value)
    return out


@dataclass(frozen=True)
class GdalEnv:
    """GDAL configuration options plus geochip's retry policy, applied around every read.

    ``retries`` is how many times a transient failure is retried (``backoff`` seconds before
    the first retry, doubling up to ``max_backoff``, with jitter). ``block_cache_mb`` caps
    GDAL's block cache in every process that streams chips (GDAL's default is 5% of RAM per
    process, which adds up over DataLoader workers); None leaves it alone. Streaming keeps
    the decoded tiles it shares between chips itself, so GDAL's copy buys nothing: 16 MB
    streamed as fast as 64 MB on the chips benchmark, with ~50 MB less peak RSS.
    """

    options: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULTS))
    retries: int = 4
    backoff: float = 0.25
    max_backoff: float = 8.0
    block_cache_mb: int | None = 16

    @classmethod
    def default(cls) -> GdalEnv:
        """geochip's defaults (:data:`DEFAULTS`)."""
        return cls()

    def with_options(self, allow_unknown: bool = False, **options: Any) -> GdalEnv:
        """A copy with ``options`` added or replaced (names are validated)."""
        return replace(self, options={**self.options, **_validate(options, allow_unknown)})

    def with_retries(
        self, retries: int, backoff: float | None = None, max_backoff: float | None = None
    ) -> GdalEnv:
        """A copy with another retry policy."""
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        return replace(
            self,
            retries=retries,
            backoff=self.backoff if backoff is None else backoff,
            max_backoff=self.max_backoff if max_backoff is None else max_backoff,
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _validate(self.options, allow_unknown=True))

    def __repr__(self) -> str:
        shown = []
        for name, value in sorted(self.options.items()):
            if name in DEFAULTS and DEFAULTS[name] == value:
                continue
            text = "REDACTED" if is_credential_option(name) else redact(value)
            shown.append(f"{name}={text!r}")
        return f"GdalEnv({', '.join([*shown, '...', f'retries={self.retries}'])})"

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), with jitter."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return float(base * (0.5 + random.random() / 2))

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Apply the options for the duration of the block (thread-locally off the main
        thread; process-wide in the main thread, restored on exit)."""
        if (
            getattr(_THREAD, "env", None) == self
            and getattr(_THREAD, "endpoint", None) == gdal_options()
        ):
            yield
            return
        with rasterio.Env(**self.effective_options()):
            yield

    def effective_options(self) -> dict[str, str]:
        """The options applied: the environment's endpoint options (module doc) with
        :attr:`options` on top."""
        return {**gdal_options(), **self.options}

    def enter_thread(self) -> None:
        """Apply the options to the calling thread for the rest of its life (geochip's own
        reader threads call this once when they start)."""
        previous = getattr(_THREAD, "rio_env", None)
        if previous is not None:
            previous.__exit__(None, None, None)
        endpoint = gdal_options()
        env = rasterio.Env(**{**endpoint, **self.options})
        env.__enter__()
        _THREAD.rio_env = env
        _THREAD.env = self
        _THREAD.endpoint = endpoint

    def ensure_thread(self) -> None:
        """:meth:`enter_thread` unless the calling thread already has these options
        (geochip's reader threads serve every stream of the process, each with its env)."""
        current = getattr(_THREAD, "env", None)
        if (current is not self and current != self) or getattr(
            _THREAD, "endpoint", None
        ) != gdal_options():
            self.enter_thread()


_THREAD = threading.local()


def safe_gdal_options(options: Mapping[str, Any]) -> dict[str, str | int]:
    """GDAL options for :func:`gdal_env`, refusing names that carry credentials.

    >>> safe_gdal_options({"GDAL_CACHEMAX": 256, "GDAL_HTTP_MAX_RETRY": 3, "CPL_DEBUG": False})
    {'GDAL_CACHEMAX': 256, 'GDAL_HTTP_MAX_RETRY': '3', 'CPL_DEBUG': 'NO'}
    """
    out = {}
    for key, value in options.items():
        if is_credential_option(str(key)):
            raise InputError(
                f"GDAL option {key} carries credentials; give it to the workers' environment, "
                "it is not shipped in tasks"
            )
        text = ("YES" if value else "NO") if isinstance(value, bool) else str(value)
        # rasterio wants GDAL_CACHEMAX as an int (bytes if > 100000, else megabytes)
        out[str(key)] = int(value) if key == "GDAL_CACHEMAX" else text
    return out


@contextlib.contextmanager
def gdal_env(options: Mapping[str, str | int]) -> Iterator[None]:
    """Apply GDAL ``options`` around a read (in whatever process runs the task), on top of
    the endpoint options of that process's environment (module doc)."""
    with rasterio.Env(**{**gdal_options(), **options}):
        yield


def probe_gdal(options: Mapping[str, str | int], names: Iterable[str]) -> dict[str, str | None]:
    """The values GDAL sees for ``names`` inside :func:`gdal_env` (for tests and checks)."""
    with gdal_env(options):
        return {name: rasterio.env.get_gdal_config(name) for name in names}


def worker_options(overrides: Mapping[str, Any]) -> dict[str, str | int]:
    """What every task's reads run under: :data:`DEFAULTS` and :data:`WORKER_DEFAULTS`
    with ``overrides`` on top (names checked), refusing credentials.

    >>> options = worker_options({"GDAL_HTTP_TIMEOUT": 5})
    >>> options["GDAL_HTTP_TIMEOUT"], options["GDAL_CACHEMAX"]
    ('5', 256)
    """
    merged = GdalEnv.default().with_options(False, **{**WORKER_DEFAULTS, **overrides}).options
    return safe_gdal_options(merged)

"""Where inputs and outputs live: a local path or a URL (``s3://``, ``gs://``, ``az://``,
``file://``, ``memory://``). One home for telling them apart, opening their fsspec file
system (a named error saying which extra to install when the scheme's package is missing),
joining paths under them, the GDAL path of a raster URL (``/vsis3/...``) and GDAL's options
for the endpoint the environment names, listing folders of files (:func:`raster_files`),
and writing outputs that appear complete or not at all without a rename
(:func:`output_file`, :func:`output_folder`, :func:`write_bytes`: made locally, uploaded
in one request each, what names the rest last). Credentials are never arguments: every
file system and GDAL read them from the environment and the providers' usual configuration
files; their values are redacted from logs once a file system is opened.

Example:
    >>> is_url("s3://bucket/ds"), is_url("data/ds"), is_url("file:///tmp/ds")
    (True, False, False)
    >>> join("s3://bucket/ds/", "chips.zarr", "zarr.json")
    's3://bucket/ds/chips.zarr/zarr.json'
    >>> gdal_path("s3://bucket/scenes/a.tif"), gdal_path("gs://b/a.tif"), gdal_path("file:///x.tif")
    ('/vsis3/bucket/scenes/a.tif', '/vsigs/b/a.tif', '/x.tif')
    >>> fs, path = filesystem("memory://ds")
    >>> fs.pipe_file(join(path, "a.txt"), b"hi"); fs.cat_file("memory://ds/a.txt")
    b'hi'
    >>> gdal_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    {'AWS_S3_ENDPOINT': '127.0.0.1:9000', 'AWS_HTTPS': 'NO', 'AWS_VIRTUAL_HOSTING': 'FALSE'}
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from ..errors import InputError, MissingExtraError, StoreError
from .security import install_log_redaction, is_credential_option, redact, register_secret

if TYPE_CHECKING:
    import fsspec

__all__ = [
    "RASTER_SUFFIXES",
    "SCHEMES",
    "WRITE_PROBE",
    "ObjectPath",
    "StorePath",
    "check_writable",
    "exists",
    "filesystem",
    "gdal_options",
    "gdal_path",
    "is_object_url",
    "is_url",
    "join",
    "list_files",
    "raster_files",
    "local_path",
    "parent",
    "read_bytes",
    "scheme_of",
    "store_path",
]

#: URL scheme -> (Python package of its fsspec file system, geochip extra that installs it,
#: GDAL virtual file system). ``memory`` is fsspec's own (tests); ``file`` is a local path.
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("s3fs", "s3", "/vsis3/"),
    "gs": ("gcsfs", "gcs", "/vsigs/"),
    "gcs": ("gcsfs", "gcs", "/vsigs/"),
    "az": ("adlfs", "azure", "/vsiaz/"),
    "abfs": ("adlfs", "azure", "/vsiaz/"),
    "memory": ("fsspec", "", ""),
}


#: File name endings taken as rasters when a folder is listed (any case).
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")


def raster_files(location: str | Path, recursive: bool = True) -> list[str]:
    """The rasters (:data:`RASTER_SUFFIXES`) in the folder ``location``, sorted: local
    paths, or URLs listed through fsspec for an object-store folder."""
    if is_object_url(location):
        return list_files(str(location), RASTER_SUFFIXES, recursive)
    root = local_path(location)
    walker = root.rglob("*") if recursive else root.glob("*")
    return sorted(str(p) for p in walker if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())


def scheme_of(location: str | Path) -> str:
    """The URL scheme of ``location`` (``""`` for a local path or a ``file://`` URL); an
    :class:`~geochip.errors.InputError` for a scheme geochip does not write or list."""
    if isinstance(location, Path):
        return ""
    text = str(location)
    if "://" not in text:
        return ""
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return ""
    if scheme not in SCHEMES:
        raise InputError(
            f"{text!r}: the scheme {scheme}:// is not supported here; use a local path or "
            f"one of {', '.join(s + '://' for s in sorted(SCHEMES) if s != 'memory')}"
        )
    return scheme


def is_url(location: str | Path) -> bool:
    """True for an object-store URL (not for a local path or ``file://``)."""
    return bool(scheme_of(location))


def is_object_url(href: str | Path) -> bool:
    """True for a URL of a scheme in :data:`SCHEMES` (an object store); False for anything
    else (local paths, ``http(s)://``, unknown schemes), never raising: for hrefs that
    other code reads (http through ``/vsicurl/``).

    >>> is_object_url("s3://b/a.tif"), is_object_url("https://x/a.tif"), is_object_url("a.tif")
    (True, False, False)
    """
    text = str(href)
    return "://" in text and urlsplit(text).scheme.lower() in SCHEMES


def local_path(location: str | Path) -> Path:
    """The local path of a path or ``file://`` URL."""
    text = str(location)
    if text.startswith("file://"):
        return Path(urlsplit(text).path)
    return Path(text)


def join(location: str | Path, *parts: str) -> str:
    """``location`` and ``parts`` joined with ``/`` (a local path stays a local path)."""
    if not is_url(location):
        return str(local_path(location).joinpath(*parts))
    return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system of ``location`` and the path in it. Credentials and endpoints
    come from the environment (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_*``)
    and the providers' configuration files. A missing package: MissingExtraError."""
    import fsspec  # lazy: fsspec imports a file system's package only for its scheme

    scheme = scheme_of(location)
    if not scheme:
        return fsspec.filesystem("file"), str(local_path(location).absolute())
    package, extra, _ = SCHEMES[scheme]
    if importlib.util.find_spec(package) is None:
        raise MissingExtraError(package, extra)
    _redact_environment_credentials()
    options: dict[str, Any] = {}
    if scheme == "s3" and os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in {"YES", "TRUE", "1"}:
        options["anon"] = True  # a public bucket, as GDAL and the AWS CLI read it unsigned
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if scheme == "s3" and endpoint:
        # fsspec keeps one file system per set of arguments: the endpoint the environment
        # names now is one of them, so a process never writes to the endpoint it saw before
        options["endpoint_url"] = endpoint
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if scheme in {"az", "abfs"} and connection:
        # the same for Azure: adlfs reads this variable once, when the instance is made
        options["connection_string"] = connection
    fs, path = fsspec.core.url_to_fs(str(location), **options)
    return fs, str(path) if scheme != "memory" else str(location)


def list_files(location: str, suffixes: tuple[str, ...], recursive: bool = True) -> list[str]:
    """The URLs of the files under the object-store folder or glob ``location`` whose names
    end in one of ``suffixes`` (any case), sorted; ``[]`` when there are none. Listed
    through fsspec (one listing request per page, not one per file).

    >>> fs, _ = filesystem("memory://scenes")
    >>> for name in ("memory://scenes/b.TIF", "memory://scenes/a.tif", "memory://scenes/x.txt"):
    ...     fs.pipe_file(name, b"")
    >>> list_files("memory://scenes/", (".tif",))
    ['memory://scenes/a.tif', 'memory://scenes/b.TIF']
    """
    fs, path = filesystem(location)
    try:
        if any(ch in path for ch in "*?["):
            found = [name for name in fs.glob(path) if fs.isfile(name)]
        elif recursive:
            found = fs.find(path)
        else:
            found = [e["name"] for e in fs.ls(path, detail=True) if e.get("type") == "file"]
    except Exception as err:  # a missing bucket, no permission, no credentials, no network
        raise InputError(
            f"cannot list {location}: {_cause(err)}; check the URL, "
            "that the bucket exists and that the credentials in the environment may read it"
        ) from None
    names = sorted(str(name) for name in found if str(name).lower().endswith(suffixes))
    scheme = scheme_of(location)
    if scheme == "memory":  # fsspec's memory paths are "/bucket/key"
        return [f"memory:/{name}" for name in names]
    # the scheme the user wrote (fsspec's unstrip_protocol gives az:// back as abfs://)
    return [f"{scheme}://{name}" for name in names]


def _cause(err: BaseException) -> str:
    """``Type: first line of the message`` (redacted): the Azure SDK's messages go on with
    the error's XML body."""
    lines = redact(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _redact_environment_credentials() -> None:
    """Register the credentials the environment holds (``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AZURE_STORAGE_SAS_TOKEN``...: names
    :func:`~geochip.core.security.is_credential_option` knows) as secrets and redact log
    records: the SDKs log request headers at DEBUG, and their errors may quote them."""
    for name, value in os.environ.items():
        if is_credential_option(name):
            register_secret(value)
    install_log_redaction()


def gdal_path(location: str | Path) -> str:
    """The path GDAL opens for ``location``: ``/vsis3/``, ``/vsigs/``, ``/vsiaz/`` for
    object-store URLs, the path for ``file://``; other hrefs (http, local) unchanged."""
    text = str(location)
    if "://" not in text:
        return text
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return str(local_path(text))
    if scheme in SCHEMES and SCHEMES[scheme][2]:
        return SCHEMES[scheme][2] + text.split("://", 1)[1]
    return text


def gdal_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL's S3 options for the endpoint the environment names the way boto3, s3fs and
    obstore read it (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``), unless GDAL's own
    ``AWS_S3_ENDPOINT`` is set. Empty when neither is set (AWS itself)."""
    env = os.environ if environ is None else environ
    url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not url or env.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urlsplit(url)
    return {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "NO" if parts.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


#: The name prefix of :func:`check_writable`'s probe objects (another process's probe, seen
#: for a moment, is not content: :meth:`ObjectPath.iterdir` leaves probes out).
WRITE_PROBE = ".geochip-write-probe-"


def check_writable(location: str | Path | ObjectPath) -> None:
    """Refuse, before any work, a destination that cannot be written: a probe object is
    written under ``location`` and removed. A :class:`~geochip.errors.StoreError` names the
    location and the cause (missing bucket, no permission, no credentials)."""
    if isinstance(location, ObjectPath):
        location = location.url
    if not is_url(location):
        path = local_path(location).absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot write to {location}: {existing} is not a folder this user may write"
            )
        return
    fs, root = filesystem(location)
    probe = f"{root.rstrip('/')}/{WRITE_PROBE}{uuid.uuid4().hex}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:  # any failure means "cannot write here"
        raise StoreError(
            f"cannot write to {location}: {_cause(err)}; check that the bucket exists and "
            "that the credentials in the environment may write it"
        ) from None


def read_bytes(location: str | Path) -> bytes:
    """The bytes of the file ``location`` (FileNotFoundError when there is none)."""
    if not is_url(location):
        return local_path(location).read_bytes()
    fs, path = filesystem(location)
    return bytes(fs.cat_file(path))


def exists(location: str | Path) -> bool:
    """Whether the file (or, for a local path, folder) ``location`` exists now (asked
    afresh: no cached listing)."""
    if not is_url(location):
        return local_path(location).exists()
    fs, path = filesystem(location)
    fs.invalidate_cache(path)
    return bool(fs.exists(path))


def parent(location: str | Path) -> str:
    """The folder ``location`` is in (a URL's prefix, or a local path's parent).

    >>> parent("s3://bucket/out/pred.tif"), parent("out/pred.tif")
    ('s3://bucket/out', 'out')
    """
    if not is_url(location):
        return str(local_path(location).parent)
    return str(location).rstrip("/").rsplit("/", 1)[0]


class ObjectPath:
    """A path under an object-store URL with the few :class:`pathlib.Path` methods geochip's
    stores use (``/``, ``name``, ``exists``, ``read_bytes``, ``write_bytes``, ``iterdir``,
    ``unlink`` ...), plus byte ranges. Each ``write_bytes`` is one PUT: the object appears
    whole or not at all (object stores have no rename, and need none for one object).

    Only the URL is kept (and pickled): the file system is opened lazily in each process
    (fsspec makes fresh clients after ``fork``), so Dask task graphs and DataLoader workers
    carry no client and no credential.

    >>> p = ObjectPath("memory://geochip-doc/ds") / "a" / "b.json"
    >>> p.write_text("{}"); p.name, p.parent.name, p.exists(), p.read_text()
    ('b.json', 'a', True, '{}')
    >>> [q.name for q in (ObjectPath("memory://geochip-doc/ds") / "a").iterdir()]
    ['b.json']
    """

    def __init__(self, url: str) -> None:
        scheme_of(url)  # refuses unknown schemes
        self.url = url.rstrip("/")
        self._fs: Any = None
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "_fs": None, "_pid": 0}

    @property
    def fs(self) -> Any:
        """The fsspec file system (opened once per process)."""
        if self._fs is None or self._pid != os.getpid():
            self._fs, _ = filesystem(self.url)
            self._pid = os.getpid()
        return self._fs

    @property
    def path(self) -> str:
        """The path in :attr:`fs` (``bucket/key`` for s3)."""
        return str(self.fs._strip_protocol(self.url))

    def _near(self, url: str) -> ObjectPath:
        """An ObjectPath of ``url`` in the same store, sharing this one's file system (a
        reader makes one per chip: opening the file system costs ~0.25 ms each time)."""
        other = ObjectPath(url)
        other._fs, other._pid = self._fs, self._pid
        return other

    def __truediv__(self, part: str) -> ObjectPath:
        return self._near(join(self.url, str(part)))

    def joinpath(self, *parts: str) -> ObjectPath:
        return self._near(join(self.url, *(str(p) for p in parts)))

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        return self._near(self.url.rsplit("/", 1)[0])

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def exists(self) -> bool:
        """Whether an object or a prefix with objects is there (asks the store, not a cache)."""
        self.fs.invalidate_cache()
        return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.isfile(self.path))

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.path, bytes(data))

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def create(self, data: bytes) -> None:
        """Write ``data`` only if no object is there (a conditional write, If-None-Match);
        :class:`FileExistsError` when one is."""
        self.fs.pipe_file(self.path, bytes(data), mode="create")

    def iterdir(self) -> list[ObjectPath]:
        self.fs.invalidate_cache()
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        prefix = self.path.rstrip("/") + "/"
        return [
            self / str(n)[len(prefix) :]
            for n in names
            if str(n).startswith(prefix) and not str(n)[len(prefix) :].startswith(WRITE_PROBE)
        ]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no folders."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        """Remove every object under this prefix."""
        self.fs.invalidate_cache()
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        self.fs.invalidate_cache()

    def size(self) -> int:
        return int(self.fs.size(self.path))

    def tree_bytes(self) -> int:
        """Bytes of every object under this prefix."""
        self.fs.invalidate_cache()
        return int(self.fs.du(self.path, total=True))

    def read_range(self, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` (``start < 0``: the last ``-start`` bytes) in one request
        (two on Azure: see :meth:`read_ranges`)."""
        [data] = self.read_ranges([self], [start], [end])
        if isinstance(data, BaseException):
            raise data
        return data

    def read_ranges(
        self, paths: Sequence[ObjectPath], starts: Sequence[int], ends: Sequence[int | None]
    ) -> list[bytes | BaseException]:
        """Byte ranges of several objects, fetched concurrently (fsspec ``cat_ranges``); a
        missing object gives its :class:`FileNotFoundError` in its place. A negative start
        reads the last ``-start`` bytes: one suffix-range request, except on Azure Blob
        Storage, which has none (``bytes=-N``): there the objects' sizes are asked first
        (concurrently; one by one when one of them is missing)."""
        starts = list(starts)
        missing: dict[int, BaseException] = {}
        suffixes = [k for k, start in enumerate(starts) if start < 0]
        if suffixes and scheme_of(self.url) in {"az", "abfs"}:
            sizes: dict[int, int] = {}
            try:
                found = self.fs.sizes([paths[k].path for k in suffixes])
                sizes = dict(zip(suffixes, found, strict=True))
            except FileNotFoundError:
                for k in suffixes:
                    try:
                        sizes[k] = self.fs.size(paths[k].path)
                    except FileNotFoundError as err:
                        missing[k] = err
            for k, size in sizes.items():
                starts[k] = max(0, int(size) + starts[k])
        keep = [k for k in range(len(paths)) if k not in missing]
        got = self.fs.cat_ranges(
            [paths[k].path for k in keep],
            [starts[k] for k in keep],
            [ends[k] for k in keep],
            on_error="return",
        )
        out: list[bytes | BaseException] = [missing.get(k, b"") for k in range(len(paths))]
        for k, v in zip(keep, got, strict=True):
            out[k] = v if isinstance(v, BaseException) else bytes(v)
        return out


#: Where a store lives: a local folder or a folder-like prefix in an object store.
StorePath: TypeAlias = "Path | ObjectPath"


def store_path(location: str | Path | ObjectPath) -> Path | ObjectPath:
    """``location`` as a :class:`~pathlib.Path` (local path, ``file://``) or an
    :class:`ObjectPath` (any other URL: ``s3://``, ``gs://``, ``az://``, ``memory://``).
    Never ``Path("s3://...")``, which is the local folder ``s3:``.

    >>> store_path("s3://bucket/ds"), store_path("file:///tmp/ds"), store_path("ds").name
    (ObjectPath('s3://bucket/ds'), PosixPath('/tmp/ds'), 'ds')
    """
    if isinstance(location, ObjectPath | Path):
        return location
    if is_url(location):
        return ObjectPath(str(location))
    return local_path(location)

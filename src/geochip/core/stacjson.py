"""STAC JSON read one way: item dicts checked before pystac sees them, and the scene sources
a user names (paths; http(s), s3://, gs://, az:// URLs; STAC Item or ItemCollection JSON
files or URLs) resolved to what :func:`geochip.read.open.open_scenes` opens. ``geochip
chips``, ``geochip predict`` and the Python API share :func:`scene_sources`, so each accepts
what the others accept.

Example:
    >>> import json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> item = {"type": "Feature", "stac_version": "1.0.0", "id": "a", "geometry": None,
    ...         "properties": {"datetime": "2024-01-01T00:00:00Z"}, "links": [],
    ...         "assets": {"red": {"href": "red.tif"}}}
    >>> _ = (folder / "item.json").write_text(json.dumps(item))
    >>> [type(s).__name__ for s in scene_sources([folder / "item.json", "scene.tif"])]
    ['Item', 'str']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pystac

from ..errors import InputError, MissingHrefError
from .storage import filesystem, is_object_url

__all__ = [
    "check_item_dict",
    "item_from_dict",
    "scene_sources",
]


def check_item_dict(data: Mapping[str, Any], where: str = "") -> None:
    """Refuse a STAC item dict whose assets lack an ``href`` (pystac would fail with a bare
    ``KeyError``): :class:`~geochip.errors.MissingHrefError` names the item and the asset.

    >>> check_item_dict({"id": "x", "assets": {"B04": {"type": "image/tiff"}}})
    Traceback (most recent call last):
    ...
    geochip.errors.MissingHrefError: item 'x': asset 'B04' has no href, ...
    """
    assets = data.get("assets")
    if not isinstance(assets, Mapping):
        return
    for key, asset in assets.items():
        if not isinstance(asset, Mapping) or not asset.get("href"):
            raise MissingHrefError(
                f"item {data.get('id')!r}{f' ({where})' if where else ''}: asset {key!r} has "
                "no href, so it cannot be read; the catalog's item is incomplete (ask its "
                "provider, or remove the asset)"
            )


def item_from_dict(data: Mapping[str, Any], where: str = "") -> pystac.Item:
    """``pystac.Item.from_dict`` after :func:`check_item_dict` (a named error, not a
    ``KeyError``, for an asset without href)."""
    check_item_dict(data, where)
    return pystac.Item.from_dict(dict(data), preserve_dict=False)


def _is_json(value: str) -> bool:
    return value.split("?", 1)[0].lower().endswith((".json", ".geojson"))


def scene_sources(values: Iterable[Any]) -> list[Any]:
    """``values`` with every STAC JSON (a path or URL ending in ``.json``) replaced by its
    item(s): an Item is one source, an ItemCollection one per feature. Anything else (raster
    paths and URLs, ``pystac.Item`` objects) is kept as it is."""
    out: list[Any] = []
    for given in values:
        value = os.fspath(given) if isinstance(given, os.PathLike) else given
        if not isinstance(value, str) or not _is_json(value):
            out.append(value)
            continue
        local = Path(value).exists()
        try:
            data = json.loads(Path(value).read_text()) if local else None
        except (OSError, ValueError) as err:
            raise InputError(f"{value}: cannot read it as JSON ({err})") from err
        if data is None:
            try:
                if is_object_url(value):  # s3://, gs://, az:// through fsspec
                    fs, path = filesystem(value)
                    data = json.loads(bytes(fs.cat_file(path)).decode("utf-8"))
                else:
                    data = pystac.StacIO.default().read_json(value)
            except (OSError, ValueError) as err:  # urllib's HTTPError is an OSError
                raise InputError(
                    f"{value}: cannot read it as STAC JSON ({err}); check the path or URL"
                ) from err
        kind = data.get("type") if isinstance(data, Mapping) else None
        if kind == "FeatureCollection":
            out.extend(item_from_dict(f, value) for f in data.get("features") or [])
        elif kind == "Feature":
            item = item_from_dict(data, value)
            item.set_self_href(str(Path(value).resolve()) if local else value)
            out.append(item)
        else:
            raise InputError(
                f"{value}: a STAC Item or ItemCollection was expected, got type {kind!r}"
            )
    return out

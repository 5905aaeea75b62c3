"""Which file and band a band name means, and what is known about it: the one resolution
every reader of an item's assets uses (cube loads, streaming scenes, builds, registries).

Providers publish the same facts in many shapes, and geochip reads them all the same way:

* band lists: STAC 1.1 ``bands`` on the asset; STAC 1.0 ``eo:bands`` and ``raster:bands``
  on the asset, ``eo:bands`` on the item's properties (matched to an asset by its indexes,
  ``"eo:bands": [3]``, or by a band named like the asset key);
* per-band fields (``data_type``, ``nodata``, ``unit``, ``raster:scale``, ``raster:offset``)
  on the band, else on the asset (STAC 1.1, as the Copernicus Data Space publishes), else on
  the item; ``nodata`` may be a number or the strings ``"nan"``, ``"inf"``, ``"-inf"``;
* where the metadata does not say the data type or how many bands an asset has (Planetary
  Computer's Sentinel-2 items have ``eo:bands`` only), the raster's header says it (read
  once per href and cached; signed just before the read), never a float32/NaN default.

A band name resolves, in this order, to: an asset key exactly (all of that asset's bands);
``<asset>.<n>`` (band n, 1-based); a band ``name``; a common name (``eo:common_name``);
then case-insensitively an asset key, a band name or a common name, when that is unique.
When several bands match at one step, a single-band asset wins over bands of a multi-band
asset (``red`` is asset ``B04``, not band 1 of ``visual``); otherwise the name is refused
with :class:`~geochip.errors.AmbiguousBandError` listing the candidates. Which asset was
chosen, and why, is logged at DEBUG level.

An asset of several bands asked for by its key gives all its bands, as channels named
``<asset>.1`` .. ``<asset>.N``; one band gives one channel named as asked.

Example:
    >>> import datetime as dt, pystac
    >>> item = pystac.Item("x", None, None, dt.datetime(2024, 1, 1), {})
    >>> item.add_asset("B04_10m", pystac.Asset("r.tif", extra_fields={
    ...     "bands": [{"name": "B04", "eo:common_name": "red"}],
    ...     "data_type": "uint16", "nodata": 0, "raster:scale": 0.0001}))
    >>> item.add_asset("visual", pystac.Asset("v.tif", extra_fields={"bands": [
    ...     {"name": "B04", "eo:common_name": "red", "data_type": "uint8"},
    ...     {"name": "B03", "eo:common_name": "green", "data_type": "uint8"}]}))
    >>> [(b.name, b.asset, b.index, b.data_type, b.scale) for b in
    ...  resolve_bands(item, ["red", "VISUAL"])]
    [('red', 'B04_10m', 1, 'uint16', 0.0001), ('visual.1', 'visual', 1, 'uint8', None), \
('visual.2', 'visual', 2, 'uint8', None)]
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import rasterio

from ..errors import (
    AmbiguousBandError,
    BandNotFoundError,
    GeochipError,
    InputError,
    MissingHrefError,
    RasterReadError,
)
from .env import GdalEnv
from .retry import call_with_retries
from .security import redact, sign_href

__all__ = [
    "BAND_FIELDS",
    "Band",
    "asset_band_fields",
    "band_choices",
    "complete_item",
    "header_bands",
    "parse_nodata",
    "resolve_asset",
    "resolve_bands",
]

log = logging.getLogger(__name__)

#: Fields of a band that may also be given once for all bands, on the asset or the item.
BAND_FIELDS = ("data_type", "nodata", "unit", "raster:scale", "raster:offset")
_ASSET_DEFAULTS = (*BAND_FIELDS, "raster:spatial_resolution", "raster:bits_per_sample")
_RASTER_COMMON = {"nodata", "data_type", "unit", "statistics"}

Signer = Callable[[str], Any]


def parse_nodata(value: Any) -> float | int | None:
    """A nodata value as published (a number, ``"nan"``, ``"inf"``, ``"-inf"``, a numeric
    string) as a number; None when missing or not a number (said at DEBUG level).

    >>> parse_nodata("nan"), parse_nodata("-inf"), parse_nodata(0), parse_nodata("-9999")
    (nan, -inf, 0, -9999)
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"nan", "inf", "+inf", "-inf"}:
            return float(text)
        try:
            number = float(text)
        except ValueError:
            log.debug("nodata %r is not a number; taken as missing", value)
            return None
        return int(number) if number.is_integer() and "." not in text else number
    log.debug("nodata %r is not a number; taken as missing", value)
    return None


def _eo_band(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "name":
            out["name"] = value
        elif key.startswith("eo:"):
            out[key] = value
        else:
            out[f"eo:{key}"] = value
    return out


def _raster_band(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        (key if key in _RASTER_COMMON or key.startswith("raster:") else f"raster:{key}"): value
        for key, value in raw.items()
    }


def _listed(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, list | tuple) else None


def asset_band_fields(item: pystac.Item, key: str) -> tuple[list[dict[str, Any]] | None, bool]:
    """(band dicts, explicit) of asset ``key`` as the metadata gives them, in STAC 1.1 form
    (``name``, ``eo:common_name``, ``data_type``, ``nodata``, ``raster:scale``, ...), with the
    asset's and the item's band fields filled in where a band lacks them. ``None`` when the
    metadata does not list the asset's bands (the header tells how many there are);
    ``explicit`` is False when the list was matched from the item's ``eo:bands`` by name.
    No I/O."""
    asset = item.assets[key]
    extra = asset.extra_fields
    item_eo = _listed(item.properties.get("eo:bands")) or []
    eo = _listed(extra.get("eo:bands"))
    if eo is not None and eo and all(isinstance(v, int) for v in eo):  # STAC 0.9 indexes
        eo = [item_eo[v] for v in eo if 0 <= v < len(item_eo)]
    raster = _listed(extra.get("raster:bands"))
    bands11 = _listed(extra.get("bands"))
    explicit = True
    bands: list[dict[str, Any]] | None
    if bands11 is not None:
        bands = [dict(b) if isinstance(b, Mapping) else {} for b in bands11]
    elif eo is not None or raster is not None:
        count = max(len(eo or []), len(raster or []))
        bands = [{} for _ in range(count)]
    else:
        match = [b for b in item_eo if isinstance(b, Mapping) and _same(b.get("name"), key)]
        bands = [_eo_band(match[0])] if len(match) == 1 else None
        explicit = False
    if bands is not None:
        for i, band in enumerate(bands):
            for source, convert in ((eo, _eo_band), (raster, _raster_band)):
                if source is not None and i < len(source) and isinstance(source[i], Mapping):
                    for k, v in convert(source[i]).items():
                        band.setdefault(k, v)
            if "common_name" in band:
                band.setdefault("eo:common_name", band.pop("common_name"))
            for k in ("scale", "offset"):
                if k in band:
                    band.setdefault(f"raster:{k}", band.pop(k))
            for fields in (extra, item.properties):
                for k in _ASSET_DEFAULTS:
                    if k in fields and k not in band:
                        band[k] = fields[k]
    return bands, explicit


def _asset_defaults(item: pystac.Item, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fields in (item.assets[key].extra_fields, item.properties):
        for k in _ASSET_DEFAULTS:
            if k in fields:
                out.setdefault(k, fields[k])
    return out


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and a.lower() == b.lower()


# -- the raster header, once per href ----------------------------------------------------

_HEADERS: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_HEADERS_LOCK = threading.Lock()
_HEADERS_MAX = 4096


def header_bands(href: str, sign: Signer | None = None) -> list[dict[str, Any]]:
    """The bands of the raster at ``href`` as its header says (``name`` from the band
    description, ``data_type``, ``nodata``, ``raster:scale``/``raster:offset`` when not
    1/0): the source's truth where the STAC metadata is silent. Read once per (unsigned)
    href and process, with GDAL's retries; ``sign`` is applied just before the read."""
    with _HEADERS_LOCK:
        if href in _HEADERS:
            _HEADERS.move_to_end(href)
            return [dict(b) for b in _HEADERS[href]]
    env = GdalEnv.default()
    path = sign_href(href, sign)

    def probe() -> list[dict[str, Any]]:
        with env.activate(), rasterio.open(path) as ds:
            out = []
            for i in range(ds.count):
                band: dict[str, Any] = {"data_type": ds.dtypes[i]}
                if ds.descriptions[i]:
                    band["name"] = ds.descriptions[i]
                if ds.nodata is not None:
                    band["nodata"] = ds.nodata
                if ds.scales[i] != 1.0 or ds.offsets[i] != 0.0:
                    band["raster:scale"] = ds.scales[i]
                    band["raster:offset"] = ds.offsets[i]
                out.append(band)
            return out

    try:
        bands = call_with_retries(probe, path, env)
    except GeochipError:
        raise
    except Exception as err:
        raise RasterReadError(
            f"{redact(href)}: the item's metadata does not say the bands' data type or count, "
            f"and the raster's header could not be read ({redact(str(err))}); check the href "
            "and the signing, or give the data type in the item (bands: data_type, nodata)"
        ) from err
    log.debug("header of %s: %d bands %s", redact(href), len(bands), bands)
    with _HEADERS_LOCK:
        _HEADERS[href] = bands
        while len(_HEADERS) > _HEADERS_MAX:
            _HEADERS.popitem(last=False)
    return [dict(b) for b in bands]


# -- resolution -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One channel: the band ``index`` (1-based) of asset ``asset`` of an item, and what the
    metadata (or the header) says about it."""

    name: str
    """The channel's name: the name asked for, or ``<asset>.<n>`` for a band of an asset
    asked for as a whole."""
    asked: str
    """The name it was asked by."""
    asset: str
    index: int
    count: int | None
    """Bands the asset has (None: the metadata does not say and no header was read)."""
    href: str
    data_type: str | None = None
    nodata: float | int | None = None
    scale: float | None = None
    offset: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The band's STAC 1.1 fields (``name``, ``eo:common_name``, ...), complete."""


def _href(item: pystac.Item, key: str) -> str:
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    if not href:
        raise MissingHrefError(
            f"item {item.id!r}: asset {key!r} has no href, so it cannot be read; the "
            "catalog's item is incomplete (ask its provider) or choose another asset"
        )
    return str(href)


def _known_bands(item: pystac.Item, key: str) -> list[dict[str, Any]]:
    bands, _ = asset_band_fields(item, key)
    return bands or []


def band_choices(item: pystac.Item) -> list[str]:
    """The names a band may be asked for on ``item`` (no I/O): asset keys, ``<asset>.<n>``
    of multi-band assets, band names and common names, each once, in asset order."""
    out: dict[str, None] = {}
    for key in item.assets:
        out[key] = None
        bands = _known_bands(item, key)
        if len(bands) > 1:
            out.update((f"{key}.{i}", None) for i in range(1, len(bands) + 1))
    for key in item.assets:
        for band in _known_bands(item, key):
            for name in (band.get("name"), band.get("eo:common_name")):
                if isinstance(name, str) and name:
                    out.setdefault(name, None)
    return list(out)


def _candidates(
    item: pystac.Item, test: Callable[[str], bool], fields: Sequence[str]
) -> list[tuple[str, int]]:
    out = []
    for key in item.assets:
        for i, band in enumerate(_known_bands(item, key), start=1):
            if any(test(band[f]) for f in fields if isinstance(band.get(f), str)):
                out.append((key, i))
    return out


def _pick(
    item: pystac.Item, name: str, found: list[tuple[str, int]], how: str
) -> tuple[str, int | None, str] | None:
    if not found:
        return None
    if len(found) > 1:
        single = [(k, i) for k, i in found if len(_known_bands(item, k)) == 1]
        if len(single) == 1:
            return single[0][0], single[0][1], f"{how}; the only single-band asset of {found}"
        names = [k if len(_known_bands(item, k)) == 1 else f"{k}.{i}" for k, i in found]
        raise AmbiguousBandError(
            f"item {item.id!r}: band {name!r} matches several bands by {how}: "
            f"{', '.join(map(repr, names))}; ask for one of them by its name"
        )
    key, index = found[0]
    return key, index, how


def _match(item: pystac.Item, name: str) -> tuple[str, int | None, str]:
    """(asset key, 1-based band or None for all bands, how it was matched)."""
    assets = item.assets
    if name in assets:
        return name, None, "asset key"
    head, _, number = name.rpartition(".")
    if head in assets and number.isdigit():
        return head, int(number), "asset key and band number"
    lower = name.lower()
    for fields, how, test in (
        (("name",), "band name", lambda v: v == name),
        (("eo:common_name",), "common name", lambda v: v == name),
        (("name", "eo:common_name"), "band or common name, any case", lambda v: v.lower() == lower),
    ):
        if how.endswith("any case"):
            keys = [k for k in assets if k.lower() == lower]
            if len(keys) == 1:
                return keys[0], None, "asset key, any case"
            if len(keys) > 1:
                raise AmbiguousBandError(
                    f"item {item.id!r}: band {name!r} matches several assets when case is "
                    f"ignored: {', '.join(map(repr, keys))}; ask for one of them exactly"
                )
        picked = _pick(item, name, _candidates(item, test, fields), how)
        if picked is not None:
            return picked
    raise BandNotFoundError(f"item {item.id}", name, band_choices(item))


def resolve_asset(item: pystac.Item, name: str) -> str:
    """The asset key band ``name`` lives in (no I/O); see :func:`resolve_bands`."""
    return _match(item, name)[0]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _full_bands(
    item: pystac.Item, key: str, href: str, index: int | None, sign: Signer | bool | None
) -> tuple[list[dict[str, Any]], int | None]:
    """(band dicts, count) of asset ``key``: the metadata's, completed from the header when
    the data type (of band ``index``, or of any band) or the count is not published;
    ``sign=False``: no header is read (count None when the metadata does not list bands)."""
    bands, explicit = asset_band_fields(item, key)
    need = bands is None or any(
        not b.get("data_type") for b in (bands if index is None else bands[index - 1 : index])
    )
    if sign is not False and need:
        header = header_bands(href, sign if callable(sign) else None)
        if bands is None:
            defaults = _asset_defaults(item, key)
            bands = [{**h, **defaults} for h in header]
        elif len(bands) != len(header):
            if explicit:
                raise InputError(
                    f"item {item.id!r}: asset {key!r} lists {len(bands)} bands, its "
                    f"raster {redact(href)} has {len(header)}; the catalog's metadata is "
                    "wrong (ask its provider)"
                )
            bands = [{**h, **(bands[0] if i == 0 else {})} for i, h in enumerate(header)]
        else:
            bands = [{**h, **b} for h, b in zip(header, bands, strict=True)]
    if bands is None:
        return [_asset_defaults(item, key)], None
    return bands, len(bands)


def complete_item(
    item: pystac.Item, names: Sequence[str], *, sign: Signer | None = None
) -> pystac.Item:
    """A copy of ``item`` whose assets that ``names`` use list every band with what
    :func:`resolve_bands` found (the header's data type, nodata and count where the
    metadata is silent), so that whoever reads the copy later (a build's tasks, on other
    processes) needs no header read and no signer for it."""
    found = resolve_bands(item, names, sign=sign)
    out = item.clone()
    for key in dict.fromkeys(b.asset for b in found):
        bands, count = _full_bands(item, key, _href(item, key), None, sign)
        if count is not None:
            extra = out.assets[key].extra_fields
            extra.pop("eo:bands", None)
            extra.pop("raster:bands", None)
            extra["bands"] = bands
    return out


def resolve_bands(
    item: pystac.Item,
    names: Sequence[str],
    *,
    sign: Signer | None = None,
    headers: bool = True,
) -> list[Band]:
    """The channels ``names`` mean on ``item``, in order (an asset of several bands gives
    all of them); see the module's docstring for the order of matching.

    With ``headers`` (the default), the raster's header fills in what the metadata does not
    say (data type, nodata, the number of bands), read once per href (``sign`` is applied
    to the href just before). Without, nothing is read: an asset whose band count is not
    published gives one channel with ``count=None``.

    Raises :class:`~geochip.errors.BandNotFoundError` (listing the names the item has),
    :class:`~geochip.errors.AmbiguousBandError` (listing the candidates) and
    :class:`~geochip.errors.MissingHrefError`.
    """
    out: list[Band] = []
    for name in names:
        key, index, how = _match(item, name)
        href = _href(item, key)
        bands, count = _full_bands(item, key, href, index, sign if headers else False)
        if index is not None and count is not None and not 1 <= index <= count:
            raise BandNotFoundError(f"item {item.id}", name, band_choices(item))
        chosen = [index] if index is not None else list(range(1, len(bands) + 1))
        log.debug(
            "item %s: band %r is %s of asset %r (%s)",
            item.id,
            name,
            "all bands" if index is None and len(chosen) > 1 else f"band {chosen[0]}",
            key,
            how,
        )
        for i in chosen:
            fields = bands[i - 1] if i - 1 < len(bands) else {}
            data_type = fields.get("data_type")
            out.append(
                Band(
                    name=name if len(chosen) == 1 else f"{key}.{i}",
                    asked=name,
                    asset=key,
                    index=i,
                    count=count,
                    href=href,
                    data_type=str(data_type) if data_type else None,
                    nodata=parse_nodata(fields.get("nodata")),
                    scale=_number(fields.get("raster:scale")),
                    offset=_number(fields.get("raster:offset")),
                    fields=fields,
                )
            )
    names_out = [b.name for b in out]
    dupes = sorted({n for n in names_out if names_out.count(n) > 1})
    if dupes:
        raise InputError(
            f"item {item.id!r}: the bands {list(names)} give the channels {dupes} more than "
            "once; ask for each band once"
        )
    return out

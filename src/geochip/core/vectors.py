"""Vector files of geometries: one reader, and one rule for the ids of their geometries.

:func:`read_vector` reads GeoJSON, GeoPackage, Shapefile, FlatGeobuf (with pyogrio) and
GeoParquet (by its suffix). :func:`with_ids` puts any GeoDataFrame of geometries (label
footprints, points and polygons for time series or grids) into the form every stage uses:
an ``id`` column and the geometry, in EPSG:4326. The rule, the same everywhere:

* ids come from ``id_column`` when it is given (it must exist), else from a column ``id``
  or ``label_id``, else from the row numbers (``g0``, ``g1``, ...);
* ids are unique; every geometry is present, not empty and valid; the CRS is known; there
  is at least one geometry. Anything else is an :class:`~geochip.errors.InputError`
  naming the ids and the file; a file with nothing in it (0 bytes, no features, only
  null or empty geometries) is an :class:`~geochip.errors.EmptyInputError`.

geopandas is imported when a file is read (it costs ~0.6 s; the registry imports this
module without needing it).

Example:
    >>> import geopandas as gpd
    >>> from shapely.geometry import Point
    >>> frame = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[Point(10, 50), Point(11, 51)],
    ...                          crs=4326)
    >>> with_ids(frame)["id"].tolist(), with_ids(frame, id_column="name")["id"].tolist()
    (['g0', 'g1'], ['a', 'b'])
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import EmptyInputError, InputError
from .geometry import wgs84_footprints
from .security import redact
from .storage import filesystem, is_object_url, local_path

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "VECTOR_SUFFIXES",
    "read_vector",
    "with_ids",
]

#: File suffixes :func:`read_vector` reads (GeoParquet by suffix, the rest with pyogrio).
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".parquet", ".geoparquet", ".fgb")

#: The files a Shapefile's ``.shp`` comes with (fetched beside it from object storage).
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")


def read_vector(
    path: str | Path, *, layer: str | int | None = None, what: str = "vector file"
) -> gpd.GeoDataFrame:
    """Read a vector file; ``layer`` picks a GeoPackage layer; ``what`` names the file in
    errors ("label file", "regions file"...). Object-store URLs (``s3://``, ``gs://``,
    ``az://``) are fetched through :func:`geochip.core.storage.filesystem` (the credentials
    and endpoint every other input and output uses; a Shapefile with its sidecar files);
    ``http(s)://`` URLs are read by pyogrio (GDAL ``/vsicurl/``)."""
    text = str(path)
    suffix = PurePosixPath(text.split("?", 1)[0]).suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise InputError(
            f"{text}: unsupported {what} type {suffix!r}; use one of {', '.join(VECTOR_SUFFIXES)}"
        )
    if is_object_url(text):
        with tempfile.TemporaryDirectory(prefix="geochip-vector-") as tmp:
            return _read(_fetch(text, suffix, Path(tmp), what), suffix, layer, what, text)
    if "://" in text and not text.startswith("file://"):
        return _read(text, suffix, layer, what, text)
    local = local_path(text)
    if not local.exists():
        raise InputError(f"no {what} at {text}; check the path")
    if local.is_file() and local.stat().st_size == 0:
        raise EmptyInputError(f"the {what} {text} is empty (0 bytes); give a file with geometries")
    return _read(str(local), suffix, layer, what, text)


def _fetch(url: str, suffix: str, folder: Path, what: str) -> str:
    """Copy the object ``url`` (and a Shapefile's sidecars that exist) into ``folder``;
    the local path to read."""
    fs, key = filesystem(url)
    stem = key[: -len(suffix)]
    names = [key] + [stem + ext for ext in SHAPEFILE_SIDECARS if suffix == ".shp"]
    for name in names:
        try:
            data = fs.cat_file(name)
        except FileNotFoundError:
            if name == key:
                raise InputError(f"no {what} at {url}; check the path") from None
            continue
        except OSError as err:
            raise InputError(f"cannot read the {what} {url}: {redact(str(err))}") from None
        (folder / PurePosixPath(name).name).write_bytes(data)
    local = folder / PurePosixPath(key).name
    if local.stat().st_size == 0:
        raise EmptyInputError(f"the {what} {url} is empty (0 bytes); give a file with geometries")
    return str(local)


def _read(
    source: str, suffix: str, layer: str | int | None, what: str, name: str
) -> gpd.GeoDataFrame:
    import geopandas as gpd  # lazy: see the module doc

    try:
        if suffix in (".parquet", ".geoparquet"):
            return gpd.read_parquet(source)
        return gpd.read_file(source, layer=layer) if layer is not None else gpd.read_file(source)
    except (OSError, ValueError, RuntimeError) as err:  # pyogrio's DataSourceError, arrow's
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read the {what} {name}: {first[:300]}") from None


def with_ids(
    frame: gpd.GeoDataFrame,
    *,
    id_column: str | None = None,
    source: str = "GeoDataFrame",
    what: str = "geometries",
) -> gpd.GeoDataFrame:
    """``frame`` as ``id`` + ``geometry`` in EPSG:4326, by the rule of the module doc;
    ``source`` (a file name) and ``what`` ("labels", "geometries") name it in errors."""
    import geopandas as gpd  # lazy: see the module doc

    if frame.crs is None:
        raise InputError(
            f"the {what} {source} have no CRS; set one (GeoDataFrame.set_crs) or fix the file"
        )
    if id_column is not None:
        if id_column not in frame.columns:
            raise InputError(
                f"the {what} {source} have no column {id_column!r}; columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
        ids = [str(v) for v in frame[id_column]]
    elif "id" in frame.columns:
        ids = [str(v) for v in frame["id"]]
    elif "label_id" in frame.columns:
        ids = [str(v) for v in frame["label_id"]]
    else:
        ids = [f"g{n}" for n in range(len(frame))]
    if not ids:
        raise EmptyInputError(f"no {what} in {source}: it holds no feature")
    out = gpd.GeoDataFrame({"id": ids}, geometry=list(frame.geometry), crs=frame.crs)
    dupes = sorted(set(out["id"][out["id"].duplicated()]))
    if dupes:
        raise InputError(f"the {what} of {source} must have unique ids; repeated: {dupes[:10]}")
    missing = out.geometry.isna() | out.geometry.is_empty
    if missing.all():
        raise EmptyInputError(
            f"the {what} {list(out['id'])[:10]} of {source} have no geometry (all "
            f"{len(out)} of them are null or empty: nothing to work on)"
        )
    if missing.any():
        raise InputError(f"the {what} {list(out['id'][missing])[:10]} of {source} have no geometry")
    invalid = ~out.geometry.is_valid
    if invalid.any():
        raise InputError(
            f"the {what} {list(out['id'][invalid])[:10]} of {source} have invalid geometries; "
            "fix them (shapely.make_valid)"
        )
    if out.crs == "EPSG:4326":
        return out
    # from another CRS: split at 180 degrees, caps over the poles closed (RFC 7946)
    shapes = wgs84_footprints(out.geometry.values, out.crs, points=1)
    return gpd.GeoDataFrame({"id": out["id"]}, geometry=list(shapes), crs="EPSG:4326")

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

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EmptyInputError, InputError
from .geometry import wgs84_footprints

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "VECTOR_SUFFIXES",
    "read_vector",
    "with_ids",
]

#: File suffixes :func:`read_vector` reads (GeoParquet by suffix, the rest with pyogrio).
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".parquet", ".geoparquet", ".fgb")


def read_vector(
    path: str | Path, *, layer: str | int | None = None, what: str = "vector file"
) -> gpd.GeoDataFrame:
    """Read a vector file; ``layer`` picks a GeoPackage layer; ``what`` names the file in
    errors ("label file", "regions file"...). URLs are read by pyogrio (GDAL /vsicurl/)."""
    import geopandas as gpd  # lazy: see the module doc

    text = str(path)
    remote = "://" in text
    suffix = Path(text.split("?", 1)[0]).suffix.lower()
    if not remote and not Path(text).exists():
        raise InputError(f"no {what} at {text}; check the path")
    if suffix not in VECTOR_SUFFIXES:
        raise InputError(
            f"{text}: unsupported {what} type {suffix!r}; use one of {', '.join(VECTOR_SUFFIXES)}"
        )
    if not remote and Path(text).is_file() and Path(text).stat().st_size == 0:
        raise EmptyInputError(f"the {what} {text} is empty (0 bytes); give a file with geometries")
    try:
        if suffix in (".parquet", ".geoparquet"):
            return gpd.read_parquet(text)
        return gpd.read_file(text, layer=layer) if layer is not None else gpd.read_file(text)
    except (OSError, ValueError, RuntimeError) as err:  # pyogrio's DataSourceError, arrow's
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read the {what} {text}: {first[:300]}") from None


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

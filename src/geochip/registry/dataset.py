"""A registered dataset (:class:`Dataset`): its files, its items (the images as STAC items),
each item's grid at the dataset's resolution, its pixels, and its masks (vector labels
burned, or mask rasters read on the image's pixel lattice), plus the download function.

geopandas is imported when vector masks are read (~0.6 s): importing the registry reads
nothing and imports neither.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.geom import box
from rasterio.windows import Window

from ..core.bands import resolve_asset
from ..core.env import gdal_env
from ..core.grid import asset_geobox, label_geobox, lattice_offset, target_geobox
from ..core.imports import load_object
from ..core.security import redact
from ..core.storage import gdal_path
from ..core.vectors import read_vector
from ..errors import (
    CRSMismatchError,
    DatasetNotAvailableError,
    GeochipError,
    InputError,
    MissingGeoreferenceError,
)
from ..read.labels import align_label, rasterize_labels
from ..read.load import item_bands, load_stack
from ..sources.files import folder_items, is_raster_file, raster_fields
from .spec import DatasetSpec, RasterMasks, VectorMasks

if TYPE_CHECKING:
    import geopandas as gpd  # lazy: ~0.6 s, only vector masks
    import xarray as xr

__all__ = [
    "MASK_ASSET",
    "Dataset",
]

log = logging.getLogger(__name__)

#: Asset key of an item's mask raster (raster masks).
MASK_ASSET = "mask"

_GLOB_CHARS = "*?["


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
            matches = sorted(p for p in path.rglob("*") if is_raster_file(p))
        else:
            matches = [path] if path.is_file() else []
        matches = [p for p in matches if p.is_file()]
        if rasters and _is_glob(pattern):
            matches = [p for p in matches if is_raster_file(p)]
        if not matches:
            unmatched.append(pattern)
        for match in matches:
            found.setdefault(match.absolute(), None)
    return list(found), unmatched


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
        function = load_object(self.spec.download, f"dataset {self.tag!r}: download")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.download-", dir=self.root.parent))
        try:
            log.info("downloading dataset %s with %s", self.tag, self.spec.download)
            try:
                function(tmp)
            except GeochipError:
                raise
            except Exception as err:
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
                if target.exists() and not force:
                    continue  # another process's download put it there first: keep theirs
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
        items = folder_items(self.image_paths(), group=self.spec.group, collection=self.tag)
        for item in items:
            item.properties["geochip:dataset"] = self.tag
        masks = self.spec.masks
        if isinstance(masks, RasterMasks):
            self._attach_masks(items, self.mask_paths())
        return items

    def _attach_masks(self, items: list[pystac.Item], paths: list[Path]) -> None:
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
                raise MissingGeoreferenceError(
                    f"{path if fields['crs'] is None else item.id}: no CRS; masks and images "
                    "must be georeferenced"
                )

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
        (default: the first item), in asset order (see :func:`geochip.read.load.item_bands`)."""
        if self.spec.bands:
            return list(self.spec.bands)

        item = item if item is not None else self.items()[0]
        names = [b for b in item_bands(item) if b != MASK_ASSET]
        multi = {b.rpartition(".")[0] for b in names if b.rpartition(".")[2].isdigit()}
        return [b for b in names if b not in multi]

    def geobox(self, item: pystac.Item) -> GeoBox:
        """The item's grid at the dataset's resolution: the reference band's extent (its
        native grid when the resolutions agree), anchored at its top-left corner."""
        band = self.spec.reference_band
        if band is None:
            candidates = list(dict.fromkeys(resolve_asset(item, b) for b in self.bands(item)))
            candidates = [b for b in candidates if b != MASK_ASSET] or [
                k for k in item.assets if k != MASK_ASSET
            ]
            band = min(candidates, key=lambda k: abs(asset_geobox(item, k).affine.a))
        asset = resolve_asset(item, band)
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
        DataArray in the source dtype, read with :func:`geochip.read.load.load_stack`
        (odc-stac); ``chunks=None`` reads now, an int or ``"auto"`` gives a lazy array."""
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
        import geopandas as gpd  # lazy: ~0.6 s, only vector masks
        import pandas as pd  # lazy: see above

        frames = []
        for path in self.mask_paths():
            frame = read_vector(path, layer=masks.layer, what="mask file")
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


def _read_raster_mask(
    href: str, geobox: GeoBox, band: int, on_mismatch: str
) -> npt.NDArray[np.uint8]:
    source = label_geobox(href)
    offset = lattice_offset(source, geobox)
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
        with gdal_env({}), rasterio.open(gdal_path(href)) as ds:
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

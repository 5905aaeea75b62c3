"""The chip dataset on disk ("store"): Zarr arrays, a GeoParquet index, a manifest.

::

    my-dataset/
      chips.zarr/      Zarr v3 group: image (N, [T,] C, H, W) in the source dtype, one chunk
                       per chip; mask (N, H, W) uint8 when there are labels
      index.parquet    GeoParquet, one row per chip, in the order of the arrays
      manifest.json    format, config, versions, counts; written last

A store is complete when ``manifest.json`` exists. :func:`write_store` builds it in a
sibling folder ``<name>.partial`` and renames it into place at the end, so a crash never
leaves something that looks complete. Nothing is pickled.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan import plan_chips
    >>> gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> plan = plan_chips(gbox, 32, grid_id="g")
    >>> image = np.arange(2 * 64 * 64, dtype="uint16").reshape(2, 64, 64)
    >>> src = ChipSource(image=image, bands=["a", "b"], nodata=0)
    >>> out = write_store(pathlib.Path(tempfile.mkdtemp()) / "ds", plan, {"g": src})
    >>> store = open_store(out)
    >>> len(store), store.image.shape, bool((store.read(3)[0] == image[:, 32:, 32:]).all())
    (4, (4, 2, 32, 32), True)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .engine import run_tasks
from .errors import InputError, RasterReadError, StoreError
from .grid import Window
from .read import synchronous_dask, window

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MASK_IGNORE",
    "ChipSource",
    "ChipStore",
    "open_store",
    "write_store",
]

FORMAT = "geochip-store"
FORMAT_VERSION = 1
#: Mask value of pixels that carry no label for training (cloud, nodata, padding).
MASK_IGNORE = 255


@dataclass(frozen=True)
class ChipSource:
    """The pixels of one grid that chips are cut from.

    ``image`` is (band, y, x) or (time, band, y, x) on the grid (numpy, dask or xarray; lazy
    is fine, only chip windows are computed). ``mask`` is an optional (y, x) label array on
    the same grid. The lists say where the pixels came from and go into the index.
    """

    image: Any
    bands: Sequence[str]
    nodata: float | int
    mask: Any = None
    item_ids: Sequence[str] = ()
    hrefs: Sequence[str] = ()
    datetimes: Sequence[str] = ()


@dataclass
class _Stats:
    nodata_fraction: float
    class_counts: str
    checksum: str


def _chip_stats(
    image: npt.NDArray[Any], mask: npt.NDArray[Any] | None, nodata: float | int
) -> _Stats:
    if np.issubdtype(image.dtype, np.floating) and (nodata is None or np.isnan(nodata)):
        bad = np.isnan(image)
    else:
        bad = image == nodata
    bad_px = bad.reshape(-1, *image.shape[-2:]).any(axis=0)
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    counts = "{}"
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
        values, n = np.unique(mask, return_counts=True)
        counts = json.dumps(
            {str(int(v)): int(c) for v, c in zip(values, n, strict=False)}, sort_keys=True
        )
    return _Stats(float(bad_px.mean()), counts, digest.hexdigest())


def _codec() -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _versions() -> dict[str, str]:
    import pyproj
    import rasterio

    from . import __version__

    return {
        "geochip": __version__,
        "gdal": str(rasterio.__gdal_version__),
        "proj": str(pyproj.proj_version_str),
        "rasterio": str(rasterio.__version__),
        "numpy": np.__version__,
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_store(
    path: str | Path,
    plan: gpd.GeoDataFrame,
    sources: Mapping[str, ChipSource],
    *,
    classes: Mapping[str, int] | None = None,
    config: Mapping[str, Any] | None = None,
    workers: int = 2,
    overwrite: bool = False,
    on_chip: Callable[[int], None] | None = None,
) -> Path:
    """Read every chip of ``plan`` from its grid's source and write the store at ``path``.

    Chip ``i`` of the arrays is row ``i`` of the plan. Every chip is checked before it is
    written: a read error raises :class:`~geochip.errors.RasterReadError` naming the chip.
    ``on_chip(n)`` reports progress. An existing store is replaced only with ``overwrite``.
    """
    import zarr

    path = Path(path)
    if (path / "manifest.json").exists() and not overwrite:
        raise StoreError(f"{path} already holds a chip dataset; pass overwrite=True to replace it")
    if path.exists() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise StoreError(f"{path} exists and is not a geochip store; choose another path")
    if len(plan) == 0:
        raise InputError("the plan has no chips; nothing to write")
    missing = sorted(set(plan["grid_id"]) - set(sources))
    if missing:
        raise InputError(f"no source for grids {missing}; sources cover {sorted(sources)}")
    plan = plan.reset_index(drop=True)
    first = sources[plan["grid_id"].iloc[0]]
    height, width = int(plan["height"].iloc[0]), int(plan["width"].iloc[0])
    if ((plan["height"] != height) | (plan["width"] != width)).any():
        raise InputError("all chips of a store must have the same size")
    lead = tuple(int(s) for s in first.image.shape[:-2])
    dtype = np.dtype(first.image.dtype)
    for gid, src in sources.items():
        if tuple(src.image.shape[:-2]) != lead or np.dtype(src.image.dtype) != dtype:
            raise InputError(
                f"grid {gid!r} has image shape {tuple(src.image.shape)} / {src.image.dtype}; "
                f"every grid must match {lead} / {dtype}"
            )
    with_mask = first.mask is not None

    partial = path.with_name(f"{path.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    group = zarr.open_group(partial / "chips.zarr", mode="w", zarr_format=3)
    n = len(plan)
    image_arr = group.create_array(
        "image",
        shape=(n, *lead, height, width),
        chunks=(1, *lead, height, width),
        dtype=dtype,
        compressors=_codec(),
        fill_value=first.nodata,
        dimension_names=("chip", *(("time",) if len(lead) == 2 else ()), "band", "y", "x"),
        attributes={"bands": list(first.bands), "nodata": _json_number(first.nodata)},
    )
    mask_arr = None
    if with_mask:
        mask_arr = group.create_array(
            "mask",
            shape=(n, height, width),
            chunks=(1, height, width),
            dtype="uint8",
            compressors=_codec(),
            fill_value=MASK_IGNORE,
            dimension_names=("chip", "y", "x"),
            attributes={"classes": dict(classes or {}), "ignore": MASK_IGNORE},
        )

    rows = plan[["grid_id", "chip_id", "row", "col", "height", "width"]].to_dict("records")

    def task(i: int) -> _Stats:
        row = rows[i]
        src = sources[row["grid_id"]]
        win = Window(row["row"], row["col"], row["height"], row["width"])
        try:
            with synchronous_dask():
                image = window(src.image, win, src.nodata)
                mask = window(src.mask, win, MASK_IGNORE) if src.mask is not None else None
        except Exception as err:
            raise RasterReadError(
                f"chip {row['chip_id']} (rows {win.row}:{win.row + win.height}, cols "
                f"{win.col}:{win.col + win.width} of grid {row['grid_id']}): {err}"
            ) from err
        image = image.astype(dtype, copy=False)
        image_arr[i] = image
        if mask_arr is not None and mask is not None:
            mask = mask.astype("uint8", copy=False)
            mask_arr[i] = mask
        return _chip_stats(image, mask, src.nodata)

    stats: list[_Stats | None] = [None] * n
    for i, result in run_tasks(task, range(n), workers=workers, on_done=on_chip):
        stats[i] = result

    index = plan.copy()
    index["index"] = np.arange(n, dtype=np.int64)
    index["item_ids"] = [list(sources[g].item_ids) for g in index["grid_id"]]
    index["hrefs"] = [list(sources[g].hrefs) for g in index["grid_id"]]
    index["datetimes"] = [list(sources[g].datetimes) for g in index["grid_id"]]
    index["nodata_fraction"] = [s.nodata_fraction for s in stats if s is not None]
    index["class_counts"] = [s.class_counts for s in stats if s is not None]
    index["checksum"] = [s.checksum for s in stats if s is not None]
    index["status"] = "ok"
    index.to_parquet(partial / "index.parquet", index=False, write_covering_bbox=False)

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "config": dict(config or {}),
        "image": {
            "shape": list(image_arr.shape),
            "dtype": dtype.name,
            "bands": list(first.bands),
            "nodata": _json_number(first.nodata),
        },
        "mask": (
            {"dtype": "uint8", "classes": dict(classes or {}), "ignore": MASK_IGNORE}
            if with_mask
            else None
        ),
        "counts": _counts(index),
    }
    _atomic_write_text(partial / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))

    if path.exists():
        old = path.with_name(f"{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
        partial.rename(path)
        shutil.rmtree(old)
    else:
        partial.rename(path)
    return path


def _json_number(value: float | int) -> float | int | str:
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return int(value) if float(value).is_integer() else float(value)


def _counts(index: gpd.GeoDataFrame) -> dict[str, Any]:
    classes: dict[str, int] = {}
    for text in index["class_counts"]:
        for key, value in json.loads(text).items():
            classes[key] = classes.get(key, 0) + int(value)
    splits = index.groupby("split").size().to_dict() if "split" in index else {}
    return {
        "chips": len(index),
        "splits": {str(k): int(v) for k, v in splits.items()},
        "pixels_per_class": dict(sorted(classes.items(), key=lambda kv: int(kv[0]))),
        "failed": int((index["status"] != "ok").sum()),
    }


@dataclass
class ChipStore:
    """An opened store: the index, the manifest, and lazily opened Zarr arrays."""

    path: Path
    index: gpd.GeoDataFrame
    manifest: dict[str, Any]
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(self.path / "chips.zarr" / name, mode="r")
        return self._arrays[name]

    @property
    def image(self) -> Any:
        """The (N, [T,] C, H, W) image array (Zarr)."""
        return self._array("image")

    @property
    def mask(self) -> Any:
        """The (N, H, W) mask array (Zarr), or None when the store has no labels."""
        return self._array("mask") if self.manifest.get("mask") else None

    @property
    def bands(self) -> list[str]:
        """Band names, in channel order."""
        return list(self.manifest["image"]["bands"])

    def read(self, i: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """(image, mask) of chip ``i`` (position in the arrays and the index)."""
        mask = self.mask
        return np.asarray(self.image[i]), (np.asarray(mask[i]) if mask is not None else None)

    def __getstate__(self) -> dict[str, Any]:
        # Zarr handles stay in the process that opened them (DataLoader workers fork).
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state


def open_store(path: str | Path) -> ChipStore:
    """Open a complete store; raise :class:`~geochip.errors.StoreError` if it is not one."""
    import geopandas as gpd

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        partial = path.with_name(f"{path.name}.partial")
        hint = f" (an unfinished build is in {partial})" if partial.exists() else ""
        raise StoreError(f"{path} is not a complete geochip store: no manifest.json{hint}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: manifest format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {manifest['format_version']} is newer than this "
            f"geochip reads ({FORMAT_VERSION}); upgrade geochip"
        )
    index = gpd.read_parquet(path / "index.parquet")
    return ChipStore(path, index, manifest)

"""The chip dataset on disk ("store"): Zarr arrays, a GeoParquet index, a manifest.

::

    my-dataset/
      chips.zarr/      Zarr v3 group: image (N, [T,] C, H, W) in the source dtype, one chip
                       per chunk (or per inner chunk of a shard); mask (N, H, W) uint8 when
                       there are labels or cloud masks (255 = ignore)
      index.parquet    GeoParquet, one row per chip, in the order of the arrays
      manifest.json    format, config, versions, layout, counts; written last

A store is complete when ``manifest.json`` exists. Chunk files are written atomically
(temporary file + rename, by Zarr's local store), one writer per chunk or shard; the index
and the manifest are written last, atomically. Nothing is pickled.

Two writers share this module: :func:`write_store` (chips cut from arrays already in this
process; builds in ``<name>.partial`` and renames it into place) and ``geochip build``
(:mod:`geochip.builder`: chips read from STAC items by an engine, resumable). Readers:
:func:`open_store` and :class:`ChipStore`, whose :class:`ArrayReader` decodes chunk files
directly (no Zarr call per chip) for the layouts geochip writes.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    "STATUSES",
    "ArrayReader",
    "ChipSource",
    "ChipStats",
    "ChipStore",
    "Layout",
    "StoreWriter",
    "atomic_write_bytes",
    "chip_stats",
    "finalize_store",
    "open_store",
    "write_store",
]

FORMAT = "geochip-store"
#: 2: statuses other than "ok" (nodata, failed), an ``error`` column, layout in the manifest.
FORMAT_VERSION = 2
#: Mask value of pixels that carry no label for training (cloud, nodata, padding).
MASK_IGNORE = 255
#: Status of a chip in the index: written and usable / over the nodata limit / not read.
STATUSES = ("ok", "nodata", "failed")


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


# --------------------------------------------------------------------------- chip stats


@dataclass(frozen=True)
class ChipStats:
    """What the index records about one chip after it was read."""

    status: str
    nodata_fraction: float
    class_counts: str
    checksum: str
    error: str = ""
    empty_steps: int | None = None
    """Time stacks: the chip's time steps without any valid pixel (None: no time axis)."""

    def to_json(self) -> dict[str, Any]:
        """Plain data for a batch record."""
        out: dict[str, Any] = {
            "status": self.status,
            "nodata_fraction": self.nodata_fraction,
            "class_counts": self.class_counts,
            "checksum": self.checksum,
            "error": self.error,
        }
        if self.empty_steps is not None:
            out["empty_steps"] = self.empty_steps
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChipStats:
        """The inverse of :meth:`to_json`."""
        empty = data.get("empty_steps")
        return cls(
            str(data["status"]),
            float(data["nodata_fraction"]),
            str(data["class_counts"]),
            str(data["checksum"]),
            str(data.get("error", "")),
            None if empty is None else int(empty),
        )


def nodata_pixels(image: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    """(y, x) booleans: pixels where any band (any time step) is nodata (or NaN)."""
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        bad = (
            np.isnan(image)
            if np.issubdtype(image.dtype, np.floating)
            else np.zeros_like(image, bool)
        )
    else:
        bad = image == nodata
        if np.issubdtype(image.dtype, np.floating):
            bad |= np.isnan(image)
    return np.asarray(bad.reshape(-1, *image.shape[-2:]).any(axis=0))


def chip_checksum(image: npt.NDArray[Any], mask: npt.NDArray[Any] | None) -> str:
    """sha256 of the chip's image bytes, then its mask bytes (C order)."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()


def chip_stats(
    image: npt.NDArray[Any],
    mask: npt.NDArray[Any] | None,
    nodata: float | int | None,
    *,
    max_nodata_fraction: float = 1.0,
    invalid: npt.NDArray[np.bool_] | None = None,
) -> ChipStats:
    """Nodata fraction, class counts and checksum of one chip; status ``nodata`` when the
    nodata fraction exceeds ``max_nodata_fraction``. ``invalid`` adds pixels to count as
    nodata (e.g. padding)."""
    bad = nodata_pixels(image, nodata)
    if invalid is not None:
        bad = bad | invalid
    fraction = float(bad.mean())
    counts = "{}"
    if mask is not None:
        values, n = np.unique(mask, return_counts=True)
        counts = json.dumps(
            {str(int(v)): int(c) for v, c in zip(values, n, strict=False)}, sort_keys=True
        )
    status = "nodata" if fraction > max_nodata_fraction else "ok"
    return ChipStats(status, fraction, counts, chip_checksum(image, mask))


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """How chips are laid out in chunk files: the codec and chips per shard.

    ``codec``: ``"none"``, ``"lz4"`` (Blosc lz4 with byte shuffle) or ``"zstd"``;
    ``chips_per_shard``: 1 for one chip per chunk file, more for Zarr shards of that many
    chips (one chip per inner chunk). The default (uncompressed, one chip per file) is the
    trade-off measured by ``benchmarks/store.py``: the fastest to train from; lz4 saves disk
    at a read cost.
    """

    codec: str = "none"
    level: int | None = None
    chips_per_shard: int = 1

    def __post_init__(self) -> None:
        if self.codec not in {"none", "lz4", "zstd"}:
            raise InputError(f"codec must be none, lz4 or zstd, got {self.codec!r}")
        if self.chips_per_shard < 1:
            raise InputError(f"chips_per_shard must be >= 1, got {self.chips_per_shard}")

    def compressors(self) -> Any:
        """The Zarr v3 compressors for this codec."""
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.codec == "none":
            return None
        if self.codec == "lz4":
            return BloscCodec(
                cname="lz4", clevel=self.level if self.level is not None else 5, shuffle="shuffle"
            )
        return ZstdCodec(level=self.level if self.level is not None else 3)

    def describe(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return {"codec": self.codec, "level": self.level, "chips_per_shard": self.chips_per_shard}


def _versions() -> dict[str, str]:
    import pyproj
    import rasterio
    import zarr

    from . import __version__

    return {
        "geochip": __version__,
        "gdal": str(rasterio.__gdal_version__),
        "proj": str(pyproj.proj_version_str),
        "rasterio": str(rasterio.__version__),
        "zarr": str(zarr.__version__),
        "numpy": np.__version__,
    }


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- writer


class StoreWriter:
    """Creates the Zarr arrays of a store and writes batches of chips into them.

    One batch is a run of whole chunks (or shards) ``[start, stop)``: a batch is written by
    one task, so every chunk file has one writer. :meth:`write` returns the sha256 of every
    chunk file the batch owns (None where the chunk is all fill and so not stored), which
    a resumed build checks before it skips the batch.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.zarr_path = self.root / "chips.zarr"
        self._arrays: dict[str, Any] = {}

    def create(
        self,
        *,
        n: int,
        lead: tuple[int, ...],
        height: int,
        width: int,
        dtype: Any,
        nodata: float | int,
        bands: Sequence[str],
        with_mask: bool,
        classes: Mapping[str, int] | None,
        layout: Layout,
    ) -> None:
        """Create (or replace) the group and its arrays; no chunk is written."""
        import zarr

        group = zarr.open_group(self.zarr_path, mode="w", zarr_format=3)
        k = layout.chips_per_shard
        image_chunks = (1, *lead, height, width)
        group.create_array(
            "image",
            shape=(n, *lead, height, width),
            chunks=image_chunks,
            shards=(k, *lead, height, width) if k > 1 else None,
            dtype=np.dtype(dtype),
            compressors=layout.compressors(),
            fill_value=nodata,
            dimension_names=("chip", *(("time",) if len(lead) == 2 else ()), "band", "y", "x"),
            attributes={"bands": list(bands), "nodata": _json_number(nodata)},
        )
        if with_mask:
            group.create_array(
                "mask",
                shape=(n, height, width),
                chunks=(1, height, width),
                shards=(k, height, width) if k > 1 else None,
                dtype="uint8",
                compressors=layout.compressors(),
                fill_value=MASK_IGNORE,
                dimension_names=("chip", "y", "x"),
                attributes={"classes": dict(classes or {}), "ignore": MASK_IGNORE},
            )

    def exists(self, with_mask: bool = False) -> bool:
        """Whether the group's and the arrays' metadata is all there."""
        names = ["zarr.json", "image/zarr.json"] + (["mask/zarr.json"] if with_mask else [])
        return all((self.zarr_path / name).exists() for name in names)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(self.zarr_path / name, mode="r+")
        return self._arrays[name]

    def chips_per_file(self) -> int:
        """Chips per chunk file (the shard size, or 1)."""
        meta = json.loads((self.zarr_path / "image" / "zarr.json").read_text())
        return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])

    def keys(self, start: int, stop: int) -> list[str]:
        """Paths (relative to chips.zarr) of the chunk files holding chips [start, stop)."""
        out = []
        for name in ("image", "mask"):
            meta_path = self.zarr_path / name / "zarr.json"
            if not meta_path.exists():
                continue
            meta = json.loads(meta_path.read_text())
            per = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
            ndim = len(meta["shape"])
            for c in range(start // per, (stop - 1) // per + 1):
                out.append("/".join([name, "c", str(c), *(["0"] * (ndim - 1))]))
        return out

    def write(
        self, start: int, image: npt.NDArray[Any], mask: npt.NDArray[Any] | None
    ) -> dict[str, str | None]:
        """Write chips ``start .. start + len(image)`` and hash the chunk files they own."""
        stop = start + len(image)
        # The batch owns these files whole: remove what an interrupted run left, so that
        # Zarr never merges into (or trips over) a damaged shard.
        for key in self.keys(start, stop):
            (self.zarr_path / key).unlink(missing_ok=True)
        self._array("image")[start:stop] = image
        if mask is not None:
            self._array("mask")[start:stop] = mask
        return {key: _sha256_file(self.zarr_path / key) for key in self.keys(start, stop)}

    def verify(self, files: Mapping[str, str | None]) -> bool:
        """Whether every chunk file still has the recorded hash (or is still absent)."""
        return all(_sha256_file(self.zarr_path / key) == digest for key, digest in files.items())

    def clean_temporary(self) -> int:
        """Remove temporary files left by writes that were interrupted (kill -9): in the
        arrays, and beside the index and the manifest."""
        removed = 0
        candidates = [
            *self.zarr_path.rglob("*.partial"),
            *self.root.glob(".*.partial"),
            # the selection table's temporary files (geochip.select writes *.part*)
            *self.root.glob("selection.*.part"),
            *self.root.glob("selection.*.part2"),
        ]
        for path in candidates:
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _json_number(value: float | int | None) -> float | int | str | None:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return int(value) if float(value).is_integer() else float(value)


def _counts(index: gpd.GeoDataFrame) -> dict[str, Any]:
    classes: dict[str, int] = {}
    per_split: dict[str, dict[str, int]] = {}
    ok = index[index["status"] == "ok"]
    for split, text in zip(
        ok["split"] if "split" in ok else ["all"] * len(ok), ok["class_counts"], strict=False
    ):
        bucket = per_split.setdefault(str(split), {})
        for key, value in json.loads(text).items():
            classes[key] = classes.get(key, 0) + int(value)
            bucket[key] = bucket.get(key, 0) + int(value)

    def ordered(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: int(kv[0])))

    splits = ok.groupby("split").size().to_dict() if "split" in ok else {}
    return {
        "chips": len(index),
        "ok": len(ok),
        "splits": {str(k): int(v) for k, v in splits.items()},
        "pixels_per_class": ordered(classes),
        "pixels_per_class_per_split": {k: ordered(v) for k, v in sorted(per_split.items())},
        "nodata": int((index["status"] == "nodata").sum()),
        "failed": int((index["status"] == "failed").sum()),
    }


def finalize_store(
    root: str | Path,
    plan: gpd.GeoDataFrame,
    stats: Sequence[ChipStats],
    *,
    sources: Mapping[str, Mapping[str, Sequence[str]]],
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``index.parquet`` then ``manifest.json`` (each atomically); return the manifest.

    ``plan`` row ``i`` is chip ``i`` of the arrays; ``stats[i]`` what was read for it;
    ``sources[grid_id]`` holds its ``item_ids``, ``hrefs`` and ``datetimes`` (lists), and
    any other key becomes a column too (e.g. ``steps``, the items of each time step).
    """
    root = Path(root)
    if len(stats) != len(plan):
        raise StoreError(f"{len(stats)} chip records for a plan of {len(plan)} chips")
    index = plan.reset_index(drop=True).copy()
    index["index"] = np.arange(len(index), dtype=np.int64)
    for key in ("item_ids", "hrefs", "datetimes"):
        index[key] = [list(sources[g].get(key, ())) for g in index["grid_id"]]
    extra = sorted({k for v in sources.values() for k in v} - {"item_ids", "hrefs", "datetimes"})
    for key in extra:
        index[key] = [sources[g].get(key) for g in index["grid_id"]]
    if any(s.empty_steps is not None for s in stats):
        index["empty_steps"] = np.array([s.empty_steps or 0 for s in stats], dtype=np.int32)
    index["nodata_fraction"] = np.array([s.nodata_fraction for s in stats], dtype=np.float64)
    index["class_counts"] = [s.class_counts for s in stats]
    index["checksum"] = [s.checksum for s in stats]
    index["status"] = [s.status for s in stats]
    index["error"] = [s.error for s in stats]
    tmp = root / ".index.parquet.partial"
    index.to_parquet(tmp, index=False, write_covering_bbox=False)
    os.replace(tmp, root / "index.parquet")
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        **manifest,
        "counts": _counts(index),
    }
    _atomic_write_text(root / "manifest.json", json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


# --------------------------------------------------------------------------- write_store


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
    layout: Layout | None = None,
) -> Path:
    """Read every chip of ``plan`` from its grid's source and write the store at ``path``.

    Chip ``i`` of the arrays is row ``i`` of the plan. Every chip is checked before it is
    written: a read error raises :class:`~geochip.errors.RasterReadError` naming the chip.
    ``on_chip(n)`` reports progress. An existing store is replaced only with ``overwrite``.
    For datasets described by a config, with resume and Dask, use ``geochip build``.
    """
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
    layout = layout or Layout()
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
    writer = StoreWriter(partial)
    n = len(plan)
    writer.create(
        n=n,
        lead=lead,
        height=height,
        width=width,
        dtype=dtype,
        nodata=first.nodata,
        bands=first.bands,
        with_mask=with_mask,
        classes=classes,
        layout=layout,
    )
    rows = plan[["grid_id", "chip_id", "row", "col", "height", "width"]].to_dict("records")
    batches = list(iter_batches(n, 8, layout.chips_per_shard))

    def task(bounds: tuple[int, int]) -> list[ChipStats]:
        start, stop = bounds
        images = np.empty((stop - start, *lead, height, width), dtype=dtype)
        masks = np.empty((stop - start, height, width), dtype="uint8") if with_mask else None
        out = []
        for k, i in enumerate(range(start, stop)):
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
            images[k] = image
            if masks is not None:
                masks[k] = MASK_IGNORE if mask is None else mask
            out.append(chip_stats(images[k], None if masks is None else masks[k], src.nodata))
        writer.write(start, images, masks)
        if on_chip is not None:
            done[0] += stop - start
            on_chip(done[0])
        return out

    done = [0]
    stats: list[ChipStats | None] = [None] * n
    for b, result in run_tasks(task, batches, workers=workers):
        for k, s in enumerate(result):
            stats[batches[b][0] + k] = s

    source_info = {
        gid: {
            "item_ids": list(src.item_ids),
            "hrefs": list(src.hrefs),
            "datetimes": list(src.datetimes),
        }
        for gid, src in sources.items()
    }
    finalize_store(
        partial,
        plan,
        [s for s in stats if s is not None],
        sources=source_info,
        manifest={
            "config": dict(config or {}),
            "layout": layout.describe(),
            "image": {
                "shape": [n, *lead, height, width],
                "dtype": dtype.name,
                "bands": list(first.bands),
                "nodata": _json_number(first.nodata),
            },
            "mask": (
                {"dtype": "uint8", "classes": dict(classes or {}), "ignore": MASK_IGNORE}
                if with_mask
                else None
            ),
        },
    )
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


# --------------------------------------------------------------------------- reading


_MAX_U64 = 2**64 - 1


class ArrayReader:
    """Reads chip ``i`` of a Zarr v3 array written by geochip straight from its chunk file.

    Zarr's per-call machinery costs more than decoding a chip; for the layouts geochip
    writes (one chip per chunk or per inner chunk of a shard; ``bytes`` + optional Blosc or
    Zstd) this reader opens the file, reads the bytes and decodes them into the caller's
    buffer. Other layouts fall back to Zarr. Safe to use after ``fork`` (it holds no open
    files; shard indexes are cached per process).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / "zarr.json").read_text())
        self.shape = tuple(int(s) for s in meta["shape"])
        self.dtype = np.dtype(meta["data_type"])
        fill = meta["fill_value"]
        self.fill = float("nan") if fill in ("NaN", "nan") else fill
        self.chip_shape = self.shape[1:]
        self.nbytes = int(np.prod(self.chip_shape)) * self.dtype.itemsize
        self.per_file = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        encoding = meta.get("chunk_key_encoding", {})
        sep = encoding.get("configuration", {}).get("separator", "/")
        self._fast = encoding.get("name") == "default" and sep == "/"
        self._sep = sep
        codecs = meta["codecs"]
        self.sharded = codecs[0]["name"] == "sharding_indexed"
        inner = codecs[0]["configuration"]["codecs"] if self.sharded else codecs
        if self.sharded:
            conf = codecs[0]["configuration"]
            inner_shape = tuple(conf["chunk_shape"])
            self._fast &= (
                inner_shape == (1, *self.chip_shape) and conf.get("index_location", "end") == "end"
            )
            names = [c["name"] for c in conf["index_codecs"]]
            self._fast &= names in (["bytes", "crc32c"], ["bytes"])
            self._index_crc = "crc32c" in names
        else:
            self._fast &= (
                self.per_file == 1
                and tuple(meta["chunk_grid"]["configuration"]["chunk_shape"][1:]) == self.chip_shape
            )
        self.codec = "none"
        for codec in inner:
            name = codec["name"]
            if name == "bytes":
                endian = codec.get("configuration", {}).get("endian", "little")
                self._fast &= endian == "little" or self.dtype.itemsize == 1
            elif name in ("blosc", "zstd") and self.codec == "none":
                self.codec = name
            else:
                self._fast = False
        self._ndim = len(self.shape)
        self._shard_index: dict[int, npt.NDArray[np.uint64]] = {}
        self._zarr: Any = None
        self._decoder: Any = None
        self._buffer: npt.NDArray[np.uint8] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zarr"] = None
        state["_decoder"] = None
        state["_shard_index"] = {}
        state["_buffer"] = None
        return state

    def _key(self, c: int) -> Path:
        return self.path.joinpath("c", str(c), *(["0"] * (self._ndim - 1)))

    def _decode(self, data: bytes | memoryview, out: npt.NDArray[Any]) -> None:
        if self.codec == "none":
            if len(data) != self.nbytes:
                raise StoreError(
                    f"{self.path}: a chunk holds {len(data)} bytes, expected {self.nbytes}"
                )
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
            return
        if self._decoder is None:
            import numcodecs

            self._decoder = numcodecs.Blosc() if self.codec == "blosc" else numcodecs.Zstd()
        self._decoder.decode(data, out=out.reshape(-1).view(np.uint8))

    def _shard(self, s: int) -> npt.NDArray[np.uint64] | None:
        index = self._shard_index.get(s)
        if index is not None:
            return index
        path = self._key(s)
        size = self.per_file * 16 + (4 if self._index_crc else 0)
        try:
            with open(path, "rb", buffering=0) as f:
                f.seek(-size, os.SEEK_END)
                raw = f.read(size)
        except FileNotFoundError:
            return None
        if self._index_crc:
            import google_crc32c

            if int.from_bytes(raw[-4:], "little") != google_crc32c.value(raw[:-4]):
                raise StoreError(f"{path}: the shard index fails its crc32c check")
            raw = raw[:-4]
        index = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        self._shard_index[s] = index
        return index

    def locate(self, i: int) -> tuple[Path, int, int] | None:
        """(file, offset, nbytes) of chip ``i``'s encoded bytes; None when not stored."""
        if self.sharded:
            s, j = divmod(i, self.per_file)
            index = self._shard(s)
            if index is None:
                return None
            offset, nbytes = (int(v) for v in index[j])
            if offset == _MAX_U64 and nbytes == _MAX_U64:
                return None
            return self._key(s), offset, nbytes
        path = self._key(i)
        try:
            return path, 0, os.stat(path).st_size
        except FileNotFoundError:
            return None

    def read_into(self, i: int, out: npt.NDArray[Any]) -> None:
        """Decode chip ``i`` into ``out`` (shape ``shape[1:]``, this dtype, C-contiguous)."""
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"chip {i} out of range for {self.shape[0]} chips")
        if not self._fast:
            if self._zarr is None:
                import zarr

                self._zarr = zarr.open_array(self.path, mode="r")
            out[...] = self._zarr[i]
            return
        where = self.locate(i)
        if where is None:
            out.fill(self.fill)
            return
        path, offset, nbytes = where
        if self.codec == "none" and out.flags.c_contiguous:
            with open(path, "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
            if got != self.nbytes:
                raise StoreError(f"{path}: chip {i} has {got} bytes, expected {self.nbytes}")
            return
        # a reused read buffer: a fresh bytes object per chip costs page faults
        if self._buffer is None or len(self._buffer) < nbytes:
            self._buffer = np.empty(max(nbytes, self.nbytes + 1024), dtype=np.uint8)
        view = memoryview(self._buffer)[:nbytes]  # type: ignore[arg-type]
        with open(path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            got = f.readinto(view)
        if got != nbytes:
            raise StoreError(f"{path}: chip {i} is cut short ({got} of {nbytes} bytes)")
        self._decode(view, out)

    def read(self, i: int) -> npt.NDArray[Any]:
        """Chip ``i`` as a new array."""
        out = np.empty(self.chip_shape, dtype=self.dtype)
        self.read_into(i, out)
        return out


@dataclass
class ChipStore:
    """An opened store: the index, the manifest, and lazily opened arrays."""

    path: Path
    index: gpd.GeoDataFrame
    manifest: dict[str, Any]
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    _readers: dict[str, ArrayReader] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(self.path / "chips.zarr" / name, mode="r")
        return self._arrays[name]

    def reader(self, name: str) -> ArrayReader:
        """The direct chunk reader of ``image`` or ``mask``."""
        if name not in self._readers:
            self._readers[name] = ArrayReader(self.path / "chips.zarr" / name)
        return self._readers[name]

    @property
    def image(self) -> Any:
        """The (N, [T,] C, H, W) image array (Zarr)."""
        return self._array("image")

    @property
    def mask(self) -> Any:
        """The (N, H, W) mask array (Zarr), or None when the store has no labels."""
        return self._array("mask") if self.manifest.get("mask") else None

    @property
    def has_mask(self) -> bool:
        """Whether the store has a mask array."""
        return bool(self.manifest.get("mask"))

    @property
    def bands(self) -> list[str]:
        """Band names, in channel order."""
        return list(self.manifest["image"]["bands"])

    def read(self, i: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """(image, mask) of chip ``i`` (position in the arrays and the index)."""
        image = self.reader("image").read(i)
        return image, (self.reader("mask").read(i) if self.has_mask else None)

    def ok(self) -> gpd.GeoDataFrame:
        """The index rows of chips usable for training (status ``ok``)."""
        return self.index[self.index["status"] == "ok"]

    def __getstate__(self) -> dict[str, Any]:
        # Zarr handles stay in the process that opened them (DataLoader workers fork).
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_readers"] = {}
        return state


def open_store(path: str | Path) -> ChipStore:
    """Open a complete store; raise :class:`~geochip.errors.StoreError` if it is not one."""
    import geopandas as gpd

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        partial = path.with_name(f"{path.name}.partial")
        hint = ""
        if partial.exists():
            hint = f" (an unfinished build is in {partial})"
        elif (path / ".geochip").exists():
            hint = " (an unfinished `geochip build`: run it again to resume)"
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
    if "error" not in index.columns:
        index["error"] = ""
    return ChipStore(path, index, manifest)


def iter_batches(n: int, batch_size: int, per_file: int) -> Iterable[tuple[int, int]]:
    """[start, stop) runs of chips covering whole chunk files (shards), in order.

    >>> list(iter_batches(10, 4, 1)), list(iter_batches(10, 5, 4))
    ([(0, 4), (4, 8), (8, 10)], [(0, 8), (8, 10)])
    """
    step = max(per_file, -(-batch_size // per_file) * per_file)
    for start in range(0, n, step):
        yield start, min(start + step, n)

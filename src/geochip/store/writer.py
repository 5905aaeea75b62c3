"""Writing a store: :class:`StoreWriter` creates the arrays and writes batches of chips (one
writer per chunk file, each batch returning the sha256 of its files for resume);
:func:`finalize_store` writes the index and then the manifest; :func:`write_store` writes a
whole store from arrays already in this process (built in ``<name>.partial`` and renamed
into place; in object storage written in place under the writer's lock, the manifest last:
see :mod:`geochip.store.remote`). ``geochip build`` (:mod:`geochip.builder`) writes with
the same writer, from tasks.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.chips import plan_chips
    >>> from geochip.store.reader import open_store
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
import io
import json
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.buffer import default_buffer_prototype

from ..core.engine import run_tasks, synchronous_dask
from ..core.files import atomic_write_bytes, atomic_write_text, remove_tree, sha256_file
from ..core.grid import Window, array_window
from ..core.storage import ObjectPath, check_writable, store_path
from ..errors import InputError, RasterReadError, StoreError
from .bandstats import batch_stats, batch_to_json, merge_batches, save_stats
from .format import FORMAT, FORMAT_VERSION, MASK_IGNORE, Layout, iter_batches, store_versions
from .remote import REMOTE_CHIPS_PER_SHARD, put_objects, store_lock, zarr_store
from .stats import ChipStats, chip_stats

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "ChipSource",
    "array_metadata",
    "StoreWriter",
    "finalize_store",
    "write_store",
]


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


class StoreWriter:
    """Creates the Zarr arrays of a store and writes batches of chips into them.

    One batch is a run of whole chunks (or shards) ``[start, stop)``: a batch is written by
    one task, so every chunk file has one writer. :meth:`write` returns the sha256 of every
    chunk file the batch owns (None where the chunk is all fill and so not stored), which
    a resumed build checks before it skips the batch.
    """

    def __init__(
        self,
        root: str | Path | ObjectPath,
        metadata: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> None:
        """``metadata``: what :meth:`metadata` of a writer of the same store returned (a
        task's writer then reads no ``zarr.json``)."""
        self.root = store_path(root)
        self.zarr_path = self.root / "chips.zarr"
        self._arrays: dict[str, Any] = {}
        self._metas: dict[str, dict[str, Any] | None] = dict(metadata or {})
        self._lock = threading.Lock()

    def create(self, **spec: Any) -> None:
        """Create (or replace) the group and its arrays (``spec``: the arguments of
        :func:`array_metadata`); no chunk is written. The metadata is made in memory, then
        written (in object storage its 3 objects at once: Zarr's own create through fsspec
        took about 20 requests, one after another)."""
        objects = array_metadata(**spec)
        self._arrays = {}
        self._metas = {
            name: json.loads(objects[f"{name}/zarr.json"])
            if f"{name}/zarr.json" in objects
            else None
            for name in ("image", "mask")
        }
        remove_tree(self.zarr_path)
        if isinstance(self.zarr_path, ObjectPath):
            put_objects(self.zarr_path, objects)
            return
        for key, data in objects.items():
            path = self.zarr_path / key
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)

    def exists(self, with_mask: bool = False) -> bool:
        """Whether the group's and the arrays' metadata is all there."""
        names = ["zarr.json", "image/zarr.json"] + (["mask/zarr.json"] if with_mask else [])
        return all((self.zarr_path / name).exists() for name in names)

    def _array(self, name: str) -> Any:
        with self._lock:  # batches run on threads
            if name not in self._arrays:
                location = self.zarr_path / name
                self._arrays[name] = zarr.open_array(zarr_store(location), mode="r+")
            return self._arrays[name]

    def _meta(self, name: str) -> dict[str, Any] | None:
        """An array's metadata (cached: it does not change once created); None if absent."""
        if name not in self._metas:
            path = self.zarr_path / name / "zarr.json"
            try:
                self._metas[name] = json.loads(path.read_text())
            except FileNotFoundError:
                self._metas[name] = None
        return self._metas[name]

    def metadata(self) -> dict[str, dict[str, Any] | None]:
        """The arrays' metadata (``zarr.json``; None for an array not there), for the writers
        of a build's tasks."""
        return {name: self._meta(name) for name in ("image", "mask")}

    def chips_per_file(self) -> int:
        """Chips per chunk file (the shard size, or 1)."""
        meta = self._meta("image")
        if meta is None:
            raise StoreError(f"{self.zarr_path}: no image array")
        return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])

    def keys(self, start: int, stop: int) -> list[str]:
        """Paths (relative to chips.zarr) of the chunk files holding chips [start, stop)."""
        out = []
        for name in ("image", "mask"):
            meta = self._meta(name)
            if meta is None:
                continue
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
        if isinstance(self.zarr_path, ObjectPath):
            return self._write_objects(self.zarr_path, start, image, mask)
        # The batch owns these files whole: remove what an interrupted run left, so that
        # Zarr never merges into (or trips over) a damaged shard.
        for key in self.keys(start, stop):
            (self.zarr_path / key).unlink(missing_ok=True)
        self._array("image")[start:stop] = image
        if mask is not None:
            self._array("mask")[start:stop] = mask
        return {key: sha256_file(self.zarr_path / key) for key in self.keys(start, stop)}

    def _write_objects(
        self,
        root: ObjectPath,
        start: int,
        image: npt.NDArray[Any],
        mask: npt.NDArray[Any] | None,
    ) -> dict[str, str | None]:
        """:meth:`write` to object storage: Zarr encodes the batch's chunk files in memory
        (the arrays' own metadata, so the same bytes), then each is one PUT, all at once.
        Writing through a remote Zarr store instead took 8 requests per shard (Zarr reads a
        shard before it writes it; 12 MB went up in a multipart upload of 3 parts) and 0.66
        requests per chip in all; this takes 1 per chunk file. Keys Zarr did not write (all
        fill) are deleted: an interrupted run may have left them."""
        stop = start + len(image)
        encoded: dict[str, Any] = {}
        for name, data in (("image", image), ("mask", mask)):
            if data is None:
                continue
            meta = self._meta(name)
            if meta is None:
                raise StoreError(f"{root}: no {name} array")
            metadata = default_buffer_prototype().buffer.from_bytes(json.dumps(meta).encode())
            chunks = {"zarr.json": metadata}
            zarr.open_array(zarr.storage.MemoryStore(chunks), mode="r+")[start:stop] = data
            encoded |= {f"{name}/{key}": value for key, value in chunks.items()}
        keys = self.keys(start, stop)
        blobs = {key: encoded[key].to_bytes() for key in keys if key in encoded}
        put_objects(root, blobs)
        for key in keys:
            if key not in blobs:
                (root / key).unlink(missing_ok=True)
        return {
            key: hashlib.sha256(blobs[key]).hexdigest() if key in blobs else None for key in keys
        }

    def verify(self, files: Mapping[str, str | None]) -> bool:
        """Whether every chunk file still has the recorded hash (or is still absent)."""
        return all(sha256_file(self.zarr_path / key) == digest for key, digest in files.items())

    def clean_temporary(self) -> int:
        """Remove temporary files left by writes that were interrupted (kill -9): in the
        arrays, and beside the index and the manifest."""
        removed = 0
        if isinstance(self.root, ObjectPath):
            return 0  # objects are written whole by one PUT: nothing temporary
        assert isinstance(self.zarr_path, Path)
        candidates = [
            *self.zarr_path.rglob("*.partial"),
            *self.root.glob(".*.partial"),  # geochip.core.files.atomic_path's names
            # the selection table's temporary names before geochip 0.1 used atomic_path
            *self.root.glob("selection.*.part"),
            *self.root.glob("selection.*.part2"),
        ]
        for path in candidates:
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def array_metadata(
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
) -> dict[str, bytes]:
    """The ``zarr.json`` of a store's group and arrays (keys relative to ``chips.zarr``):
    ``n`` chips of ``(*lead, height, width)`` pixels (``lead``: bands, or time steps and
    bands), a mask array when ``with_mask``."""
    objects: dict[str, Any] = {}
    group = zarr.open_group(zarr.storage.MemoryStore(objects), mode="w", zarr_format=3)
    k = layout.chips_per_shard
    group.create_array(
        "image",
        shape=(n, *lead, height, width),
        chunks=(1, *lead, height, width),
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
    return {key: value.to_bytes() for key, value in objects.items()}


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
    root: str | Path | ObjectPath,
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
    root = store_path(root)
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
    buffer = io.BytesIO()
    index.to_parquet(buffer, index=False, write_covering_bbox=False)
    atomic_write_bytes(root / "index.parquet", buffer.getvalue())
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": store_versions(),
        **manifest,
        "counts": _counts(index),
    }
    atomic_write_text(root / "manifest.json", json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


def write_store(
    path: str | Path | ObjectPath,
    plan: gpd.GeoDataFrame,
    sources: Mapping[str, ChipSource],
    *,
    classes: Mapping[str, int] | None = None,
    config: Mapping[str, Any] | None = None,
    workers: int = 2,
    overwrite: bool = False,
    on_chip: Callable[[int], None] | None = None,
    layout: Layout | None = None,
) -> Path | ObjectPath:
    """Read every chip of ``plan`` from its grid's source and write the store at ``path``.

    Chip ``i`` of the arrays is row ``i`` of the plan. Every chip is checked before it is
    written: a read error raises :class:`~geochip.errors.RasterReadError` naming the chip.
    ``on_chip(n)`` reports progress. An existing store is replaced only with ``overwrite``.
    For datasets described by a config, with resume and Dask, use ``geochip build``.

    ``path`` may be a URL (``s3://bucket/ds``, ...): the store is written in place under the
    writer's lock, manifest last, in shards of
    :data:`~geochip.store.remote.REMOTE_CHIPS_PER_SHARD` chips unless ``layout`` says
    otherwise (see :mod:`geochip.store.remote`).
    """
    root = store_path(path)
    remote = isinstance(root, ObjectPath)
    if remote:
        check_writable(root)
    if (root / "manifest.json").exists() and not overwrite:
        raise StoreError(f"{root} already holds a chip dataset; pass overwrite=True to replace it")
    names = [p.name for p in root.iterdir()] if root.exists() else []
    if names and not (root / "manifest.json").exists() and names != [".geochip"]:
        raise StoreError(f"{root} exists and is not a geochip store; choose another root")
    if len(plan) == 0:
        raise InputError("the plan has no chips; nothing to write")
    missing = sorted(set(plan["grid_id"]) - set(sources))
    if missing:
        raise InputError(f"no source for grids {missing}; sources cover {sorted(sources)}")
    layout = layout or Layout(chips_per_shard=REMOTE_CHIPS_PER_SHARD if remote else 1)
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
    args = (plan, sources, classes, config, workers, on_chip, layout, lead, dtype, with_mask)
    if isinstance(root, ObjectPath):
        with store_lock(root):
            # overwrite: the manifest first (the store stops being complete), then the rest
            (root / "manifest.json").unlink(missing_ok=True)
            for entry in root.iterdir():
                if entry.name != ".geochip":
                    remove_tree(entry)
            _fill(root, *args)
        return root
    partial = root.with_name(f"{root.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    _fill(partial, *args)
    if root.exists():
        old = root.with_name(f"{root.name}.old")
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)
        partial.rename(root)
        shutil.rmtree(old)
    else:
        partial.rename(root)
    return root


def _fill(
    target: Path | ObjectPath,
    plan: gpd.GeoDataFrame,
    sources: Mapping[str, ChipSource],
    classes: Mapping[str, int] | None,
    config: Mapping[str, Any] | None,
    workers: int,
    on_chip: Callable[[int], None] | None,
    layout: Layout,
    lead: tuple[int, ...],
    dtype: np.dtype[Any],
    with_mask: bool,
) -> None:
    """Write the arrays, the band statistics, the index and the manifest under ``target``."""
    first = sources[plan["grid_id"].iloc[0]]
    height, width = int(plan["height"].iloc[0]), int(plan["width"].iloc[0])
    writer = StoreWriter(target)
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

    splits = [str(v) for v in plan["split"]] if "split" in plan else ["all"] * n

    def task(bounds: tuple[int, int]) -> tuple[list[ChipStats], dict[str, Any]]:
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
                    image = array_window(src.image, win, src.nodata)
                    mask = (
                        array_window(src.mask, win, MASK_IGNORE) if src.mask is not None else None
                    )
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
        return out, batch_to_json(batch_stats(images, splits[start:stop], first.nodata))

    done = [0]
    stats: list[ChipStats | None] = [None] * n
    band_parts: list[dict[str, Any]] = [{} for _ in batches]
    for b, (result, part) in run_tasks(task, batches, workers=workers):
        band_parts[b] = part
        for k, s in enumerate(result):
            stats[batches[b][0] + k] = s
    # merged in batch order: the same numbers whatever order the threads finished in
    stats_section = save_stats(
        target, merge_batches(band_parts, dtype, lead[-1]), list(first.bands), dtype
    )

    source_info = {
        gid: {
            "item_ids": list(src.item_ids),
            "hrefs": list(src.hrefs),
            "datetimes": list(src.datetimes),
        }
        for gid, src in sources.items()
    }
    finalize_store(
        target,
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
            "stats": stats_section,
        },
    )

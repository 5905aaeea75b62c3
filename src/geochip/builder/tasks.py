"""Batch tasks: made from the plan one at a time (:func:`batch_tasks`), run wherever the
engine puts them (:func:`run_batch`: read, check and write the chips of one batch, then
its record).

A task is plain data (the chips' windows, the grids with their items as STAC dicts with
unsigned hrefs, the label shapes near those chips, GDAL options without credentials), small
to pickle into Dask and never holding a secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import shapely

from ..core.env import gdal_env
from ..core.files import atomic_write_bytes
from ..core.grid import Window, array_window
from ..core.retry import is_transient, retry
from ..core.security import redact
from ..core.storage import ObjectPath
from ..errors import RasterReadError
from ..read.labels import rasterize_labels
from ..store.bandstats import batch_stats, batch_to_json, fold_steps
from ..store.format import MASK_IGNORE, iter_batches
from ..store.stats import ChipStats, all_nodata, chip_stats
from ..store.writer import StoreWriter
from .config.model import BuildConfig
from .grids import GridSpec
from .pixels import ReadOptions, read_chips, read_label_rows
from .plan import BuildPlan, lead_dims
from .resume import record_path

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox

__all__ = [
    "BatchTask",
    "ChipRow",
    "run_batch",
]


@dataclass(frozen=True)
class ChipRow:
    """One chip of a batch: its position in the arrays and its window on its grid."""

    index: int
    chip_id: str
    grid_id: str
    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class BatchTask:
    """One task: chips ``[start, stop)`` of the arrays, read and written by one worker."""

    store: str
    batch: int
    start: int
    stop: int
    fingerprint: str
    chips: tuple[ChipRow, ...]
    grids: dict[str, GridSpec]
    labels: dict[str, tuple[tuple[bytes, ...], tuple[int, ...]]] | None
    label_options: dict[str, Any]
    with_mask: bool
    lead: tuple[int, ...]
    dtype: str
    nodata: float | int
    max_nodata_fraction: float
    gdal: dict[str, str | int]
    retries: int
    retry_delay: float
    read: ReadOptions
    splits: tuple[str, ...] = ()
    """The split of each chip (band statistics are kept per split); empty: no stats."""
    per_step: bool = False
    """Band statistics per time step too (``stats.per_step``)."""
    arrays: dict[str, Any] | None = None
    """The arrays' metadata (:meth:`StoreWriter.metadata`): the task's writer reads none."""


def _burn(task: BatchTask, spec: GridSpec, geobox: GeoBox) -> npt.NDArray[np.uint8] | None:
    if task.labels is None:
        return None

    wkbs, values = task.labels.get(spec.grid_id, ((), ()))
    geoms = shapely.from_wkb(list(wkbs)) if wkbs else []
    shapes = gpd.GeoDataFrame({"_class": list(values)}, geometry=list(geoms), crs=spec.crs)
    opts = task.label_options
    burned, _ = rasterize_labels(
        shapes,
        geobox,
        {v: v for v in set(values)},
        attribute="_class",
        background=opts["background"],
        all_touched=opts["all_touched"],
        skip_invalid=True,
    )
    return burned


def _describe_failure(err: BaseException, spec: GridSpec, bounds: tuple[int, ...]) -> str:
    """The error, its causes, and where: the item(s), the window and the files read."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(parts) < 4:
        text = f"{type(seen).__name__}: {seen}"
        if text not in parts:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    files = spec.hrefs()
    r0, r1, c0, c1 = bounds
    what = (
        f"item {spec.grid_id}"
        if spec.steps is None
        else f"grid {spec.grid_id} ({len(spec.items)} items)"
    )
    return f"{what}, grid rows {r0}:{r1} cols {c0}:{c1}, files {files[:8]}: " + " <- ".join(parts)


def _chip_stats(
    task: BatchTask,
    chip: ChipRow,
    chip_image: npt.NDArray[Any],
    missing: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.uint8] | None,
    win: Window,
) -> tuple[npt.NDArray[np.uint8] | None, ChipStats]:
    """A chip's mask and stats, from its image and where its values are missing."""

    # a pixel carries no label when it has no valid value (in any time step)
    invalid: npt.NDArray[np.bool_] = missing if missing.ndim == 2 else np.all(missing, axis=0)
    chip_mask = None
    if task.with_mask:
        if labels is not None:
            chip_mask = array_window(labels, win, MASK_IGNORE).astype(np.uint8)
        else:
            chip_mask = np.zeros((chip.height, chip.width), dtype=np.uint8)
        chip_mask[invalid] = MASK_IGNORE
    if missing.ndim == 2:
        stats = chip_stats(
            chip_image,
            chip_mask,
            task.nodata,
            max_nodata_fraction=task.max_nodata_fraction,
            invalid=invalid,
        )
    else:  # a time stack: the share of pixel-steps missing, and the empty steps
        base = chip_stats(chip_image, chip_mask, task.nodata)
        fraction = float(missing.mean())
        empty = int(missing.reshape(len(missing), -1).all(axis=1).sum())
        no_data = fraction > task.max_nodata_fraction or all_nodata(chip_image, task.nodata)
        status = "nodata" if no_data else "ok"
        stats = replace(base, status=status, nodata_fraction=fraction, empty_steps=empty)
    return chip_mask, stats


def run_batch(task: BatchTask) -> dict[str, Any]:
    """Read, check and write the chips of one batch; return (and save) its record.

    Runs wherever the engine puts it (a thread, a Dask worker). Transient read errors are
    retried with backoff; a row of chips that still fails is recorded as failed with the
    error. The record is written after the chunk files, atomically.
    """
    n = task.stop - task.start
    height, width = task.chips[0].height, task.chips[0].width
    image = np.full((n, *task.lead, height, width), task.nodata, dtype=np.dtype(task.dtype))
    mask = np.full((n, height, width), MASK_IGNORE, dtype=np.uint8) if task.with_mask else None
    stats: list[ChipStats | None] = [None] * n
    groups: dict[tuple[str, int], list[ChipRow]] = {}
    for chip in task.chips:
        groups.setdefault((chip.grid_id, chip.row), []).append(chip)
    with gdal_env(task.gdal):
        for (grid_id, _), chips in groups.items():
            spec = task.grids[grid_id]
            gh, gw = spec.shape
            r0 = max(min(c.row for c in chips), 0)
            r1 = min(max(c.row + c.height for c in chips), gh)
            c0 = max(min(c.col for c in chips), 0)
            c1 = min(max(c.col + c.width for c in chips), gw)
            bounds = (r0, r1, c0, c1)
            windows = [Window(c.row - r0, c.col - c0, c.height, c.width) for c in chips]

            def load(
                spec: GridSpec = spec,
                bounds: tuple[int, int, int, int] = bounds,
                windows: list[Window] = windows,
            ) -> tuple[list[tuple[Any, Any]], npt.NDArray[np.uint8] | None]:
                pixels = read_chips(spec, bounds, windows, task.read)
                if spec.label_href is not None:
                    return pixels, read_label_rows(spec, bounds, task.read)
                r0, r1, c0, c1 = bounds
                return pixels, _burn(task, spec, spec.geobox()[r0:r1, c0:c1])

            try:
                pixels, labels = retry(
                    load, retries=task.retries, delay=task.retry_delay, transient=_transient
                )
            except Exception as err:
                message = redact(_describe_failure(err, spec, bounds))[:2000]
                for chip in chips:
                    stats[chip.index - task.start] = ChipStats(
                        "failed", 1.0, "{}", "", message, empty_steps=_empty(task)
                    )
                continue
            for chip, win, (chip_image, missing) in zip(chips, windows, pixels, strict=True):
                k = chip.index - task.start
                chip_mask, chip_stat = _chip_stats(task, chip, chip_image, missing, labels, win)
                if chip_stat.status == "ok":
                    image[k] = chip_image
                    if mask is not None and chip_mask is not None:
                        mask[k] = chip_mask
                else:
                    chip_stat = replace(chip_stat, checksum="")
                stats[k] = chip_stat
    writer = StoreWriter(task.store, task.arrays)
    files = writer.write(task.start, image, mask)
    record = {
        "batch": task.batch,
        "start": task.start,
        "stop": task.stop,
        "fingerprint": task.fingerprint,
        "chips": [s.to_json() if s is not None else None for s in stats],
        "files": files,
    }
    if task.splits:  # band statistics of the chips written, per split
        ok = [s is not None and s.status == "ok" for s in stats]
        if task.per_step:  # one pass: the per-band statistics are the steps' merged
            steps = batch_stats(image, task.splits, task.nodata, ok, per_step=True)
            record["step_stats"] = batch_to_json(steps)
            flat = fold_steps(steps, image.shape[-3])
        else:
            flat = batch_stats(image, task.splits, task.nodata, ok)
        record["band_stats"] = batch_to_json(flat)
    atomic_write_bytes(
        record_path(task.store, task.batch), json.dumps(record, sort_keys=True).encode()
    )
    return record


def _transient(err: BaseException) -> bool:
    """Whether a row's failed load is worth loading again: not when a read already used up
    its retries (a RasterReadError: the reads retry each file themselves)."""
    return not isinstance(err, RasterReadError) and is_transient(err)


def _empty(task: BatchTask) -> int | None:
    """Empty steps recorded for a chip that could not be read (every step: no pixel)."""
    return task.lead[0] if len(task.lead) == 2 else None


def batch_tasks(
    out: Path | ObjectPath,
    plan: BuildPlan,
    config: BuildConfig,
    fingerprint: str,
    dtype: str,
    nodata: Any,
    with_mask: bool,
    per_file: int,
    todo: set[int],
    band_stats: bool = True,
    arrays: dict[str, Any] | None = None,
) -> Iterator[BatchTask]:
    """The tasks of the batches in ``todo``, made one at a time as the engine asks for
    them (so memory does not grow with the number of batches)."""
    chips = plan.plan
    rows = chips[["chip_id", "grid_id", "row", "col", "height", "width"]].to_dict("records")
    split_of = [str(s) for s in chips["split"]] if "split" in chips else ["all"] * len(chips)
    gdal = config.engine.gdal_options()
    assert plan.read is not None
    label_index: dict[str, tuple[Any, Any, Any]] = {}
    if plan.labels is not None:
        for gid, spec in plan.grids.items():
            local = plan.labels.to_crs(spec.crs)
            geoms = local.geometry.to_numpy()
            label_index[gid] = (shapely.STRtree(geoms), geoms, local["_class"].to_numpy())
    for b, (start, stop) in enumerate(iter_batches(len(chips), config.engine.batch_size, per_file)):
        if b not in todo:
            continue
        batch_rows = tuple(
            ChipRow(
                i,
                r["chip_id"],
                r["grid_id"],
                int(r["row"]),
                int(r["col"]),
                int(r["height"]),
                int(r["width"]),
            )
            for i, r in zip(range(start, stop), rows[start:stop], strict=True)
        )
        grid_ids = {r.grid_id for r in batch_rows}
        labels = None
        if plan.labels is not None:
            labels = {}
            for gid in grid_ids:
                tree, geoms, values = label_index[gid]
                spec = plan.grids[gid]
                a = spec.affine
                sub = [r for r in batch_rows if r.grid_id == gid]
                r0, r1 = min(r.row for r in sub) - 1, max(r.row + r.height for r in sub) + 1
                c0, c1 = min(r.col for r in sub) - 1, max(r.col + r.width for r in sub) + 1
                xs = (a[2] + c0 * a[0], a[2] + c1 * a[0])
                ys = (a[5] + r0 * a[4], a[5] + r1 * a[4])
                rect = (min(xs), min(ys), max(xs), max(ys))
                hits = np.sort(tree.query(shapely.box(*rect)))
                # intersection, not clip_by_rect: the latter may return invalid polygons,
                # which rasterize_labels would skip
                clipped = shapely.intersection(geoms[hits], shapely.box(*rect))
                keep = ~shapely.is_empty(clipped)
                labels[gid] = (
                    tuple(shapely.to_wkb(clipped[keep])),
                    tuple(int(v) for v in values[hits][keep]),
                )
        yield BatchTask(
            store=str(out),
            batch=b,
            start=start,
            stop=stop,
            fingerprint=fingerprint,
            chips=batch_rows,
            grids={gid: plan.grids[gid] for gid in sorted(grid_ids)},
            labels=labels,
            label_options=(
                {
                    "background": config.labels.background,
                    "all_touched": config.labels.all_touched,
                }
                if config.labels is not None
                else {}
            ),
            with_mask=with_mask,
            lead=lead_dims(plan, config),
            dtype=dtype,
            nodata=nodata,
            max_nodata_fraction=config.chips.max_nodata_fraction,
            gdal=gdal,
            retries=config.engine.retries,
            retry_delay=config.engine.retry_delay,
            read=plan.read,
            splits=tuple(split_of[start:stop]) if band_stats else (),
            per_step=config.stats.per_step,
            arrays=arrays,
        )

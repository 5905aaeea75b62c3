"""Array jobs: ``geochip build CONFIG --shard i/N`` runs shard ``i`` (0-based) of ``N``
independent jobs (a Slurm or AWS Batch array) that together write one store, and
``--finalize`` (or whichever shard ends with every batch recorded) writes the index and the
manifest. The store is byte-identical to a build on one machine.

The batches (whole chunk files: see :func:`geochip.store.format.iter_batches`) are dealt out
in contiguous runs, so that a shard reads neighbouring chips, which share scenes. Every shard
plans the build itself (the plan is deterministic; its fingerprint is checked against the
state the first shard wrote), writes the same ``.geochip/config.json`` and the same Zarr
metadata (the same bytes, so shards that start together do not conflict), then its own
batches and their records, exactly as :func:`geochip.builder.run.build` does. A shard run
again resumes: the batches it finished (record and files verified) are not read again.

Example:
    >>> parse_shard("2/10"), list(parse_shard("2/10").batches(25))
    (Shard(index=2, count=10), [5, 6])
    >>> [list(Shard(i, 3).batches(7)) for i in range(3)]
    [[0, 1], [2, 3], [4, 5, 6]]
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_bytes
from ..core.progress import Stages
from ..core.storage import ObjectPath, check_writable, store_path
from ..errors import IncompleteBuildError, InputError, StoreError
from ..store.format import Layout, iter_batches
from ..store.writer import StoreWriter, array_metadata
from .catalog import apply_registry
from .config.model import BuildConfig, diff_fields
from .plan import BuildPlan, plan_build
from .resume import STATE_DIR, state_dir
from .run import (
    BuildResult,
    array_spec,
    finish_build,
    read_record,
    run_batches,
    up_to_date,
    verified_records,
)
from .tasks import batch_tasks

__all__ = [
    "Shard",
    "ShardResult",
    "build_shard",
    "finalize_build",
    "parse_shard",
]

#: Inside the state folder: the number of shards the array jobs were started with.
SHARDS_FILE = "shards.json"
#: Inside the state folder: taken (created exclusively) by the shard that finalizes.
FINALIZE_LOCK = "finalize.lock"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count`` array jobs."""

    index: int
    count: int

    def batches(self, total: int) -> range:
        """This shard's batches out of ``total``: a contiguous run, sizes differing by at
        most one, together covering every batch exactly once."""
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"INDEX/COUNT"`` (0-based, as Slurm's ``--array=0-9`` and AWS Batch's
    ``AWS_BATCH_JOB_ARRAY_INDEX`` number them) as a :class:`Shard`."""
    usage = (
        "expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. --shard 0/10 "
        "(with Slurm: --shard $SLURM_ARRAY_TASK_ID/10 and #SBATCH --array=0-9)"
    )
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        hint = ""
        if len(parts) == 2 and not parts[0].strip():
            hint = " (the index is empty: is $SLURM_ARRAY_TASK_ID, or your array's index, set?)"
        raise InputError(f"--shard {text!r}: {usage}{hint}")
    index, count = (int(p) for p in parts)
    if count < 1:
        raise InputError(f"--shard {text!r}: the count must be at least 1; {usage}")
    if not 0 <= index < count:
        raise InputError(
            f"--shard {text!r}: index {index} is out of range for {count} shards (0 to "
            f"{count - 1}: shards are numbered from 0); an array numbered from 1 (--array=1-"
            f"{count}) needs --shard $((SLURM_ARRAY_TASK_ID - 1))/{count}"
        )
    return Shard(index, count)


@dataclass
class ShardResult:
    """What one array job did, and the whole build's result when it finalized it."""

    shard: Shard
    batches: range
    skipped: int
    missing: list[int]
    """Batches of the whole build (any shard) still without a record when this one ended."""
    seconds: float
    engine: str = "none"
    finalized: BuildResult | None = None
    note: str = ""
    failed: list[dict[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Lines for the command line."""
        if self.finalized is not None and self.finalized.up_to_date and not self.batches:
            return [f"shard {self.shard}: nothing to do, the store is complete"]
        b = self.batches
        mine = f"batches {b.start}-{b.stop - 1}" if len(b) else "no batch"
        out = [
            f"shard {self.shard}: {mine} of the build ({self.skipped} already done), engine: "
            f"{self.engine}, {self.seconds:.1f} s"
        ]
        if self.note:
            out.append(self.note)
        if self.finalized is None and self.missing:
            out.append(
                f"{len(self.missing)} batches of other shards are not written yet; the last "
                "shard to end writes the index and manifest (or run --finalize once all ended)"
            )
        return out


@dataclass
class _Setup:
    out: Path | ObjectPath
    bp: BuildPlan
    fingerprint: str
    layout: Layout
    spans: list[tuple[int, int]]


def _setup(config: BuildConfig, stages: Stages) -> _Setup:
    """Plan the build and check it against the state the first shard wrote."""
    out = store_path(config.output.path)
    with stages.stage("plan"):
        bp = plan_build(config)
    fingerprint = bp.fingerprint()
    layout = Layout(config.output.codec, config.output.level, config.output.chips_per_shard)
    spans = list(iter_batches(len(bp.plan), config.engine.batch_size, layout.chips_per_shard))
    return _Setup(out, bp, fingerprint, layout, spans)


def _check_state(out: Path | ObjectPath, config: BuildConfig, fingerprint: str | None) -> bool:
    """Whether ``out`` holds the state of this build (raise when it holds another's)."""
    path = state_dir(out) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    differ = diff_fields(saved.get("config", {}), config.dataset_fields())
    if differ:
        raise StoreError(
            f"{out} holds an unfinished build of another config; fields that differ: "
            f"{', '.join(differ)}. Run every shard with the same config, or choose another "
            "output path"
        )
    if fingerprint is not None and saved.get("plan") != fingerprint:
        raise StoreError(
            f"{out}: the chips planned now differ from those of the unfinished build (the "
            "sources changed since its first shard started); every shard must plan the same "
            "chips: remove the output and run the shards again"
        )
    return True


def _complete(out: Path | ObjectPath, config: BuildConfig) -> bool:
    """Whether ``out`` holds the finished dataset of this config (raise for another)."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return False
    differ = diff_fields(
        json.loads(manifest.read_text()).get("config", {}), config.dataset_fields()
    )
    if differ:
        raise StoreError(
            f"{out} holds a chip dataset built from another config; fields that differ: "
            f"{', '.join(differ)}. Remove it (shards never overwrite), or choose another "
            "output path"
        )
    return True


def ensure_arrays(writer: StoreWriter, spec: dict[str, Any]) -> None:
    """Write the group's and the arrays' metadata unless it is there already, the same bytes
    whichever shard writes them (:func:`~geochip.store.writer.array_metadata`, each
    ``zarr.json`` written atomically): shards that start at once do not conflict, and none
    deletes chunks another wrote. Metadata of other arrays is refused."""
    objects = array_metadata(**spec)
    for key in sorted(objects, key=lambda k: k.count("/")):
        data = objects[key]
        dest = writer.zarr_path / key
        with contextlib.suppress(FileNotFoundError):
            if dest.read_bytes() == data:
                continue
            raise StoreError(
                f"{dest} describes other arrays than this build's; every shard must run "
                "the same config: remove the output and run the shards again"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, data)


def _recorded(setup: _Setup) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """Every batch's record (of this plan), and the batches without one."""
    records: dict[int, dict[str, Any]] = {}
    missing = []
    for b, span in enumerate(setup.spans):
        rec = read_record(setup.out, b, span, setup.fingerprint)
        if rec is None:
            missing.append(b)
        else:
            records[b] = rec
    return records, missing


def _runs(batches: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    parts: list[str] = []
    for b in batches:
        if parts and b == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{b}"
        else:
            parts.append(str(b))
    return ", ".join(parts)


def _missing_message(out: Path | ObjectPath, missing: list[int], total: int) -> str:
    count = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        count = int(json.loads((state_dir(out) / SHARDS_FILE).read_text())["count"])
    text = f"{out}: {len(missing)} of {total} batches have no record yet (batches {_runs(missing)})"
    if count:
        shards = sorted(
            {i for i in range(count) for b in missing if b in Shard(i, count).batches(total)}
        )
        text += f"; shards not finished: {', '.join(f'{i}/{count}' for i in shards)}"
    return text + ". Run those shards (again: they resume), then --finalize"


def _finish(
    setup: _Setup, config: BuildConfig, records: dict[int, dict[str, Any]], stages: Stages,
    t0: float, band_stats: bool,
) -> BuildResult:  # fmt: skip
    with stages.stage("index + manifest"):
        try:
            manifest, failed = finish_build(
                setup.out, config, setup.bp, setup.spans, records, band_stats=band_stats
            )
        except (OSError, ValueError):
            # another finalizer (an explicit --finalize) finished first and removed the state
            if _complete(setup.out, config):
                return up_to_date(setup.out, time.perf_counter() - t0)
            raise
    return BuildResult(
        setup.out,
        manifest["counts"],
        manifest["split"],
        len(setup.spans),
        len(setup.spans),
        "none",
        None,
        time.perf_counter() - t0,
        failed=failed,
        timings=dict(stages.timings),
    )


def _claim(path: Path | ObjectPath) -> bool:
    """Create ``path`` exclusively (an object: with a conditional write): True for the one
    process that does (False too when its folder is gone: another shard finished the build
    and removed the state)."""
    try:
        if isinstance(path, ObjectPath):
            path.create(b"")
            return True
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except (FileExistsError, FileNotFoundError):
        return False
    os.close(fd)
    return True


def build_shard(
    config: BuildConfig,
    shard: Shard,
    *,
    finalize: bool = True,
    progress: bool = True,
    console: Any = None,
    band_stats: bool = True,
) -> ShardResult:
    """Run shard ``shard`` of the build ``config`` describes: its batches (those an earlier
    run of it finished are verified and skipped) and their records; then, with
    ``finalize`` and every batch of every shard recorded, the index and the manifest (one
    shard does it: the first to take the finalize lock).
    """
    config = apply_registry(config)
    if config.engine.scheduler is not None:
        raise InputError(
            f"--shard runs one array job on its own machine; it cannot use the Dask scheduler "
            f"{config.engine.scheduler!r} too: give --shard or --scheduler, not both (for one "
            "build on a Dask cluster, drop --shard)"
        )
    t0 = time.perf_counter()
    out = store_path(config.output.path)
    if isinstance(out, ObjectPath):
        check_writable(out)
    stages = Stages(enabled=progress, console=console)
    if _complete(out, config):
        done = up_to_date(out, time.perf_counter() - t0)
        return ShardResult(shard, range(0), 0, [], done.seconds, finalized=done)
    if not _check_state(out, config, None):  # refuse another config before planning
        # a fresh build: nothing there but what another shard is starting (.geochip/ first)
        others = [p.name for p in out.iterdir() if p.name != STATE_DIR] if out.exists() else []
        if others:
            raise StoreError(
                f"{out} exists and is not a geochip store (it holds {sorted(others)[:5]}); "
                "choose another output path"
            )
    setup = _setup(config, stages)
    fresh = not _check_state(out, config, setup.fingerprint)
    if fresh:
        # the same bytes from every shard, as a single build writes them
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            state_dir(out) / "config.json",
            json.dumps(
                {"config": config.dataset_fields(), "plan": setup.fingerprint},
                sort_keys=True,
                indent=1,
            ).encode(),
        )
    atomic_write_bytes(state_dir(out) / SHARDS_FILE, json.dumps({"count": shard.count}).encode())
    writer = StoreWriter(out)
    ensure_arrays(writer, array_spec(setup.bp, config, setup.layout))
    mine = shard.batches(len(setup.spans))
    with stages.stage("verify", total=len(mine)) as advance:
        records = verified_records(out, writer, setup.spans, setup.fingerprint, mine, advance)
    skipped = len(records)
    todo = set(mine) - set(records)
    engine = "none"
    if todo:
        bp = setup.bp
        with_mask = config.labels is not None or config.masks is not None
        tasks = batch_tasks(
            out, bp, config, setup.fingerprint, bp.dtype, bp.nodata, with_mask,
            setup.layout.chips_per_shard, todo, band_stats, writer.metadata(),
        )  # fmt: skip
        engine, _ = run_batches(config, tasks, records, setup.spans, stages, console=console)
    result = ShardResult(shard, mine, skipped, [], 0.0, engine)
    chip_ids = setup.bp.plan["chip_id"]
    result.failed = [
        {"chip_id": str(chip_ids.iloc[records[b]["start"] + k]), "error": c["error"]}
        for b in mine
        for k, c in enumerate(records[b]["chips"])
        if c is not None and c["status"] == "failed"
    ]
    if not mine:
        result.note = f"shard {shard} has no batch: the build has only {len(setup.spans)}"
    records, result.missing = _recorded(setup)
    if finalize and not result.missing:
        lock = state_dir(out) / FINALIZE_LOCK
        if _claim(lock):
            try:
                result.finalized = _finish(setup, config, records, stages, t0, band_stats)
                result.failed = result.finalized.failed
            finally:
                lock.unlink(missing_ok=True)
        elif _complete(out, config):
            result.finalized = up_to_date(out, time.perf_counter() - t0)
        else:
            result.note = (
                "another shard is writing the index and manifest (if it was killed, run --finalize)"
            )
    result.seconds = time.perf_counter() - t0
    return result


def finalize_build(
    config: BuildConfig,
    *,
    progress: bool = True,
    console: Any = None,
    band_stats: bool = True,
) -> BuildResult:
    """Write the index and the manifest of a build whose shards all ended (``--finalize``).

    Raises :class:`~geochip.errors.IncompleteBuildError` naming the batches (and the shards)
    without a record. A complete store is up to date.
    """
    config = apply_registry(config)
    t0 = time.perf_counter()
    out = store_path(config.output.path)
    stages = Stages(enabled=progress, console=console)
    if _complete(out, config):
        return up_to_date(out, time.perf_counter() - t0)
    if not _check_state(out, config, None):
        raise StoreError(
            f"--finalize: {out} holds no build to finalize; run the shards first "
            "(geochip build CONFIG --shard i/N for i in 0..N-1)"
        )
    setup = _setup(config, stages)
    _check_state(out, config, setup.fingerprint)
    records, missing = _recorded(setup)
    if missing:
        raise IncompleteBuildError(_missing_message(out, missing, len(setup.spans)))
    return _finish(setup, config, records, stages, t0, band_stats)

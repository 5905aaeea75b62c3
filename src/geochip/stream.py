"""Chips and batches straight from scenes: the streaming path.

Plan first, from headers only: :func:`plan_scenes` cuts every scene into sliding windows
(size and stride or overlap per axis, edge ``drop``/``shift``/``pad``), :func:`plan_random`
draws random windows with a seed, :func:`sample_chips` shuffles or subsamples a plan, and
:func:`filter_nodata` (the one planning step that reads pixels, and says so) drops chips
with too much nodata. A plan is a GeoDataFrame (:mod:`geochip.plan`'s columns plus the
scene it came from), so ``len()`` is known before a pixel is read and it can be saved and
reloaded with :func:`geochip.plan.save_plan` / :func:`~geochip.plan.load_plan`.

Then read: :class:`ChipStream` yields :class:`Chip` (numpy + GeoBox, or an
``xarray.DataArray`` with :meth:`Chip.to_dataarray`) and :meth:`ChipStream.batch` yields
:class:`Batch` (one preallocated ``(N, C, H, W)`` array in the source dtype, filled in
place), across scene boundaries. Pixels equal a plain rasterio read of the same window of
the same overview. Reads run ahead on a small thread pool (GDAL decodes outside the GIL);
when chips overlap, every internal tile of the COG is decoded once and shared by the chips
that need it (freed after its last use, within a memory budget); chips that own their tiles
are decoded by GDAL straight into their slot of the batch.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.scenes import open_scene
    >>> from geochip.testing import make_cog
    >>> gbox = GeoBox.from_bbox((500_000, 0, 510_240, 5_120), "EPSG:32633", resolution=10)
    >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "a.tif", gbox, bands=2, tile=256)
    >>> scene = open_scene(path)
    >>> plan = plan_scenes([scene], 256, overlap=128)
    >>> len(plan), plan.chip_id.iloc[1]
    (21, 'a-r0-c128')
    >>> batches = list(ChipStream(plan, [scene]).batch(8))
    >>> [b.image.shape for b in batches]
    [(8, 2, 256, 256), (8, 2, 256, 256), (5, 2, 256, 256)]
    >>> bool((batches[0].image[1] == scene.read(Window(0, 128, 256, 256))).all())
    True
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from .env import GdalEnv, set_block_cache
from .errors import InputError, NoChipsError, RasterReadError
from .grid import Edge, SizeLike, Window, chip_windows, yx
from .scenes import (
    Scene,
    chip_dataarray,
    read_part,
    read_window,
    refresh_handles,
    scene_from_spec,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = [
    "Batch",
    "BatchStream",
    "Chip",
    "ChipStream",
    "Recycler",
    "filter_nodata",
    "plan_random",
    "plan_scenes",
    "sample_chips",
    "scenes_of",
]

log = logging.getLogger(__name__)

Split = Literal["contiguous", "interleaved"]


# --- planning (headers only) ---------------------------------------------------------------


def _stride(
    size: SizeLike, stride: SizeLike | None, overlap: SizeLike | None
) -> dict[str, int] | None:
    size_ = yx(size)
    if stride is not None and overlap is not None:
        raise InputError("give stride or overlap, not both")
    if overlap is None:
        return (
            None if stride is None else {"y": yx(stride, "stride").y, "x": yx(stride, "stride").x}
        )
    if isinstance(overlap, int) and not isinstance(overlap, bool):
        oy = ox = overlap
    elif isinstance(overlap, Mapping):
        if set(overlap) - {"y", "x"}:
            raise InputError(f"overlap must have the keys 'y' and 'x', got {sorted(overlap)}")
        oy, ox = int(overlap.get("y", 0)), int(overlap.get("x", 0))
    else:
        raise InputError(f"overlap must be an int or {{'y': int, 'x': int}}, got {overlap!r}")
    if not (0 <= oy < size_.y and 0 <= ox < size_.x):
        raise InputError(
            f"overlap (y={oy}, x={ox}) must be >= 0 and smaller than size "
            f"(y={size_.y}, x={size_.x})"
        )
    return {"y": size_.y - oy, "x": size_.x - ox}


def _scene_frame(scene: Scene, windows: list[Window]) -> gpd.GeoDataFrame:
    from .plan import plan_chips

    size = {"y": windows[0].height, "x": windows[0].width}
    frame = plan_chips(scene.geobox, size, grid_id=scene.id, windows=windows)
    frame["scene"] = scene.to_spec()
    return frame


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


def plan_scenes(
    scenes: Sequence[Scene],
    size: SizeLike,
    *,
    stride: SizeLike | None = None,
    overlap: SizeLike | None = None,
    edge: Edge | str = "drop",
    max_nodata: float | None = None,
    env: GdalEnv | None = None,
) -> gpd.GeoDataFrame:
    """Plan sliding-window chips over every scene, in scene order then row-major.

    ``size``, ``stride`` and ``overlap`` are an int or ``{"y": .., "x": ..}`` (give stride
    or overlap; the default stride is the size). ``edge``: ``"drop"`` keeps only windows
    that fit (zen3geo/xbatcher), ``"shift"`` moves the last window inward to cover the
    edge, ``"pad"`` lets it reach past the edge (filled with nodata). No pixel is read,
    unless ``max_nodata`` is given: then :func:`filter_nodata` reads every chip.
    A scene that no chip fits raises :class:`~geochip.errors.NoChipsError` naming it.
    """
    if not scenes:
        raise InputError("plan_scenes needs at least one scene")
    stride_ = _stride(size, stride, overlap)
    frames = []
    for scene in scenes:
        if not isinstance(scene, Scene):
            raise InputError(f"plan_scenes takes Scenes (see open_scenes), got {scene!r}")
        _, height, width = scene.shape
        windows = chip_windows((height, width), size, stride_, edge, source=scene.label)
        frames.append(_scene_frame(scene, windows))
    plan = _concat(frames)
    if max_nodata is not None:
        plan = filter_nodata(plan, max_nodata, scenes=scenes, env=env)
    return plan


def plan_random(
    scenes: Sequence[Scene],
    size: SizeLike,
    count: int,
    *,
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """``count`` distinct random windows of ``size`` lying wholly inside the scenes.

    Every valid top-left pixel of every scene is equally likely (so larger scenes give
    more chips); the same ``seed`` gives the same plan. Rows are in draw order.
    """
    size_ = yx(size)
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    spans = []
    for scene in scenes:
        _, height, width = scene.shape
        ny, nx = height - size_.y + 1, width - size_.x + 1
        spans.append((max(ny, 0), max(nx, 0)))
    totals = np.array([ny * nx for ny, nx in spans], dtype=np.int64)
    if totals.sum() == 0:
        raise NoChipsError(
            f"no {size_.y}x{size_.x} chip fits in {', '.join(s.label for s in scenes)}; "
            "use a smaller size"
        )
    if count > totals.sum():
        raise InputError(f"count={count} exceeds the {int(totals.sum())} distinct windows")
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(totals.sum()), size=count, replace=False)
    starts = np.concatenate([[0], np.cumsum(totals)])
    which = np.searchsorted(starts, flat, side="right") - 1
    frames = []
    order = []
    for s, scene in enumerate(scenes):
        picked = np.nonzero(which == s)[0]
        if len(picked) == 0:
            continue
        local = flat[picked] - starts[s]
        rows, cols = np.divmod(local, spans[s][1])
        windows = [
            Window(int(r), int(c), size_.y, size_.x) for r, c in zip(rows, cols, strict=True)
        ]
        frames.append(_scene_frame(scene, windows))
        order.append(picked)
    plan = _concat(frames)
    return plan.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)


def sample_chips(
    plan: gpd.GeoDataFrame, n: int | None = None, *, seed: int = 0
) -> gpd.GeoDataFrame:
    """A seeded random permutation of the plan's chips (the first ``n`` of it when given)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(plan))
    if n is not None:
        if not 0 < n <= len(plan):
            raise InputError(f"n must be between 1 and {len(plan)}, got {n}")
        order = order[:n]
    return plan.iloc[order].reset_index(drop=True)


def scenes_of(
    plan: gpd.GeoDataFrame,
    scenes: Sequence[Scene] | Mapping[str, Scene] | None = None,
    env: GdalEnv | None = None,
) -> dict[str, Scene]:
    """The scenes a plan's chips come from, by id: those given, or reopened (headers only)
    from the plan's ``scene`` column."""
    given: dict[str, Scene] = {}
    if isinstance(scenes, Mapping):
        given = dict(scenes)
    elif scenes is not None:
        given = {s.id: s for s in scenes}
    out: dict[str, Scene] = {}
    for grid_id in dict.fromkeys(plan["grid_id"]):
        if grid_id in given:
            out[grid_id] = given[grid_id]
            continue
        if "scene" not in plan.columns:
            raise InputError(
                f"the plan has chips of grid {grid_id!r} and no 'scene' column; pass scenes="
            )
        spec = plan.loc[plan["grid_id"] == grid_id, "scene"].iloc[0]
        out[grid_id] = scene_from_spec(spec, env)
    return out


def filter_nodata(
    plan: gpd.GeoDataFrame,
    max_fraction: float,
    *,
    scenes: Sequence[Scene] | Mapping[str, Scene] | None = None,
    env: GdalEnv | None = None,
    threads: int | None = None,
) -> gpd.GeoDataFrame:
    """Keep the chips whose share of nodata pixels is at most ``max_fraction``.

    **This reads the pixels of every chip** (unlike the rest of planning). A pixel is
    nodata when any band holds the scene's nodata value (or NaN). Adds the column
    ``nodata_fraction``. A scene without a nodata value raises (give ``nodata=`` when
    opening it).
    """
    if not 0 <= max_fraction <= 1:
        raise InputError(f"max_fraction must be between 0 and 1, got {max_fraction}")
    by_id = scenes_of(plan, scenes, env)
    for scene in by_id.values():
        if scene.nodata is None:
            raise InputError(
                f"{scene.label} has no nodata value, so its nodata fraction is unknown; "
                "open it with nodata=<value>"
            )
    log.warning("filter_nodata reads the pixels of %d chips to measure their nodata", len(plan))
    fractions = np.empty(len(plan), dtype=np.float64)
    stream = ChipStream(plan, by_id, env=env, threads=threads)
    for chip in stream:
        scene = by_id[chip.scene_id]
        nodata = scene.nodata
        image = chip.image
        if nodata is not None and isinstance(nodata, float) and math.isnan(nodata):
            bad = np.isnan(image)
        else:
            bad = image == nodata
        fractions[chip.index] = float(bad.any(axis=0).mean())
    plan = plan.copy()
    plan["nodata_fraction"] = fractions
    return plan[plan["nodata_fraction"] <= max_fraction].reset_index(drop=True)


# --- what comes out ------------------------------------------------------------------------


@dataclass(frozen=True)
class Chip:
    """One chip: pixels (band, y, x) in the source dtype, and where they come from.

    ``index`` is the chip's row in the plan; ``row``/``col`` its offset in the scene's grid.
    """

    image: npt.NDArray[Any]
    scene: Scene
    row: int
    col: int
    chip_id: str
    index: int

    @property
    def scene_id(self) -> str:
        """The id of the scene (the plan's ``grid_id``)."""
        return self.scene.id

    @property
    def geobox(self) -> GeoBox:
        """The chip's grid: the scene's grid shifted by the window offset."""
        from affine import Affine
        from odc.geo.geobox import GeoBox

        height, width = self.image.shape[-2:]
        affine = self.scene.geobox.affine * Affine.translation(self.col, self.row)
        return GeoBox((height, width), affine, self.scene.geobox.crs)

    def to_dataarray(self) -> xr.DataArray:
        """The chip as an ``xarray.DataArray`` (band, y, x) with coordinates and CRS."""
        return chip_dataarray(self.scene, self.image, self.row, self.col)


@dataclass
class Batch:
    """Chips of one batch: ``image`` is one (N, C, H, W) array in the source dtype.

    ``buffer`` is the object that owns ``image``'s memory when it was allocated elsewhere
    (a shared-memory tensor in a DataLoader worker).
    """

    image: npt.NDArray[Any]
    chip_ids: list[str]
    scene_ids: list[str]
    indexes: npt.NDArray[np.int64]
    crs: list[str]
    bounds: npt.NDArray[np.float64]
    transforms: list[list[float]]
    buffer: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.chip_ids)

    @property
    def geoboxes(self) -> list[GeoBox]:
        """Each chip's grid."""
        from affine import Affine
        from odc.geo.geobox import GeoBox

        height, width = self.image.shape[-2:]
        return [
            GeoBox((height, width), Affine(*t[:6]), c)
            for t, c in zip(self.transforms, self.crs, strict=True)
        ]


# --- the plan as arrays, and the work of one reader ----------------------------------------


@dataclass(frozen=True)
class _Jobs:
    scenes: tuple[Scene, ...]
    scene: npt.NDArray[np.int32]
    row: npt.NDArray[np.int64]
    col: npt.NDArray[np.int64]
    height: npt.NDArray[np.int64]
    width: npt.NDArray[np.int64]
    index: npt.NDArray[np.int64]
    chip_id: tuple[str, ...]
    crs: tuple[str, ...]
    bounds: npt.NDArray[np.float64]
    transform: tuple[tuple[float, ...], ...]

    def __len__(self) -> int:
        return len(self.row)

    def take(self, positions: npt.NDArray[np.int64]) -> _Jobs:
        return _Jobs(
            self.scenes,
            self.scene[positions],
            self.row[positions],
            self.col[positions],
            self.height[positions],
            self.width[positions],
            self.index[positions],
            tuple(self.chip_id[i] for i in positions),
            tuple(self.crs[i] for i in positions),
            self.bounds[positions],
            tuple(self.transform[i] for i in positions),
        )

    @classmethod
    def from_plan(cls, plan: gpd.GeoDataFrame, scenes: Mapping[str, Scene]) -> _Jobs:
        ids = list(dict.fromkeys(plan["grid_id"]))
        position = {g: i for i, g in enumerate(ids)}
        return cls(
            scenes=tuple(scenes[g] for g in ids),
            scene=np.array([position[g] for g in plan["grid_id"]], dtype=np.int32),
            row=plan["row"].to_numpy(dtype=np.int64),
            col=plan["col"].to_numpy(dtype=np.int64),
            height=plan["height"].to_numpy(dtype=np.int64),
            width=plan["width"].to_numpy(dtype=np.int64),
            index=np.arange(len(plan), dtype=np.int64),
            chip_id=tuple(plan["chip_id"]),
            crs=tuple(plan["crs"]),
            bounds=plan[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64),
            transform=tuple(tuple(float(v) for v in t) for t in plan["transform"]),
        )


Key = tuple[int, int, int, int]  # scene, part, tile row, tile col


def _unit(scene: Scene, part: int) -> tuple[int, int]:
    """The cache unit of a part: whole internal tiles, at least ~256 px a side."""
    block = scene.parts[part].block
    _, height, width = scene.shape
    uh = min(block.y * max(1, math.ceil(256 / block.y)), max(height, 1))
    uw = min(block.x * max(1, math.ceil(256 / block.x)), max(width, 1))
    return uh, uw


@dataclass
class _Schedule:
    keys: list[list[Key]]
    direct: list[bool]
    uses: dict[Key, int]
    units: dict[tuple[int, int], tuple[int, int]]


def _schedule(jobs: _Jobs) -> _Schedule:
    units: dict[tuple[int, int], tuple[int, int]] = {}
    for s, scene in enumerate(jobs.scenes):
        for p in range(len(scene.parts)):
            units[(s, p)] = _unit(scene, p)
    keys: list[list[Key]] = []
    uses: dict[Key, int] = {}
    for j in range(len(jobs)):
        s = int(jobs.scene[j])
        scene = jobs.scenes[s]
        _, height, width = scene.shape
        r0, c0 = max(int(jobs.row[j]), 0), max(int(jobs.col[j]), 0)
        r1 = min(int(jobs.row[j] + jobs.height[j]), height)
        c1 = min(int(jobs.col[j] + jobs.width[j]), width)
        mine: list[Key] = []
        if r1 > r0 and c1 > c0:
            for p in range(len(scene.parts)):
                uh, uw = units[(s, p)]
                for ty in range(r0 // uh, (r1 - 1) // uh + 1):
                    for tx in range(c0 // uw, (c1 - 1) // uw + 1):
                        key = (s, p, ty, tx)
                        mine.append(key)
                        uses[key] = uses.get(key, 0) + 1
        keys.append(mine)
    direct = [all(uses[k] == 1 for k in mine) for mine in keys]
    return _Schedule(keys, direct, uses, units)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _reader_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` reader threads, made on first use and kept.

    Kept, not made per stream: a thread that ends runs GDAL's and PROJ's thread-local
    destructors (closing PROJ's SQLite database) after ``join()`` has returned, so a
    DataLoader forking its workers right after a stream ended could copy a SQLite mutex
    held by the dying thread, and the worker then hung in its first ``rasterio.open``.
    Idle threads hold no lock. Streams of one process share the pool.
    """
    key = (os.getpid(), threads)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix=f"geochip-read-{threads}"
            )
            _POOLS[key] = pool
        return pool


def _forget_pools_after_fork() -> None:
    global _POOLS_LOCK  # noqa: PLW0603 - a fresh lock in the child
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 2
    return max(1, min(4, cpus))


class _Engine:
    """Reads the jobs in order into destinations given by ``dest_for``; yields positions.

    Chips that own their tiles are read by GDAL straight into their destination; tiles
    shared by several chips are decoded once, kept until their last use (within
    ``cache_bytes``), and copied into each chip. With ``threads`` > 0, reads run ahead on
    a pool; the consuming thread copies tiles and hands out results in order.
    """

    def __init__(
        self,
        jobs: _Jobs,
        *,
        threads: int,
        cache_bytes: int,
        env: GdalEnv,
        ahead_bytes: int = 32 << 20,
    ) -> None:
        self.jobs = jobs
        self.threads = threads
        self.cache_bytes = cache_bytes
        self.ahead_bytes = ahead_bytes
        self.env = env

    def _tile_window(self, key: Key) -> tuple[int, int, int, int]:
        s, p, ty, tx = key
        scene = self.jobs.scenes[s]
        _, height, width = scene.shape
        uh, uw = self.schedule.units[(s, p)]
        r0, c0 = ty * uh, tx * uw
        return r0, c0, min(uh, height - r0), min(uw, width - c0)

    def _tile_nbytes(self, key: Key) -> int:
        s, p, _, _ = key
        scene = self.jobs.scenes[s]
        _, _, h, w = self._tile_window(key)
        return len(scene.parts[p].bands) * h * w * np.dtype(scene.dtype).itemsize

    def _decode_task(self, key: Key) -> npt.NDArray[Any]:
        self.env.ensure_thread()
        return self._decode(key)

    def _direct_task(self, j: int, dest: npt.NDArray[Any]) -> None:
        self.env.ensure_thread()
        self._direct(j, dest)

    def _decode(self, key: Key) -> npt.NDArray[Any]:
        s, p, _, _ = key
        r0, c0, h, w = self._tile_window(key)
        return read_part(self.jobs.scenes[s], p, r0, c0, h, w, None, self.env)

    def _direct(self, j: int, dest: npt.NDArray[Any]) -> None:
        jobs = self.jobs
        win = Window(int(jobs.row[j]), int(jobs.col[j]), int(jobs.height[j]), int(jobs.width[j]))
        read_window(jobs.scenes[int(jobs.scene[j])], win, dest, self.env)

    def _assemble(self, j: int, dest: npt.NDArray[Any], tiles: Mapping[Key, Any]) -> None:
        jobs = self.jobs
        scene = jobs.scenes[int(jobs.scene[j])]
        row, col = int(jobs.row[j]), int(jobs.col[j])
        height, width = int(jobs.height[j]), int(jobs.width[j])
        _, gh, gw = scene.shape
        if row < 0 or col < 0 or row + height > gh or col + width > gw:
            dest.fill(scene.nodata if scene.nodata is not None else 0)
        offsets = np.cumsum([0] + [len(p.bands) for p in scene.parts])
        for key in self.schedule.keys[j]:
            _, p, _, _ = key
            tile = tiles[key]
            t0, u0, th, tw = self._tile_window(key)
            r0, r1 = max(row, t0), min(row + height, t0 + th)
            c0, c1 = max(col, u0), min(col + width, u0 + tw)
            dest[offsets[p] : offsets[p + 1], r0 - row : r1 - row, c0 - col : c1 - col] = tile[
                :, r0 - t0 : r1 - t0, c0 - u0 : c1 - u0
            ]

    def run(self, dest_for: Callable[[int], npt.NDArray[Any]]) -> Iterator[int]:
        """Fill ``dest_for(j)`` for every job j in order; yield j once it is filled."""
        self.schedule = _schedule(self.jobs)
        if self.env.block_cache_mb:
            set_block_cache(self.env.block_cache_mb)
        refresh_handles()
        if self.threads <= 0:
            yield from self._run_serial(dest_for)
        else:
            yield from self._run_pool(_reader_pool(self.threads), dest_for)

    def _run_serial(self, dest_for: Callable[[int], npt.NDArray[Any]]) -> Iterator[int]:
        sched = self.schedule
        remaining = dict(sched.uses)
        cache: dict[Key, npt.NDArray[Any]] = {}
        held = 0
        for j in range(len(self.jobs)):
            dest = dest_for(j)
            try:
                if sched.direct[j]:
                    self._direct(j, dest)
                else:
                    tiles: dict[Key, Any] = {}
                    for key in sched.keys[j]:
                        tile = cache.get(key)
                        if tile is None:
                            tile = self._decode(key)
                            if remaining[key] > 1 and held + tile.nbytes <= self.cache_bytes:
                                cache[key] = tile
                                held += tile.nbytes
                        tiles[key] = tile
                    self._assemble(j, dest, tiles)
            except RasterReadError as err:
                raise RasterReadError(f"chip {self.jobs.chip_id[j]}: {err}") from err
            for key in sched.keys[j]:
                remaining[key] -= 1
                if remaining[key] == 0 and key in cache:
                    held -= cache.pop(key).nbytes
            yield j

    def _run_pool(
        self, pool: ThreadPoolExecutor, dest_for: Callable[[int], npt.NDArray[Any]]
    ) -> Iterator[int]:
        sched = self.schedule
        n = len(self.jobs)
        remaining = dict(sched.uses)
        tiles: dict[Key, Future[npt.NDArray[Any]] | npt.NDArray[Any]] = {}
        direct: dict[int, Future[None]] = {}
        inflight: set[Future[Any]] = set()
        held = 0  # bytes of the tiles in ``tiles`` (decoded or decoding)
        # Tiles decoded for chips after the current one, in submission order: the
        # read-ahead proper, bounded apart from the tiles kept for reuse (a deep
        # read-ahead buys no speed once both threads are busy, only memory).
        ahead: deque[tuple[int, int]] = deque()
        ahead_bytes = 0
        max_pending = 2 * self.threads + 1
        ahead_direct = 2 * self.threads + 2
        submit = 0

        def fill(i: int) -> None:
            nonlocal submit, held, ahead_bytes
            while ahead and ahead[0][0] <= i:
                ahead_bytes -= ahead.popleft()[1]
            for f in [f for f in inflight if f.done()]:
                inflight.discard(f)
            while submit < n and len(inflight) < max_pending:
                j = submit
                if sched.direct[j]:
                    if j >= i + ahead_direct:
                        return
                    future = pool.submit(self._direct_task, j, dest_for(j))
                    direct[j] = future
                    inflight.add(future)
                else:
                    for key in sched.keys[j]:
                        if key in tiles:
                            continue
                        size = self._tile_nbytes(key)
                        if j > i and (
                            held + size > self.cache_bytes or ahead_bytes + size > self.ahead_bytes
                        ):
                            return
                        if len(inflight) >= max_pending:
                            return
                        tile_future = pool.submit(self._decode_task, key)
                        tiles[key] = tile_future
                        inflight.add(tile_future)
                        held += size
                        if j > i:
                            ahead.append((j, size))
                            ahead_bytes += size
                submit += 1

        try:
            for i in range(n):
                fill(i)
                try:
                    if sched.direct[i]:
                        if i in direct:
                            direct.pop(i).result()
                        else:
                            self._direct(i, dest_for(i))
                    else:
                        ready: dict[Key, Any] = {}
                        for key in sched.keys[i]:
                            entry = tiles.get(key)
                            if entry is None:
                                entry = self._decode(key)
                                size = self._tile_nbytes(key)
                                if remaining[key] > 1 and held + size <= self.cache_bytes:
                                    tiles[key] = entry
                                    held += size
                            elif isinstance(entry, Future):
                                entry = entry.result()
                                tiles[key] = entry
                            ready[key] = entry
                        self._assemble(i, dest_for(i), ready)
                except RasterReadError as err:
                    raise RasterReadError(f"chip {self.jobs.chip_id[i]}: {err}") from err
                for key in sched.keys[i]:
                    remaining[key] -= 1
                    if remaining[key] == 0 and key in tiles:
                        del tiles[key]
                        held -= self._tile_nbytes(key)
                yield i
        finally:
            # nothing may write into a destination once the caller has moved on (the
            # generator closed early, or an error): cancel what has not started, wait
            # for what has
            pending: list[Future[Any]] = list(direct.values())
            pending += [t for t in tiles.values() if isinstance(t, Future)]
            for future in pending:
                future.cancel()
            wait(pending)


# --- streams -------------------------------------------------------------------------------


def _shard_positions(
    n: int, worker: int, num_workers: int, unit: int, split: Split
) -> npt.NDArray[np.int64]:
    if not 0 <= worker < num_workers:
        raise InputError(f"worker must be in 0..{num_workers - 1}, got {worker}")
    if split not in ("contiguous", "interleaved"):
        raise InputError(f"split must be 'contiguous' or 'interleaved', got {split!r}")
    units = math.ceil(n / unit) if n else 0
    if split == "contiguous":
        chosen = np.arange(units * worker // num_workers, units * (worker + 1) // num_workers)
    else:
        chosen = np.arange(worker, units, num_workers)
    if len(chosen) == 0:
        return np.zeros(0, dtype=np.int64)
    pieces = [np.arange(int(s), min(int(s) + unit, n), dtype=np.int64) for s in chosen * unit]
    return np.concatenate(pieces).astype(np.int64)


class ChipStream:
    """Chips of a plan, read from their scenes in plan order (see the module docstring).

    ``scenes`` are the opened scenes (by id); missing ones are reopened from the plan.
    ``threads`` read ahead (0 = read in the calling thread, no read-ahead; default: up to
    4, one per CPU). ``cache_mb`` bounds the decoded tiles kept for overlapping chips.
    Iterating twice reads twice; the stream holds no open file or thread between
    iterations, so it pickles into DataLoader workers.
    """

    def __init__(
        self,
        plan: gpd.GeoDataFrame,
        scenes: Sequence[Scene] | Mapping[str, Scene] | None = None,
        *,
        threads: int | None = None,
        read_ahead: bool = True,
        cache_mb: int = 256,
        env: GdalEnv | None = None,
    ) -> None:
        if len(plan) == 0:
            raise InputError("the plan has no chips")
        self.env = env or GdalEnv.default()
        self.scenes = scenes_of(plan, scenes, self.env)
        self._jobs = _Jobs.from_plan(plan, self.scenes)
        self.threads = _default_threads() if threads is None else int(threads)
        self.read_ahead = read_ahead
        self.cache_mb = cache_mb

    @classmethod
    def _from_jobs(cls, jobs: _Jobs, like: ChipStream) -> ChipStream:
        new = cls.__new__(cls)
        new.env = like.env
        new.scenes = like.scenes
        new._jobs = jobs
        new.threads = like.threads
        new.read_ahead = like.read_ahead
        new.cache_mb = like.cache_mb
        return new

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return (
            f"ChipStream({len(self)} chips from {len(self._jobs.scenes)} scenes, "
            f"threads={self.threads if self.read_ahead else 0})"
        )

    def head(self, n: int) -> ChipStream:
        """The first ``n`` chips of the stream."""
        if n >= len(self):
            return self
        return ChipStream._from_jobs(self._jobs.take(np.arange(max(n, 0), dtype=np.int64)), self)

    def with_threads(self, threads: int) -> ChipStream:
        """The same stream read with another number of threads."""
        new = ChipStream._from_jobs(self._jobs, self)
        new.threads = threads
        return new

    def shard(
        self, worker: int, num_workers: int, *, unit: int = 1, split: Split = "contiguous"
    ) -> ChipStream:
        """The part of the stream that worker ``worker`` of ``num_workers`` reads.

        The stream is cut into blocks of ``unit`` chips (use the batch size, so batches are
        the same with any number of workers); ``"contiguous"`` gives each worker one run of
        blocks (neighbouring chips share tiles, so each tile is decoded by one worker),
        ``"interleaved"`` deals blocks round-robin (a DataLoader then yields them in plan
        order). Every chip belongs to exactly one worker.
        """
        positions = _shard_positions(len(self), worker, num_workers, unit, split)
        return ChipStream._from_jobs(self._jobs.take(positions), self)

    def _engine(self) -> _Engine:
        threads = self.threads if self.read_ahead else 0
        return _Engine(self._jobs, threads=threads, cache_bytes=self.cache_mb << 20, env=self.env)

    def _chip(self, j: int, image: npt.NDArray[Any]) -> Chip:
        jobs = self._jobs
        return Chip(
            image=image,
            scene=jobs.scenes[int(jobs.scene[j])],
            row=int(jobs.row[j]),
            col=int(jobs.col[j]),
            chip_id=jobs.chip_id[j],
            index=int(jobs.index[j]),
        )

    def __iter__(self) -> Iterator[Chip]:
        jobs = self._jobs
        dests: dict[int, npt.NDArray[Any]] = {}

        def dest_for(j: int) -> npt.NDArray[Any]:
            if j not in dests:
                scene = jobs.scenes[int(jobs.scene[j])]
                dests[j] = np.empty(
                    (scene.count, int(jobs.height[j]), int(jobs.width[j])), dtype=scene.dtype
                )
            return dests[j]

        for j in self._engine().run(dest_for):
            yield self._chip(j, dests.pop(j))

    def dataarrays(self) -> Iterator[xr.DataArray]:
        """The chips as ``xarray.DataArray`` (band, y, x) with coordinates and CRS."""
        for chip in self:
            yield chip.to_dataarray()

    def chunks(self, size: int, *, drop_last: bool = False) -> Iterator[list[Chip]]:
        """Lists of ``size`` consecutive chips (the last may be shorter unless
        ``drop_last``), across scene boundaries, for custom collate functions."""
        if size < 1:
            raise InputError(f"batch size must be at least 1, got {size}")
        group: list[Chip] = []
        for chip in self:
            group.append(chip)
            if len(group) == size:
                yield group
                group = []
        if group and not drop_last:
            yield group

    def batch(self, batch_size: int, *, drop_last: bool = False) -> BatchStream:
        """Batches of ``batch_size`` chips, each one preallocated (N, C, H, W) array."""
        return BatchStream(self, batch_size, drop_last=drop_last)


Alloc = Callable[[tuple[int, ...], np.dtype[Any]], tuple[npt.NDArray[Any], Any]]


def _unreferenced_count() -> int | None:
    """What ``sys.getrefcount(items[k])`` says of an object that only the list ``items``
    holds, or None where reference counts cannot tell (free-threaded Python)."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():  # pragma: no cover - 3.13t
        return None
    items = [object()]
    return sys.getrefcount(items[0])


_UNREFERENCED = _unreferenced_count()


class Recycler:
    """Allocates batch arrays, and hands an array out again once nothing else holds it.

    Writing into memory that was written before saves the page faults (and the kernel's
    zeroing) of a fresh allocation: about a tenth of the CPU when GDAL decodes straight
    into the batches. Whether anything still holds an array is read from its reference
    count: a view of it, a tensor from ``torch.from_numpy``, a ``memoryview`` all hold a
    reference to the array that owns the memory (numpy's own ``ndarray.resize`` relies on
    the same). So a batch's pixels stay yours for as long as you hold ``batch.image`` or
    anything made from it without a copy. At most ``keep`` arrays are kept for reuse.

    >>> alloc = Recycler(keep=2)
    >>> a, _ = alloc((2, 3), np.dtype("uint8"))
    >>> b, _ = alloc((2, 3), np.dtype("uint8"))
    >>> a is b  # ``a`` is still held, so ``b`` is new memory
    False
    >>> pointer = a.ctypes.data
    >>> del a
    >>> c, _ = alloc((1, 3), np.dtype("uint8"))  # a shorter batch: a view of a free one
    >>> c.ctypes.data == pointer
    True
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.arrays: list[npt.NDArray[Any]] = []

    def __call__(
        self, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> tuple[npt.NDArray[Any], Any]:
        """A (count, ...) array: a free one of this shape (or a leading part of one), or a
        new one."""
        if _UNREFERENCED is not None:
            for k in range(len(self.arrays)):
                if sys.getrefcount(self.arrays[k]) != _UNREFERENCED:
                    continue
                array = self.arrays[k]
                if (
                    array.dtype == dtype
                    and array.shape[1:] == shape[1:]
                    and array.shape[0] >= shape[0]
                ):
                    return (array if array.shape[0] == shape[0] else array[: shape[0]]), None
        array = np.empty(shape, dtype=dtype)
        if _UNREFERENCED is not None:
            if len(self.arrays) < self.keep:
                self.arrays.append(array)
            else:  # replace a free array of another shape, if any
                for k in range(len(self.arrays)):
                    if sys.getrefcount(self.arrays[k]) == _UNREFERENCED:
                        self.arrays[k] = array
                        break
        return array, None


class BatchStream:
    """Batches of a :class:`ChipStream`: chip ``k`` of a batch is read straight into
    ``image[k]`` of one preallocated (N, C, H, W) array in the source dtype."""

    def __init__(self, chips: ChipStream, batch_size: int, *, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.chips = chips
        self.batch_size = batch_size
        self.drop_last = drop_last
        jobs = chips._jobs
        scenes = jobs.scenes
        counts = {s.count for s in scenes}
        dtypes = {s.dtype for s in scenes}
        sizes = set(zip(jobs.height.tolist(), jobs.width.tolist(), strict=True))
        if len(counts) > 1 or len(dtypes) > 1 or len(sizes) > 1:
            raise InputError(
                f"chips of one batch must share band count, dtype and size; the plan has "
                f"bands {sorted(counts)}, dtypes {sorted(dtypes)}, sizes {sorted(sizes)}"
            )

    def __len__(self) -> int:
        n = len(self.chips)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __repr__(self) -> str:
        return f"BatchStream({len(self)} batches of {self.batch_size} from {self.chips!r})"

    def shard(self, worker: int, num_workers: int, *, split: Split = "contiguous") -> BatchStream:
        """The batches worker ``worker`` of ``num_workers`` reads (see
        :meth:`ChipStream.shard`); batches are the same as with one worker."""
        chips = self.chips.head(len(self) * self.batch_size)
        part = chips.shard(worker, num_workers, unit=self.batch_size, split=split)
        return BatchStream(part, self.batch_size, drop_last=False) if len(part) else _Empty(self)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter(Recycler())

    def iter(self, alloc: Alloc) -> Iterator[Batch]:
        """Iterate, allocating every batch array with ``alloc(shape, dtype)`` ->
        ``(array, owner)`` (e.g. a shared-memory tensor and its numpy view); the default
        is a :class:`Recycler`."""
        jobs = self.chips._jobs
        scene0 = jobs.scenes[0]
        dtype = np.dtype(scene0.dtype)
        shape = (scene0.count, int(jobs.height[0]), int(jobs.width[0]))
        n = len(self) * self.batch_size if self.drop_last else len(jobs)
        size = self.batch_size
        arrays: dict[int, tuple[npt.NDArray[Any], Any]] = {}

        def dest_for(j: int) -> npt.NDArray[Any]:
            b = j // size
            if b not in arrays:
                count = min(size, n - b * size)
                arrays[b] = alloc((count, *shape), dtype)
            dest: npt.NDArray[Any] = arrays[b][0][j - b * size]
            return dest

        for j in self.chips.head(n)._engine().run(dest_for):
            if (j + 1) % size == 0 or j + 1 == n:
                b = j // size
                image, owner = arrays.pop(b)
                sel = slice(b * size, b * size + len(image))
                batch = Batch(
                    image=image,
                    chip_ids=list(jobs.chip_id[sel]),
                    scene_ids=[jobs.scenes[int(s)].id for s in jobs.scene[sel]],
                    indexes=jobs.index[sel].copy(),
                    crs=list(jobs.crs[sel]),
                    bounds=jobs.bounds[sel].copy(),
                    transforms=[list(t) for t in jobs.transform[sel]],
                    buffer=owner,
                )
                del image, owner  # only the batch holds them: it can be recycled
                yield batch
                del batch


class _Empty(BatchStream):
    """A worker's share when it gets no batch."""

    def __init__(self, like: BatchStream) -> None:
        self.chips = like.chips
        self.batch_size = like.batch_size
        self.drop_last = False

    def __len__(self) -> int:
        return 0

    def iter(self, alloc: Alloc) -> Iterator[Batch]:
        """Nothing to read."""
        return iter(())

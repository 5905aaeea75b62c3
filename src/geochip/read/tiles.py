"""The reading engine of streams: a plan's chips read in order, every tile read once.

:class:`TileReader` reads the chips of a plan (:class:`Jobs`) into the destinations a
stream gives it. Chips that own their tiles are read by GDAL straight into their
destination; the internal tiles of a COG shared by several overlapping chips are decoded
once, kept until their last use (within a memory budget) and copied into each chip. With
threads, reads run ahead on a pool (bounded in bytes); the consuming thread hands chips
out in plan order.

Reader threads live as long as the process (one pool per size): a
thread that ends runs GDAL's and PROJ's thread-local destructors after ``join()`` has
returned, and a DataLoader forking then could copy a lock held by the dying thread.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..core.env import GdalEnv
from ..core.gdal import set_block_cache
from ..core.grid import Window
from ..core.handles import refresh_handles
from ..errors import RasterReadError
from .scene import Scene, read_part, read_window

if TYPE_CHECKING:
    import geopandas as gpd


@dataclass(frozen=True)
class Jobs:
    """A plan's chips as arrays (scene, window, id, CRS, bounds, transform), in plan order."""

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

    def take(self, positions: npt.NDArray[np.int64]) -> Jobs:
        return Jobs(
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
    def from_plan(cls, plan: gpd.GeoDataFrame, scenes: Mapping[str, Scene]) -> Jobs:
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


def _schedule(jobs: Jobs) -> _Schedule:
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


def default_threads() -> int:
    """Reader threads by default: one per CPU this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 2
    return max(1, min(4, cpus))


class TileReader:
    """Reads the jobs in order into destinations given by ``dest_for``; yields positions.

    Chips that own their tiles are read by GDAL straight into their destination; tiles
    shared by several chips are decoded once, kept until their last use (within
    ``cache_bytes``), and copied into each chip. With ``threads`` > 0, reads run ahead on
    a pool; the consuming thread copies tiles and hands out results in order.
    """

    def __init__(
        self,
        jobs: Jobs,
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

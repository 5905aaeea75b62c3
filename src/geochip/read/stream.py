"""Chips and batches straight from scenes: the streaming path.

A plan of chips over scenes comes from :mod:`geochip.plan.scenes`. :class:`ChipStream`
yields :class:`Chip` (numpy + GeoBox, or an ``xarray.DataArray`` with
:meth:`Chip.to_dataarray`) and :meth:`ChipStream.batch` yields :class:`Batch` (one
preallocated ``(N, C, H, W)`` array in the source dtype, filled in place), across scene
boundaries. Pixels equal a plain rasterio read of the same window of the same overview.
Reads run ahead on a small thread pool (GDAL decodes outside the GIL); when chips overlap,
every internal tile of the COG is decoded once and shared by the chips that need it (freed
after its last use, within a memory budget); chips that own their tiles are decoded by GDAL
straight into their slot of the batch.

The reading itself (tiles shared, read-ahead, reader threads) is :mod:`geochip.read.tiles`.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.core.grid import Window
    >>> from geochip.plan.scenes import plan_scenes
    >>> from geochip.read.open import open_scene
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

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from affine import Affine
from odc.geo.geobox import GeoBox

from ..core.env import GdalEnv
from ..errors import InputError
from .open import scenes_of
from .recycler import Recycler
from .scene import Scene, chip_dataarray
from .tiles import Jobs, TileReader, default_threads

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

__all__ = [
    "ITEM_KEYS",
    "Alloc",
    "Batch",
    "BatchStream",
    "Chip",
    "ChipStream",
    "Split",
]

Split = Literal["contiguous", "interleaved"]

#: The keys of a streamed chip or batch: those of ``StreamDataset``'s (DataLoader) dicts.
ITEM_KEYS = ("image", "chip_id", "scene_id", "crs", "bounds", "index")


class _Keys:
    """Keys next to the attributes: ``item["image"]``, ``"image" in item``, ``item.keys()``
    and ``dict(item)`` work on a :class:`Chip` or :class:`Batch` as on the dicts a
    ``DataLoader`` over ``StreamDataset`` yields, whichever path made the item."""

    _attrs: ClassVar[Mapping[str, str]] = {}

    def keys(self) -> list[str]:
        """:data:`ITEM_KEYS`."""
        return list(ITEM_KEYS)

    def items(self) -> list[tuple[str, Any]]:
        """(key, value) for every key."""
        return [(key, self[key]) for key in ITEM_KEYS]

    def __getitem__(self, key: str) -> Any:
        if key not in ITEM_KEYS:
            raise KeyError(f"{key!r}: a {type(self).__name__} has keys {', '.join(ITEM_KEYS)}")
        return getattr(self, self._attrs.get(key, key))

    def __contains__(self, key: object) -> bool:
        return key in ITEM_KEYS


@dataclass(frozen=True)
class Chip(_Keys):
    """One chip: pixels (band, y, x) in the source dtype, and where they come from.

    ``index`` is the chip's row in the plan; ``row``/``col`` its offset in the scene's grid.
    Its :data:`ITEM_KEYS` read as keys too (``chip["image"]``).
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
    def crs(self) -> str:
        """The scene's CRS, as text."""
        return str(self.scene.geobox.crs)

    @property
    def bounds(self) -> npt.NDArray[np.float64]:
        """``[minx, miny, maxx, maxy]`` in the scene's CRS."""
        return np.array(self.geobox.boundingbox, dtype=np.float64)

    @property
    def geobox(self) -> GeoBox:
        """The chip's grid: the scene's grid shifted by the window offset."""
        height, width = self.image.shape[-2:]
        affine = self.scene.geobox.affine * Affine.translation(self.col, self.row)
        return GeoBox((height, width), affine, self.scene.geobox.crs)

    def to_dataarray(self) -> xr.DataArray:
        """The chip as an ``xarray.DataArray`` (band, y, x) with coordinates and CRS."""
        return chip_dataarray(self.scene, self.image, self.row, self.col)


@dataclass
class Batch(_Keys):
    """Chips of one batch: ``image`` is one (N, C, H, W) array in the source dtype.

    ``buffer`` is the object that owns ``image``'s memory when it was allocated elsewhere
    (a shared-memory tensor in a DataLoader worker). Its :data:`ITEM_KEYS` read as keys too
    (``batch["image"]``, ``batch["chip_id"]`` is ``chip_ids``), as in a ``DataLoader``
    batch of ``StreamDataset``.
    """

    _attrs: ClassVar[Mapping[str, str]] = {
        "chip_id": "chip_ids",
        "scene_id": "scene_ids",
        "index": "indexes",
    }

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
        height, width = self.image.shape[-2:]
        return [
            GeoBox((height, width), Affine(*t[:6]), c)
            for t, c in zip(self.transforms, self.crs, strict=True)
        ]


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
        self._jobs = Jobs.from_plan(plan, self.scenes)
        self.threads = default_threads() if threads is None else int(threads)
        self.read_ahead = read_ahead
        self.cache_mb = cache_mb

    @classmethod
    def _from_jobs(cls, jobs: Jobs, like: ChipStream) -> ChipStream:
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

    def _engine(self) -> TileReader:
        threads = self.threads if self.read_ahead else 0
        return TileReader(
            self._jobs, threads=threads, cache_bytes=self.cache_mb << 20, env=self.env
        )

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

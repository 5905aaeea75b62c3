"""zen3geo's ``XbatcherSlicer`` (``slice_with_xbatcher``): sliding-window chips of xarray
objects, as ``xbatcher.BatchGenerator`` cuts them.

Two paths, one behaviour:

* **Scenes read by** ``read_from_rioxarray`` (slicing ``y`` then ``x``): the chips are
  planned from the headers (so every stage has a ``len()`` before any pixel is read) and read
  by geochip's chip stream (read-ahead threads, each COG tile decoded once; work split across
  DataLoader workers by itself). ``batch`` and ``collate`` after it stay on that path.
* **Any other xarray object** (a DataArray or Dataset, in memory or lazy: dask, zarr,
  netCDF): windows are cut with ``isel``, in xbatcher's order (the first dimension of
  ``input_dims`` outermost), partial windows at the edges dropped, ``input_overlap`` between
  neighbours; with ``preload_batch`` (the default) each chip is loaded into memory. Two or
  more dimensions outside ``input_dims`` are stacked into one ``sample`` dimension first
  (``("sample", *input_dims)``), as xbatcher does; one is kept as it is (``band``).

xbatcher's ``batch_dims`` and ``concat_input_dims`` are refused by name.

Example:
    >>> import numpy as np, xarray as xr
    >>> from geochip.compat.zen3geo import IterableWrapper
    >>> da = xr.DataArray(np.ones((3, 128, 128)), dims=["band", "y", "x"])
    >>> dp = IterableWrapper([da]).slice_with_xbatcher(input_dims={"y": 64, "x": 64})
    >>> len(dp), dict(next(iter(dp)).sizes)
    (4, {'band': 3, 'y': 64, 'x': 64})
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..ml.stream import StreamDataset
from ..plan.scenes import plan_scenes
from ..read.stream import ChipStream
from .pipes import Batcher, IterDataPipe, ShardingFilter, functional_datapipe
from .rioxarray import RioXarrayReader

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "PlannedBatcher",
    "PlannedCollator",
    "XbatcherSlicer",
    "window_selectors",
]

#: xarray's name for the variable of an unnamed DataArray (zen3geo names chips with it).
DATAARRAY_VARIABLE = "__xarray_dataarray_variable__"


def _starts(size: int, window: int, overlap: int) -> list[int]:
    return [s for s in range(0, size, window - overlap) if s + window <= size]


def window_selectors(
    sizes: Mapping[Hashable, int],
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None = None,
) -> list[dict[Hashable, slice]]:
    """The ``isel`` selectors of every window, in xbatcher's order."""
    overlap = dict(input_overlap or {})
    extra = sorted(str(d) for d in overlap if d not in input_dims)
    if extra:
        raise InputError(f"input_overlap names {extra}, which are not in input_dims")
    per_dim = []
    for dim, window in input_dims.items():
        if dim not in sizes:
            raise InputError(
                f"input_dims names {dim!r}, which the data does not have (its dimensions: "
                f"{', '.join(str(d) for d in sizes)})"
            )
        olap = int(overlap.get(dim, 0))
        if window < 1 or window > sizes[dim]:
            raise InputError(
                f"input_dims[{dim!r}] = {window} must be between 1 and the size of {dim!r} "
                f"({sizes[dim]})"
            )
        if not 0 <= olap < window:
            raise InputError(
                f"input_overlap[{dim!r}] = {olap} must be at least 0 and less than the "
                f"window ({window})"
            )
        per_dim.append([(dim, slice(s, s + window)) for s in _starts(sizes[dim], window, olap)])
    return [dict(combo) for combo in itertools.product(*per_dim)]


def _is_planned(source: Any, input_dims: Mapping[Hashable, int], overlap: Any) -> bool:
    return (
        isinstance(source, RioXarrayReader)
        and list(input_dims) == ["y", "x"]
        and set(overlap or {}) <= {"y", "x"}
    )


@functional_datapipe("slice_with_xbatcher")
class XbatcherSlicer(IterDataPipe):
    """Sliding-window chips of every xarray object of the source (see the module doc).

    ``len()`` is the number of chips: from the chip plan on the planned path, else counted
    from the sizes of every object (which iterates the source, as zen3geo 0.6 did).
    """

    def __init__(
        self,
        source_datapipe: Any,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        preload_batch: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise InputError(
                f"slice_with_xbatcher does not take {', '.join(sorted(kwargs))}; geochip "
                "supports input_dims, input_overlap and preload_batch"
            )
        if not input_dims:
            raise InputError("input_dims needs the window size of at least one dimension")
        if isinstance(source_datapipe, RioXarrayReader):
            unknown = sorted(str(d) for d in input_dims if d not in ("band", "y", "x"))
            if unknown:
                raise InputError(
                    f"input_dims slices y and x here; got dimensions {sorted(map(str, input_dims))}"
                    f" ({unknown} not in the scenes' band, y, x). Use bands= on "
                    "read_from_rioxarray to choose bands"
                )
        self.source_datapipe = source_datapipe
        self.input_dims = dict(input_dims)
        self.input_overlap = dict(input_overlap or {})
        self.preload_batch = preload_batch
        self.planned = _is_planned(source_datapipe, self.input_dims, self.input_overlap)
        self.shards_itself = self.planned
        self._plan: gpd.GeoDataFrame | None = None

    @property
    def plan(self) -> gpd.GeoDataFrame:
        """The chip plan (GeoDataFrame, one row per chip) of the planned path."""
        if not self.planned:
            raise InputError("only chips of read_from_rioxarray scenes (y, x) are planned")
        if self._plan is None:
            dims = {"y": int(self.input_dims["y"]), "x": int(self.input_dims["x"])}
            overlap = {d: int(self.input_overlap.get(d, 0)) for d in ("y", "x")}
            self._plan = plan_scenes(
                self.source_datapipe.scenes, dims, overlap=overlap, edge="drop"
            )
        return self._plan

    def stream(self) -> ChipStream:
        """The native :class:`~geochip.read.stream.ChipStream` behind the planned path."""
        return ChipStream(self.plan, self.source_datapipe.scenes, env=self.source_datapipe.env)

    def _chips(self, obj: Any) -> Iterator[Any]:
        if getattr(obj, "name", "") is None:  # an unnamed DataArray: named as zen3geo did
            obj = obj.rename(DATAARRAY_VARIABLE)
        other = [d for d in obj.dims if d not in self.input_dims]
        for selector in window_selectors(obj.sizes, self.input_dims, self.input_overlap):
            chip = obj.isel(selector)
            if self.preload_batch:
                chip = chip.load()
            if len(other) >= 2:
                chip = chip.stack(sample=other).transpose("sample", *self.input_dims)
            yield chip

    def __iter__(self) -> Iterator[Any]:
        if self.planned:
            yield from StreamDataset(self.stream(), None, as_dataarray=True)
            return
        for obj in self.source_datapipe:
            yield from self._chips(obj)

    def __len__(self) -> int:
        if self.planned:
            return len(self.plan)
        return sum(
            len(window_selectors(obj.sizes, self.input_dims, self.input_overlap))
            for obj in self.source_datapipe
        )

    def sharding_filter(self) -> IterDataPipe:
        """The planned path splits work across workers by itself; elsewhere, torchdata's."""
        if self.planned:
            return self
        return ShardingFilter(self)

    def batch(
        self,
        batch_size: int,
        drop_last: bool = False,
        wrapper_class: Callable[[list[Any]], Any] = list,
    ) -> IterDataPipe:
        """Lists of ``batch_size`` chips (across scene boundaries)."""
        if self.planned and wrapper_class is list:
            return PlannedBatcher(self, batch_size, drop_last)
        return Batcher(self, batch_size, drop_last, wrapper_class)


class PlannedBatcher(IterDataPipe):
    """Lists of ``batch_size`` planned chips, read a batch at a time."""

    shards_itself = True

    def __init__(self, source: XbatcherSlicer, batch_size: int, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _dataset(self, collate_fn: Callable[[list[Any]], Any] | None) -> Any:
        return StreamDataset(
            self.source.stream(),
            self.batch_size,
            collate_fn=collate_fn,
            drop_last=self.drop_last,
            as_dataarray=collate_fn is not None,
        )

    def __iter__(self) -> Iterator[Any]:
        return iter(self._dataset(list))

    def sharding_filter(self) -> PlannedBatcher:
        """Accepted; the planned path splits work across workers by itself."""
        return self

    def collate(
        self, conversion: Any = None, collate_fn: Callable[[list[Any]], Any] | None = None
    ) -> PlannedCollator:
        """Every batch as ``collate_fn(list_of_chips)``; without a function, one
        (N, C, H, W) tensor in the source dtype, read straight into its buffer."""
        return PlannedCollator(self, collate_fn or conversion)


class PlannedCollator(IterDataPipe):
    """Collated batches of planned chips (tensors, or what ``collate_fn`` returns)."""

    shards_itself = True

    def __init__(
        self, source: PlannedBatcher, collate_fn: Callable[[list[Any]], Any] | None = None
    ) -> None:
        self.source = source
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        return len(self.source)

    def sharding_filter(self) -> PlannedCollator:
        """Accepted; the planned path splits work across workers by itself."""
        return self

    def __iter__(self) -> Iterator[Any]:
        if self.collate_fn is not None:
            yield from self.source._dataset(self.collate_fn)
            return
        for batch in self.source._dataset(None):
            yield batch["image"]

"""zen3geo's functional names on top of geochip's streaming path (no torchdata needed).

zen3geo's "Chipping and batching" tutorial chained torchdata DataPipes; torchdata 0.10
removed them. The same chain runs here, each stage with a correct ``len()`` (known from the
headers, before any pixel is read), and the last one feeds ``DataLoader(dataset=...,
batch_size=None)`` with any number of workers (work is split across workers automatically,
so ``sharding_filter()`` is accepted and does nothing):

============================================  ==============================================
zen3geo / torchdata                           here
============================================  ==============================================
``IterableWrapper(iterable=urls)``            :class:`IterableWrapper` (paths, URLs, Items)
``.read_from_rioxarray(overview_level=3)``    headers only; iterating gives lazy DataArrays
``.slice_with_xbatcher(input_dims=...,``      a chip plan (edge ``drop``, like xbatcher);
``input_overlap=...)``                        chips are DataArrays (band, y, x) with
                                              x/y coordinates, CRS, nodata and attributes
``.batch(batch_size=10)``                     lists of chips, across scene boundaries
``.collate(collate_fn=fn)``                   ``fn(list_of_chips)``; without ``fn``: one
                                              (N, C, H, W) tensor in the source dtype
============================================  ==============================================

Chips are read by geochip's reader (read-ahead threads, each COG tile decoded once), not by
rioxarray or xbatcher; their pixels equal a plain rasterio read of the same window.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.testing import make_cog
    >>> gbox = GeoBox.from_bbox((500_000, 0, 520_480, 10_240), "EPSG:32633", resolution=10)
    >>> path = make_cog(pathlib.Path(tempfile.mkdtemp()) / "s1.tif", gbox, tile=256,
    ...                 overviews=(2,))
    >>> dp = IterableWrapper(iterable=[path, path]).read_from_rioxarray(overview_level=0)
    >>> dp_xbatcher = dp.slice_with_xbatcher(input_dims={"y": 256, "x": 256})
    >>> len(dp), len(dp_xbatcher), len(dp_xbatcher.batch(batch_size=3))
    (2, 16, 6)
    >>> chip = next(iter(dp_xbatcher))
    >>> import odc.geo.xr
    >>> chip.dims, chip.shape, chip.odc.geobox.crs.epsg
    (('band', 'y', 'x'), (1, 256, 256), 32633)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import IterableDataset

from ..core.env import GdalEnv
from ..errors import InputError
from ..plan.scenes import plan_scenes
from ..read.open import open_scenes
from ..read.scene import Scene
from ..read.stream import ChipStream
from .stream import StreamDataset

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "Batcher",
    "Collator",
    "IterableWrapper",
    "RioXarrayReader",
    "XbatcherSlicer",
]


class _Stage(IterableDataset[Any]):
    """A pipeline stage: iterable, with a ``len()``, usable as a DataLoader dataset."""

    def sharding_filter(self) -> _Stage:
        """Accepted for zen3geo compatibility; geochip already splits work across workers."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)})"

    def __len__(self) -> int:
        raise NotImplementedError


class IterableWrapper(_Stage):
    """The sources of the pipeline: paths, http(s) URLs or ``pystac.Item``s."""

    def __init__(self, iterable: Iterable[Any], deepcopy: bool = True) -> None:
        self.sources = list(iterable)

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.sources)

    def read_from_rioxarray(
        self,
        overview_level: int | None = None,
        *,
        bands: Sequence[str | int] | None = None,
        asset: str | Sequence[str] | None = None,
        env: GdalEnv | None = None,
        **kwargs: Any,
    ) -> RioXarrayReader:
        """Open every source (headers only) at ``overview_level``.

        rioxarray's other options (``chunks``, ``masked``...) do not apply: chips are read
        by geochip, in the source dtype, with nodata in ``attrs["_FillValue"]``.
        """
        if kwargs:
            raise InputError(
                f"read_from_rioxarray does not take {', '.join(sorted(kwargs))}; geochip "
                "supports overview_level, bands, asset and env"
            )
        return RioXarrayReader(self, overview_level, bands=bands, asset=asset, env=env)


class RioXarrayReader(_Stage):
    """Scenes opened from their headers; iterating yields each as a lazy DataArray."""

    def __init__(
        self,
        source: IterableWrapper,
        overview_level: int | None = None,
        *,
        bands: Sequence[str | int] | None = None,
        asset: str | Sequence[str] | None = None,
        env: GdalEnv | None = None,
    ) -> None:
        self.source = source
        self.overview_level = overview_level
        self.bands = bands
        self.asset = asset
        self.env = env
        self._scenes: list[Scene] | None = None

    @property
    def scenes(self) -> list[Scene]:
        """The opened scenes (headers are read on first use)."""
        if self._scenes is None:
            self._scenes = open_scenes(
                self.source.sources,
                overview_level=self.overview_level,
                bands=self.bands,
                asset=self.asset,
                env=self.env,
            )
        return self._scenes

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Any]:
        for scene in self.scenes:
            yield scene.to_dataarray(self.env)

    def slice_with_xbatcher(
        self,
        input_dims: Mapping[str, int],
        input_overlap: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> XbatcherSlicer:
        """Sliding-window chips of ``input_dims`` (``{"y": .., "x": ..}``) with
        ``input_overlap``; partial windows at the edges are dropped, as xbatcher does."""
        if kwargs:
            raise InputError(
                f"slice_with_xbatcher does not take {', '.join(sorted(kwargs))}; geochip "
                "supports input_dims and input_overlap over y and x"
            )
        return XbatcherSlicer(self, input_dims, input_overlap)


def _yx(value: Mapping[str, int] | None, name: str) -> dict[str, int] | None:
    if value is None:
        return None
    extra = {k: v for k, v in value.items() if k not in ("y", "x")}
    if any(k != "band" for k in extra):
        raise InputError(
            f"{name} slices y and x here; got dimensions {sorted(value)}. Use bands= on "
            "read_from_rioxarray to choose bands"
        )
    return {"y": int(value.get("y", 0)), "x": int(value.get("x", 0))}


class XbatcherSlicer(_Stage):
    """Chips (DataArrays, band/y/x) of every scene, planned from the headers."""

    def __init__(
        self,
        source: RioXarrayReader,
        input_dims: Mapping[str, int],
        input_overlap: Mapping[str, int] | None = None,
    ) -> None:
        dims = _yx(input_dims, "input_dims")
        if dims is None or set(input_dims) < {"y", "x"}:
            raise InputError(f"input_dims needs 'y' and 'x' sizes, got {dict(input_dims)}")
        self.source = source
        self.input_dims = dims
        self.input_overlap = _yx(input_overlap, "input_overlap")
        self._plan: gpd.GeoDataFrame | None = None

    @property
    def plan(self) -> gpd.GeoDataFrame:
        """The chip plan (GeoDataFrame, one row per chip)."""
        if self._plan is None:
            self._plan = plan_scenes(
                self.source.scenes, self.input_dims, overlap=self.input_overlap, edge="drop"
            )
        return self._plan

    def stream(self) -> ChipStream:
        """The native :class:`~geochip.read.stream.ChipStream` behind this stage."""
        return ChipStream(self.plan, self.source.scenes, env=self.source.env)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[Any]:
        return iter(StreamDataset(self.stream(), None, as_dataarray=True))

    def batch(self, batch_size: int, drop_last: bool = False) -> Batcher:
        """Group chips into lists of ``batch_size`` (across scene boundaries)."""
        return Batcher(self, batch_size, drop_last)


class Batcher(_Stage):
    """Lists of ``batch_size`` chips."""

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

    def collate(self, collate_fn: Callable[[list[Any]], Any] | None = None) -> Collator:
        """Turn every batch into ``collate_fn(list_of_chips)``; without a function, into one
        (N, C, H, W) tensor in the source dtype, read straight into its buffer."""
        return Collator(self, collate_fn)


class Collator(_Stage):
    """Collated batches (tensors)."""

    def __init__(
        self, source: Batcher, collate_fn: Callable[[list[Any]], Any] | None = None
    ) -> None:
        self.source = source
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Any]:
        if self.collate_fn is not None:
            yield from self.source._dataset(self.collate_fn)
            return
        for batch in self.source._dataset(None):
            yield batch["image"]

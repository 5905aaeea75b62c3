"""zen3geo 0.6's public surface, without torchdata: change ``from zen3geo.datapipes`` and
``from torchdata.datapipes.iter`` to ``from geochip.compat.zen3geo``.

zen3geo's DataPipes chained torchdata stages; torchdata 0.10 removed them. Here every stage
is a ``torch.utils.data.IterableDataset`` with zen3geo's and torchdata's functional names:

=============================================  ================================================
zen3geo 0.6                                    here
=============================================  ================================================
``RioXarrayReader`` ``read_from_rioxarray``    headers only; lazy DataArrays (band, y, x)
``XbatcherSlicer`` ``slice_with_xbatcher``     xbatcher's windows of any DataArray/Dataset;
                                               planned from headers after the reader
``PySTACItemReader`` ``read_to_pystac_item``   pystac, as in zen3geo
``PySTACAPISearcher``                          pystac-client, as in zen3geo
``search_for_pystac_item``
``PySTACAPIItemLister``                        pystac-client, as in zen3geo
``list_pystac_items_by_search``
``StackSTACStacker`` ``stack_stac_items``      odc-stac on stackstac's grid (see ``stac``)
``StackSTACMosaicker`` ``mosaic_dataarray``    stackstac's mosaic, in xarray
``XpySTACAssetReader`` ``read_from_xpystac``   xarray engines; ``engine="stac"`` refused
``PyogrioReader`` ``read_from_pyogrio``        pyogrio, as in zen3geo
``GeoPandasRectangleClipper``                  geopandas, as in zen3geo
``clip_vector_with_rectangle``
``XarrayCanvas`` ``canvas_from_xarray``        a :class:`~geochip.compat.vector.Canvas`
``DatashaderRasterizer``                       rasterio.features, datashader's default
``rasterize_with_datashader``                  reductions (see ``vector``)
``IterableWrapper`` and the generic verbs      :mod:`geochip.compat.pipes`
=============================================  ================================================

The classes are also importable by their ``...IterDataPipe`` names, as zen3geo's modules
define them.

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
    >>> len(dp_xbatcher.map(lambda c: c.mean()).header(5))
    5
"""

from __future__ import annotations

from .pipes import (
    Batcher,
    Collator,
    Concater,
    Cycler,
    Enumerator,
    Filter,
    FlatMapper,
    Header,
    InBatchShuffler,
    IterableWrapper,
    IterDataPipe,
    LengthSetter,
    Mapper,
    ShardingFilter,
    Shuffler,
    UnBatcher,
    Zipper,
    ZipperLongest,
    functional_datapipe,
)
from .rioxarray import RioXarrayReader
from .slicing import XbatcherSlicer
from .stac import (
    PySTACAPIItemLister,
    PySTACAPISearcher,
    PySTACItemReader,
    StackSTACMosaicker,
    StackSTACStacker,
    XpySTACAssetReader,
)
from .vector import (
    Canvas,
    DatashaderRasterizer,
    GeoPandasRectangleClipper,
    PyogrioReader,
    XarrayCanvas,
)

# zen3geo's module-level names (zen3geo.datapipes.<lib>.<Name>IterDataPipe)
RioXarrayReaderIterDataPipe = RioXarrayReader
XbatcherSlicerIterDataPipe = XbatcherSlicer
PySTACItemReaderIterDataPipe = PySTACItemReader
PySTACAPISearcherIterDataPipe = PySTACAPISearcher
PySTACAPIItemListerIterDataPipe = PySTACAPIItemLister
StackSTACStackerIterDataPipe = StackSTACStacker
StackSTACMosaickerIterDataPipe = StackSTACMosaicker
XpySTACAssetReaderIterDataPipe = XpySTACAssetReader
PyogrioReaderIterDataPipe = PyogrioReader
GeoPandasRectangleClipperIterDataPipe = GeoPandasRectangleClipper
XarrayCanvasIterDataPipe = XarrayCanvas
DatashaderRasterizerIterDataPipe = DatashaderRasterizer

__all__ = [
    "Batcher",
    "Canvas",
    "Collator",
    "Concater",
    "Cycler",
    "DatashaderRasterizer",
    "DatashaderRasterizerIterDataPipe",
    "Enumerator",
    "Filter",
    "FlatMapper",
    "GeoPandasRectangleClipper",
    "GeoPandasRectangleClipperIterDataPipe",
    "Header",
    "InBatchShuffler",
    "IterDataPipe",
    "IterableWrapper",
    "LengthSetter",
    "Mapper",
    "PySTACAPIItemLister",
    "PySTACAPIItemListerIterDataPipe",
    "PySTACAPISearcher",
    "PySTACAPISearcherIterDataPipe",
    "PySTACItemReader",
    "PySTACItemReaderIterDataPipe",
    "PyogrioReader",
    "PyogrioReaderIterDataPipe",
    "RioXarrayReader",
    "RioXarrayReaderIterDataPipe",
    "ShardingFilter",
    "Shuffler",
    "StackSTACMosaicker",
    "StackSTACMosaickerIterDataPipe",
    "StackSTACStacker",
    "StackSTACStackerIterDataPipe",
    "UnBatcher",
    "XarrayCanvas",
    "XarrayCanvasIterDataPipe",
    "XbatcherSlicer",
    "XbatcherSlicerIterDataPipe",
    "XpySTACAssetReader",
    "XpySTACAssetReaderIterDataPipe",
    "Zipper",
    "ZipperLongest",
    "functional_datapipe",
]

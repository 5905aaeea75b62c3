"""zen3geo's tutorial names on geochip: the tutorial's numbers on real files, DataArray chips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pystac
import pystac_client
import pytest
import rasterio
import rioxarray
import shapely
import torch
import xarray as xr
from torch.utils.data import DataLoader

from geochip.compat.zen3geo import (
    Canvas,
    DatashaderRasterizer,
    IterableWrapper,
    PySTACItemReader,
    XbatcherSlicer,
)
from geochip.errors import InputError
from geochip.sources.sample import sample_catalog, sample_labels_path
from geochip.testing.http import RangeServer
from geochip.testing.scenes import make_s1_like
from geochip.testing.stac_api import StacApiServer

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def s1_paths(cache_dir: Path) -> list[Path]:
    return make_s1_like(cache_dir / "s1-like")


@pytest.fixture
def urls(s1_paths: list[Path]):
    with RangeServer(s1_paths[0].parent) as server:
        yield [server.url(p.name) for p in s1_paths]


def int16_collate(samples: list) -> torch.Tensor:
    return torch.stack([torch.as_tensor(s.data.astype("int16")) for s in samples])


def test_tutorial_numbers_over_http(urls: list[str]) -> None:
    dp = IterableWrapper(iterable=urls).read_from_rioxarray(overview_level=3)
    plain = dp.slice_with_xbatcher(input_dims={"y": 512, "x": 512})
    assert len(plain) == 12
    assert len(list(plain)) == 12
    overlapping = dp.slice_with_xbatcher(
        input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
    )
    batches = overlapping.batch(batch_size=10)
    collated = batches.collate(collate_fn=int16_collate)
    assert len(overlapping) == 30 and len(batches) == 3 and len(collated) == 3
    shapes = [tuple(t.shape) for t in DataLoader(dataset=collated, batch_size=None)]
    assert shapes == [(10, 1, 512, 512)] * 3


def test_second_batch_holds_five_chips_of_each_scene(s1_paths: list[Path]) -> None:
    dp = IterableWrapper(s1_paths).read_from_rioxarray(overview_level=3)
    batches = list(
        dp.slice_with_xbatcher(
            input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
        ).batch(10)
    )
    scenes = [[c.attrs["scene_id"] for c in b] for b in batches]
    assert scenes[1] == ["osaka-5220x7845"] * 5 + ["tokyo-5220x7845"] * 5


def test_chips_match_rasterio_overview_reads_and_xbatcher_coordinates(
    s1_paths: list[Path],
) -> None:
    import xbatcher

    dp = IterableWrapper(s1_paths[:1]).read_from_rioxarray(overview_level=3)
    chips = list(
        dp.slice_with_xbatcher(input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256})
    )
    reference = rioxarray.open_rasterio(s1_paths[0], overview_level=3)
    expected = list(
        xbatcher.BatchGenerator(
            reference, input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
        )
    )
    assert len(chips) == len(expected) == 15
    with rasterio.open(s1_paths[0], overview_level=3) as ds:
        for chip, other in zip(chips, expected, strict=True):
            assert np.array_equal(chip.x.values, other.x.values)
            assert np.array_equal(chip.y.values, other.y.values)
            row, col = ds.index(float(chip.x[0]), float(chip.y[0]))
            window = rasterio.windows.Window(col, row, 512, 512)
            assert np.array_equal(chip.values, ds.read(window=window))


def test_chip_dataarray_carries_crs_nodata_and_attributes(s1_paths: list[Path]) -> None:
    import odc.geo.xr  # noqa: F401

    chip = next(
        iter(
            IterableWrapper(s1_paths[1:])
            .read_from_rioxarray(overview_level=3)
            .slice_with_xbatcher(input_dims={"y": 512, "x": 512})
        )
    )
    assert chip.dims == ("band", "y", "x") and chip.dtype == np.uint16
    assert chip.rio.crs.to_epsg() == 32654
    assert chip.odc.geobox.crs.epsg == 32654
    assert chip.rio.nodata == 0
    assert chip.attrs["long_name"] == "vv"
    assert chip.rio.resolution() == (50.0, -50.0)  # level 3 of 10 m with factor 5


def test_every_stage_has_a_len_and_works_with_workers(s1_paths: list[Path]) -> None:
    wrapper = IterableWrapper(s1_paths)
    reader = wrapper.read_from_rioxarray(overview_level=3)
    slicer = reader.slice_with_xbatcher(input_dims={"y": 512, "x": 512})
    batches = slicer.batch(5)
    collated = batches.collate()
    assert [len(wrapper), len(reader), len(slicer), len(batches), len(collated)] == [2, 2, 12, 3, 3]
    loader = DataLoader(dataset=collated.sharding_filter(), batch_size=None, num_workers=2)
    out = list(loader)
    assert sorted(t.shape[0] for t in out) == [2, 5, 5]
    assert all(t.dtype == torch.uint16 for t in out)


def test_unsupported_options_are_named(s1_paths: list[Path]) -> None:
    with pytest.raises(InputError, match=r"read_from_rioxarray does not take masked"):
        IterableWrapper(s1_paths).read_from_rioxarray(masked=True)
    reader = IterableWrapper(s1_paths).read_from_rioxarray(overview_level=3)
    with pytest.raises(InputError, match=r"slice_with_xbatcher does not take batch_dims"):
        reader.slice_with_xbatcher(input_dims={"y": 512, "x": 512}, batch_dims={"time": 2})
    with pytest.raises(InputError, match=r"input_dims slices y and x here"):
        reader.slice_with_xbatcher(input_dims={"time": 2, "y": 512, "x": 512})


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_tutorial_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__zen3geo_doc__"}
    blocks = _python_blocks(ROOT / "docs" / "zen3geo.md")
    assert len(blocks) >= 8
    for block in blocks:
        exec(compile(block, "docs/zen3geo.md", "exec"), namespace)
    assert namespace["shapes"] == [(10, 1, 512, 512)] * 3


# --- zen3geo 0.6's whole surface, pinned on what zen3geo's own tests assert ---------------


def test_slice_in_memory_and_lazy_dataarrays() -> None:
    """zen3geo's test_xbatcher_slicer_dataarray: a (band, y, x) array, chunked or not."""
    data = np.ones((3, 128, 128))
    for dataarray in (
        xr.DataArray(data, dims=["band", "y", "x"]),
        xr.DataArray(data, dims=["band", "y", "x"]).chunk({"band": 1}),
    ):
        dp = IterableWrapper(iterable=[dataarray])
        for slicer in (
            XbatcherSlicer(source_datapipe=dp, input_dims={"y": 64, "x": 64}),
            dp.slice_with_xbatcher(input_dims={"y": 64, "x": 64}),
        ):
            chips = list(slicer)
            assert len(slicer) == len(chips) == 4
            assert dict(chips[0].sizes) == {"band": 3, "y": 64, "x": 64}
            assert float(chips[0].sum()) == 3 * 64 * 64
            assert isinstance(chips[0].data, np.ndarray)  # preload_batch: loaded


def test_slice_dataset() -> None:
    """zen3geo's test_xbatcher_slicer_dataset: a Dataset with (x, y) data and lon/lat."""
    dataset = xr.Dataset(
        data_vars={"temperature": (["x", "y"], 15 * np.ones(shape=(32, 32)))},
        coords={
            "lon": (["x"], np.linspace(start=0, stop=32, num=32)),
            "lat": (["y"], np.linspace(start=64, stop=32, num=32)),
        },
    )
    dp = IterableWrapper(iterable=[dataset]).slice_with_xbatcher(input_dims={"y": 16, "x": 16})
    chips = list(dp)
    assert len(dp) == len(chips) == 4
    assert dict(chips[0].temperature.sizes) == {"x": 16, "y": 16}
    assert float(chips[0].temperature.sum()) == 15 * 16 * 16
    assert np.array_equal(chips[1].lon.values, dataset.lon.values[16:])  # x inner, y outer
    assert np.array_equal(chips[2].lat.values, dataset.lat.values[16:])


def test_slice_equals_xbatcher_chip_by_chip() -> None:
    """xbatcher itself is the oracle: order (first input dim outermost), overlap, edges
    dropped, other dims stacked into ``sample``."""
    import xbatcher

    rng = np.random.default_rng(0)
    cube = xr.DataArray(
        rng.integers(0, 1000, (2, 3, 40, 50)),
        dims=["time", "band", "y", "x"],
        coords={"x": np.arange(50) * 10.0, "y": 400 - np.arange(40) * 10.0, "time": [1, 2]},
    )
    for dims, overlap in (({"x": 16, "y": 12}, {"x": 4}), ({"y": 20, "x": 20}, {"y": 10})):
        ours = list(
            IterableWrapper([cube]).slice_with_xbatcher(input_dims=dims, input_overlap=overlap)
        )
        theirs = list(xbatcher.BatchGenerator(cube, input_dims=dims, input_overlap=overlap))
        assert len(ours) == len(theirs) > 4
        for a, b in zip(ours, theirs, strict=True):
            assert a.dims == b.dims and a.dims[0] == "sample"
            xr.testing.assert_equal(a.reset_index("sample"), b.reset_index("sample"))


def test_preload_batch_false_keeps_chips_lazy() -> None:
    dataarray = xr.DataArray(np.arange(64 * 64).reshape(64, 64), dims=["y", "x"]).chunk(16)
    lazy = next(
        iter(
            IterableWrapper([dataarray]).slice_with_xbatcher(
                input_dims={"y": 32, "x": 32}, preload_batch=False
            )
        )
    )
    assert not isinstance(lazy.data, np.ndarray)  # still dask
    assert np.array_equal(lazy.values, dataarray.values[:32, :32])


def test_scenes_sliced_x_first_take_the_generic_path(s1_paths: list[Path]) -> None:
    reader = IterableWrapper(s1_paths[:1]).read_from_rioxarray(overview_level=3)
    planned = reader.slice_with_xbatcher(input_dims={"y": 512, "x": 512})
    generic = reader.slice_with_xbatcher(input_dims={"x": 512, "y": 512})
    assert planned.planned and not generic.planned
    assert len(planned) == len(generic) == 6
    by_corner = {(float(c.y[0]), float(c.x[0])): c for c in planned}
    for chip in generic:  # x outermost, as xbatcher orders them
        other = by_corner[(float(chip.y[0]), float(chip.x[0]))]
        assert np.array_equal(chip.transpose("band", "y", "x").values, other.values)


def test_generic_verbs_as_torchdata_documents() -> None:
    dp = IterableWrapper(range(10))
    assert list(dp.map(lambda x: x + 1).filter(lambda x: x % 2 == 0)) == [2, 4, 6, 8, 10]
    with pytest.raises(TypeError, match="doesn't have valid length"):
        len(dp.filter(bool))
    assert list(dp.header(3)) == [0, 1, 2] and len(dp.header(3)) == 3
    assert list(dp.batch(4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(dp.batch(3).unbatch()) == list(range(10))
    assert list(IterableWrapper([[[1], [2]], [[3]]]).unbatch(unbatch_level=-1)) == [1, 2, 3]
    assert list(dp.header(2).enumerate(starting_index=5)) == [(5, 0), (6, 1)]
    assert list(dp.header(2).concat(IterableWrapper("ab"))) == [0, 1, "a", "b"]
    assert list(dp.header(3).zip(IterableWrapper("ab"))) == [(0, "a"), (1, "b")]
    assert list(IterableWrapper("ab").zip_longest(dp.header(3))) == [
        ("a", 0),
        ("b", 1),
        (None, 2),
    ]
    assert list(dp.header(2).cycle(2)) == [0, 1, 0, 1] and len(dp.header(2).cycle(2)) == 4
    assert list(IterableWrapper(["ab", "c"]).flatmap()) == ["a", "b", "c"]
    pairs = IterableWrapper([(1, 2), (3, 4)])
    assert list(pairs.map(lambda x: x * 10, input_col=1)) == [(1, 20), (3, 40)]
    assert list(pairs.map(lambda a, b: a + b, input_col=[0, 1], output_col=-1)) == [
        (1, 2, 3),
        (3, 4, 7),
    ]
    shuffled = dp.shuffle(buffer_size=4).set_seed(7)
    assert sorted(shuffled) == list(range(10)) and list(shuffled) == list(shuffled)
    assert list(shuffled) != list(range(10)) and len(shuffled) == 10
    assert list(dp.shuffle().set_shuffle(False)) == list(range(10))
    collated = list(dp.batch(4).collate())
    assert [tuple(t.shape) for t in collated] == [(4,), (4,), (2,)]
    assert torch.equal(collated[0], torch.tensor([0, 1, 2, 3]))
    assert len(dp.set_length(4)) == 4 and list(dp.set_length(4)) == list(range(10))
    with pytest.raises(AttributeError, match="no attribute 'fork'; the DataPipe verbs"):
        dp.fork(2)


def test_in_memory_chips_through_a_dataloader_with_workers() -> None:
    arrays = [
        xr.DataArray(np.full((1, 64, 64), i, dtype="int16"), dims=["band", "y", "x"])
        for i in range(3)
    ]
    dp = (
        IterableWrapper(arrays)
        .slice_with_xbatcher(input_dims={"y": 32, "x": 32})
        .sharding_filter()
        .map(lambda chip: torch.as_tensor(chip.values))
        .batch(2)
        .collate(collate_fn=torch.stack)
    )
    assert len(dp) == 6
    batches = list(DataLoader(dataset=dp, batch_size=None, num_workers=2))
    values = sorted(int(t[0, 0, 0]) for batch in batches for t in batch)
    assert values == [0] * 4 + [1] * 4 + [2] * 4  # each chip once, none lost or doubled


@pytest.fixture(scope="module")
def s2_item() -> pystac.Item:
    catalog = pystac.Catalog.from_file(str(sample_catalog()))
    return next(i for i in catalog.get_items(recursive=True) if "sentinel2" in i.id)


def test_read_to_pystac_item(s2_item: pystac.Item) -> None:
    href = s2_item.get_self_href()
    dp = IterableWrapper(iterable=[href]).read_to_pystac_item()
    assert isinstance(PySTACItemReader(IterableWrapper([href])), PySTACItemReader)
    assert len(dp) == 1
    item = next(iter(dp))
    assert isinstance(item, pystac.Item) and item.id == s2_item.id
    assert item.bbox == s2_item.bbox and item.properties == s2_item.properties


def test_search_for_pystac_item_and_list_items_on_a_loopback_api(
    s2_item: pystac.Item,
) -> None:
    catalog = pystac.Catalog.from_file(str(sample_catalog()))
    items = [i.clone() for i in catalog.get_items(recursive=True)]
    for item in items:
        item.collection_id = "sample"
    west, south, east, north = s2_item.bbox
    query = {"bbox": [west, south, east, north], "collections": ["sample"]}
    with StacApiServer(items) as api:
        dp = IterableWrapper(iterable=[query]).search_for_pystac_item(catalog_url=api.url)
        assert len(dp) == 1
        search = next(iter(dp))
        assert isinstance(search, pystac_client.ItemSearch)
        found = [i.id for i in search.items()]
        expected = [
            i.id for i in items if shapely.box(*i.bbox).intersects(shapely.box(*s2_item.bbox))
        ]
        assert sorted(found) == sorted(expected) and s2_item.id in found
        listed = (
            IterableWrapper([query])
            .search_for_pystac_item(catalog_url=api.url)
            .list_pystac_items_by_search()
        )
        assert sorted(i.id for i in listed) == sorted(expected)


def test_stack_stac_items_on_the_items_grid(s2_item: pystac.Item) -> None:
    """zen3geo's test_stackstac_stacker: shape, dims, bounds, resolution, CRS of one item;
    the pixels equal a plain rasterio read."""
    import odc.geo.xr  # noqa: F401

    dp = IterableWrapper(iterable=[s2_item]).stack_stac_items(assets=["blue", "green", "red"])
    assert len(dp) == 1
    cube = next(iter(dp))
    with rasterio.open(s2_item.assets["red"].get_absolute_href()) as ds:
        bounds, shape, crs = tuple(ds.bounds), ds.shape, ds.crs
        window = ds.read(1, window=rasterio.windows.Window(100, 200, 64, 48))
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.shape == (1, 3, *shape)
    assert list(cube.band.values) == ["blue", "green", "red"]
    assert tuple(cube.odc.geobox.boundingbox) == bounds
    assert cube.odc.geobox.resolution.xy == (10.0, -10.0)
    assert cube.odc.geobox.crs == crs and list(cube.id.values) == [s2_item.id]
    assert np.array_equal(cube.isel(time=0, y=slice(200, 248), x=slice(100, 164))[2], window)
    with pytest.raises(InputError, match="stack_stac_items does not take rescale"):
        IterableWrapper([s2_item]).stack_stac_items(rescale=False)


def test_mosaic_dataarray() -> None:
    """zen3geo's test_stackstac_mosaicker, and stackstac's order: the last valid on top."""
    datacube = xr.DataArray(data=np.ones(shape=(3, 1, 32, 32)), dims=["tile", "band", "y", "x"])
    mosaic = next(iter(IterableWrapper([datacube]).mosaic_dataarray(dim="tile")))
    assert dict(mosaic.sizes) == {"band": 1, "y": 32, "x": 32}
    assert float(mosaic.sum()) == 1 * 32 * 32
    layers = xr.DataArray(np.array([[1.0, 1.0], [2.0, np.nan]]), dims=["time", "x"])
    assert list(next(iter(IterableWrapper([layers]).mosaic_dataarray())).values) == [2.0, 1.0]
    first = IterableWrapper([layers]).mosaic_dataarray(reverse=True)
    assert list(next(iter(first)).values) == [1.0, 1.0]


def test_read_from_pyogrio_and_clip_vector_with_rectangle(s1_paths: list[Path]) -> None:
    import pyogrio

    path = sample_labels_path()
    dp_vector = IterableWrapper([path]).read_from_pyogrio()
    assert len(dp_vector) == 1
    labels = next(iter(dp_vector))
    expected = pyogrio.read_dataframe(path)
    assert len(labels) == len(expected) and labels.crs == expected.crs == "EPSG:4326"
    west, south, east, north = labels.total_bounds
    middle = (west + east) / 2
    rasters = [
        xr.DataArray(
            np.zeros((1, 10, 10)),
            dims=["band", "y", "x"],
            coords={
                "x": np.linspace(a + (b - a) / 20, b - (b - a) / 20, 10),
                "y": np.linspace(north, south, 10),
            },
        ).rio.write_crs("EPSG:4326")
        for a, b in ((west, middle), (middle, east))
    ]
    clipped = list(dp_vector.clip_vector_with_rectangle(mask_datapipe=IterableWrapper(rasters)))
    assert len(clipped) == 2
    for (part, raster), (a, b) in zip(clipped, ((west, middle), (middle, east)), strict=True):
        assert part.total_bounds[0] >= a - 1e-9 and part.total_bounds[2] <= b + 1e-9
        assert raster is not None
        left, bottom, right, top = raster.rio.bounds()
        oracle = labels[labels.intersects(shapely.box(left, bottom, right, top))]
        assert len(part) == len(oracle)


def test_canvas_from_xarray() -> None:
    """zen3geo's test_datashader_canvas_dataset: plot_height/width from a Dataset."""
    dataset = xr.Dataset(
        data_vars={"temperature": (["y", "x"], 15 * np.ones(shape=(12, 8)))},
        coords={
            "y": (["y"], np.linspace(start=6, stop=0, num=12)),
            "x": (["x"], np.linspace(start=0, stop=4, num=8)),
        },
    )
    dp = IterableWrapper(iterable=[dataset]).canvas_from_xarray()
    assert len(dp) == 1
    canvas = next(iter(dp))
    assert (canvas.plot_height, canvas.plot_width) == (12, 8)
    assert canvas.x_range == pytest.approx(dataset.rio.bounds()[::2])
    assert canvas.crs is None


def test_rasterize_points_lines_and_polygons() -> None:
    """Counts per pixel for points, 1 where lines and polygons fall, north up, the
    canvas's CRS; the expected grids are drawn by hand."""
    import geopandas as gpd

    canvas = Canvas(plot_width=4, plot_height=3, x_range=(0.0, 40.0), y_range=(0.0, 30.0))
    canvas.crs = "EPSG:32631"
    points = gpd.GeoSeries(shapely.points([(5, 25), (6, 26), (35, 5), (40, 30)]), crs=32631)
    line = gpd.GeoSeries([shapely.LineString([(0, 15), (40, 15.0001)])], crs=32631)
    square = gpd.GeoSeries([shapely.box(10, 0, 30, 20)], crs=32631)
    dp = IterableWrapper([canvas]).rasterize_with_datashader(
        vector_datapipe=IterableWrapper([points])
    )
    raster = next(iter(dp))
    assert raster.dtype == np.uint32 and raster.dims == ("y", "x")
    assert raster.values.tolist() == [[2, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert raster.rio.crs.to_epsg() == 32631
    assert list(raster.y.values) == [25.0, 15.0, 5.0]
    lines = next(iter(DatashaderRasterizer(IterableWrapper([canvas]), IterableWrapper([line]))))
    assert lines.dtype == np.uint8 and lines.values.tolist() == [[0] * 4, [1] * 4, [0] * 4]
    boxes = next(
        iter(IterableWrapper([canvas]).rasterize_with_datashader(IterableWrapper([square])))
    )
    assert boxes.values.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    with pytest.raises(InputError, match="give 1 \\(for every canvas\\) or one per canvas"):
        IterableWrapper([canvas]).rasterize_with_datashader(
            vector_datapipe=IterableWrapper([points, points])
        )


def test_read_from_xpystac_opens_assets_with_xarray_engines(tmp_path: Path) -> None:
    dataset = xr.Dataset({"t": (["y", "x"], np.arange(6.0).reshape(2, 3))})
    path = tmp_path / "data.nc"
    dataset.to_netcdf(path)
    asset = pystac.Asset(href=str(path), media_type="application/netcdf")
    dp = IterableWrapper([asset]).read_from_xpystac(engine="netcdf4")
    assert len(dp) == 1
    xr.testing.assert_identical(next(iter(dp)).load(), dataset)
    with pytest.raises(InputError, match="engine='stac'\\) needs xpystac"):
        IterableWrapper([asset]).read_from_xpystac()


def test_planned_chips_under_map_and_sharding_filter_are_read_once(
    s1_paths: list[Path],
) -> None:
    """The planned chip stream splits work across workers by itself; a sharding_filter
    after it must not split again (no chip lost), and none is read twice."""
    dp = (
        IterableWrapper(s1_paths)
        .read_from_rioxarray(overview_level=3)
        .slice_with_xbatcher(input_dims={"y": 512, "x": 512})
        .map(lambda chip: (chip.attrs["scene_id"], float(chip.x[0]), float(chip.y[0])))
        .sharding_filter()
    )
    corners = [tuple(c) for c in DataLoader(dataset=dp, batch_size=None, num_workers=2)]
    assert len(corners) == len(set(corners)) == len(dp) == 12

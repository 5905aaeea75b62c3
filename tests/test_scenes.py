"""Scenes open from headers only: paths, URLs (range requests), STAC items; bad input is named."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from geochip.core.grid import Window
from geochip.errors import (
    BandNotFoundError,
    GridMismatchError,
    InputError,
    MissingGeoreferenceError,
    OverviewNotFoundError,
    RasterReadError,
)
from geochip.read.open import open_scene, open_scenes, scene_from_spec
from geochip.testing import make_cog, make_item
from geochip.testing.http import RangeServer

GRID = GeoBox.from_bbox((500_000, 4_000_000, 520_480, 4_010_240), "EPSG:32633", resolution=10)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    return make_cog(
        folder / "scene.tif",
        GRID,
        bands=3,
        dtype="uint16",
        tile=256,
        overviews=(2, 4),
        nodata=0,
        descriptions=["vv", "vh", "ratio"],
    )


@pytest.fixture
def server(cog: Path):
    with RangeServer(cog.parent) as srv:
        yield srv


@pytest.mark.parametrize("level", [None, 0, 1])
def test_grid_matches_rasterio_header_at_each_level(cog: Path, level: int | None) -> None:
    scene = open_scene(cog, overview_level=level)
    kwargs = {} if level is None else {"overview_level": level}
    with rasterio.open(cog, **kwargs) as ds:
        assert scene.geobox.shape.yx == ds.shape
        assert tuple(scene.geobox.affine)[:6] == tuple(ds.transform)[:6]
        assert scene.geobox.crs.epsg == ds.crs.to_epsg()
    assert scene.dtype == "uint16"
    assert scene.nodata == 0
    assert scene.band_names == ("vv", "vh", "ratio")
    assert scene.overviews == (2, 4)


def test_url_opens_with_range_requests_and_reads_headers_only(
    cog: Path, server: RangeServer
) -> None:
    scene = open_scene(server.url("scene.tif"), overview_level=1)
    assert scene.geobox == open_scene(cog, overview_level=1).geobox
    gets = [r for r in server.requests if r.method == "GET"]
    assert gets and all(r.range is not None for r in gets)
    fetched = 0
    for r in gets:
        start, end = (int(v) for v in r.range.split("=")[1].split("-"))
        fetched += end - start + 1
    assert fetched < cog.stat().st_size / 4  # headers, not pixels


def test_url_pixels_equal_local_pixels(cog: Path, server: RangeServer) -> None:
    remote = open_scene(server.url("scene.tif"))
    local = open_scene(cog)
    win = Window(100, 300, 256, 300)
    assert np.array_equal(remote.read(win), local.read(win))


def test_band_selection_by_name_and_number(cog: Path) -> None:
    scene = open_scene(cog, bands=["ratio", 1])
    assert scene.band_names == ("ratio", "vv")
    with rasterio.open(cog) as ds:
        expected = ds.read([3, 1], window=rasterio.windows.Window(5, 7, 64, 32))
    assert np.array_equal(scene.read(Window(7, 5, 32, 64)), expected)


def test_missing_band_lists_the_bands(cog: Path) -> None:
    with pytest.raises(BandNotFoundError, match=r"scene.tif: no band .*'hh'.*'1:vv', '2:vh'"):
        open_scene(cog, bands=["hh"])


def test_missing_overview_level_says_which_exist(cog: Path) -> None:
    with pytest.raises(
        OverviewNotFoundError, match=r"scene.tif: no overview level 5; it has levels 0, 1"
    ):
        open_scene(cog, overview_level=5)


def test_file_that_is_not_a_raster(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("not a tiff")
    with pytest.raises(InputError, match=r"notes.tif is not a raster GDAL can read"):
        open_scene(path)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_crs_or_transform(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), "uint8"))
    with pytest.raises(MissingGeoreferenceError, match=r"plain.tif: the raster has no CRS"):
        open_scene(path)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(RasterReadError, match=r"nope.tif does not exist"):
        open_scene(tmp_path / "nope.tif")


def test_unreachable_url_fails_quickly_and_names_the_url() -> None:
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from geochip.core.env import GdalEnv

    env = GdalEnv.default().with_retries(2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(RasterReadError, match=rf"127.0.0.1:{port}/a.tif could not be reached"):
        open_scene(f"http://127.0.0.1:{port}/a.tif", env=env)
    assert time.monotonic() - start < 20


def test_404_is_not_retried(server: RangeServer) -> None:
    with pytest.raises(RasterReadError, match=r"missing.tif does not exist \(HTTP 404\)"):
        open_scene(server.url("missing.tif"))
    assert len(server.requests) <= 3  # GDAL's request(s) and geochip's status probe


def test_item_by_asset_key(cog: Path) -> None:
    item = make_item("s1-item", {"vv": cog})
    scene = open_scene(item, asset="vv", bands=["vh"])
    assert scene.id == "s1-item"
    assert scene.band_names == ("vh",)


def test_item_assets_stack_as_bands(tmp_path: Path) -> None:
    a = make_cog(tmp_path / "b04.tif", GRID, bands=1, tile=256, pattern="random", seed=1)
    b = make_cog(tmp_path / "b08.tif", GRID, bands=1, tile=256, pattern="random", seed=2)
    item = make_item("s2", {"red": a, "nir": b})
    scene = open_scene(item, asset=["nir", "red"])
    assert scene.band_names == ("nir", "red")
    with rasterio.open(a) as red, rasterio.open(b) as nir:
        expected = np.concatenate([nir.read(), red.read()])
    assert np.array_equal(scene.read(), expected)


def test_item_assets_on_different_grids_are_refused(tmp_path: Path) -> None:
    a = make_cog(tmp_path / "a.tif", GRID, tile=256)
    coarse = GeoBox.from_bbox(GRID.extent.boundingbox, GRID.crs, resolution=20)
    b = make_cog(tmp_path / "b.tif", coarse, tile=256)
    item = make_item("mixed", {"a": a, "b": b})
    with pytest.raises(GridMismatchError, match=r"b.tif is on grid \(512, 1024\)"):
        open_scene(item, asset=["a", "b"])


def test_item_without_asset_choice_lists_assets(tmp_path: Path, cog: Path) -> None:
    item = make_item("two", {"x": cog, "y": cog})
    with pytest.raises(InputError, match=r"item two: say which asset to read.*'x', 'y'"):
        open_scene(item)


def test_item_collection_and_unique_ids(cog: Path) -> None:
    import pystac

    items = pystac.ItemCollection([make_item("same", {"vv": cog}), make_item("same", {"vv": cog})])
    scenes = open_scenes(items, asset="vv")
    assert [s.id for s in scenes] == ["same", "same-2"]


def test_scene_is_plain_data_and_reopens_from_its_spec(cog: Path) -> None:
    scene = open_scene(cog, overview_level=0, bands=["vh"])
    assert pickle.loads(pickle.dumps(scene)) == scene
    assert scene_from_spec(scene.to_spec()) == scene


def test_repr_and_errors_hide_url_secrets(server: RangeServer) -> None:
    url = server.url("scene.tif") + "?sig=SECRET123&se=2030"
    scene = open_scene(url)
    assert "SECRET123" not in repr(scene)
    with pytest.raises(OverviewNotFoundError) as err:
        open_scene(url, overview_level=9)
    assert "SECRET123" not in str(err.value)


def test_lazy_dataarray_reads_only_the_window(cog: Path) -> None:
    import odc.geo.xr  # noqa: F401 - the .odc accessor
    import rioxarray  # noqa: F401 - the .rio accessor

    da = open_scene(cog, overview_level=0).to_dataarray()
    part = da.isel(y=slice(10, 74), x=slice(20, 52))
    with rasterio.open(cog, overview_level=0) as ds:
        expected = ds.read(window=rasterio.windows.Window(20, 10, 32, 64))
    assert np.array_equal(part.values, expected)
    assert da.rio.crs.to_epsg() == 32633
    assert da.odc.geobox == open_scene(cog, overview_level=0).geobox

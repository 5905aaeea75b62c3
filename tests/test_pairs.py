"""LandCoverNet pairs: the chosen scenes stacked on the label grid, with the label."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import odc.stac
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from geochip.errors import GridMismatchError, InputError
from geochip.plan.chips import plan_chips
from geochip.store.reader import open_store
from geochip.store.writer import write_store
from geochip.testing import make_cog
from geochip.testing.cubes import make_s2_series
from geochip.workflows.pairs import make_pair

# a label grid that is NOT on the scenes' 10 m lattice: 5 m off, so scenes are resampled onto it
LABEL_GRID = GeoBox((64, 96), Affine(10, 0, 500_305, 0, -10, 4_999_705), "EPSG:32633")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("pairs")
    return make_s2_series(root, ["2024-03-01", "2024-06-01", "2024-09-01"], size=160, seed=5)


@pytest.fixture
def label(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(0).integers(1, 5, size=LABEL_GRID.shape.yx).astype("uint8")
    return make_cog(tmp_path / "label.tif", LABEL_GRID, data=data), data


def test_image_is_stacked_on_the_label_grid_like_odc_stac(scenes: list, label: tuple) -> None:
    path, data = label
    pair = make_pair(scenes, path, ["red", "nir", "swir16"], resampling="bilinear", chunks=32)
    assert pair.geobox == LABEL_GRID
    assert pair.image.shape == (3, 3, 64, 96)
    np.testing.assert_array_equal(pair.label, data)
    ref = odc.stac.load(
        scenes,
        bands=["red", "nir", "swir16"],
        geobox=LABEL_GRID,
        resampling="bilinear",
        groupby="solar_day",
        chunks={"x": 32, "y": 32},
    )
    for band in ("red", "nir", "swir16"):
        np.testing.assert_array_equal(pair.image.sel(band=band).values, ref[band].values)


def test_scaled_pair_is_float32_reflectance_clipped(scenes: list, label: tuple) -> None:
    path, _ = label
    pair = make_pair(scenes, path, ["red"], scale=True, clip=(0, 1), mask="scl")
    raw = make_pair(scenes, path, ["red", "scl"])
    values = pair.image.values
    assert values.dtype == np.float32
    scl = raw.image.sel(band="scl").values
    cloud = np.isin(scl, [0, 1, 3, 8, 9, 10])
    assert np.isnan(values[:, 0][cloud]).all()  # masked pixels are NaN, not 0
    red = raw.image.sel(band="red").values[~cloud] * 1e-4 - 0.1
    np.testing.assert_allclose(values[:, 0][~cloud], np.clip(red, 0, 1), rtol=1e-6)


def test_a_forced_grid_that_differs_from_the_label_is_refused(scenes: list, label: tuple) -> None:
    path, _ = label
    other = GeoBox((64, 96), Affine(10, 0, 500_300, 0, -10, 4_999_700), "EPSG:32633")
    with pytest.raises(GridMismatchError, match=r"0\.5 rows, 0\.5 columns off"):
        make_pair(scenes, path, ["red"], geobox=other)


def test_vector_label_needs_a_grid_and_is_rasterised(scenes: list, tmp_path: Path) -> None:
    shapes = gpd.GeoDataFrame(
        {"class": ["crop"]}, geometry=[box(500_400, 4_999_200, 500_800, 4_999_600)], crs=32633
    ).to_crs(4326)
    path = tmp_path / "fields.geojson"
    shapes.to_file(path)
    with pytest.raises(InputError, match="a vector label has no grid of its own"):
        make_pair(scenes, path, ["red"], class_map={"crop": 1})
    pair = make_pair(scenes, path, ["red"], geobox=LABEL_GRID, class_map={"crop": 1})
    assert pair.report.burned == 1 and pair.report.reprojected
    assert 1500 < int(pair.label.sum()) < 1700  # 40 x 40 pixels, give or take the edges


def test_pair_goes_into_a_chip_store(scenes: list, label: tuple, tmp_path: Path) -> None:
    path, data = label
    pair = make_pair(scenes, path, ["red", "nir"])
    plan = plan_chips(pair.geobox, 32, grid_id="label-1")
    out = write_store(tmp_path / "ds", plan, {"label-1": pair.chip_source()})
    store = open_store(out)
    assert store.image.shape == (6, 3, 2, 32, 32)  # (chip, time, band, y, x)
    image, mask = store.read(4)  # row 32, col 32
    np.testing.assert_array_equal(mask, data[32:64, 32:64])
    np.testing.assert_array_equal(image, pair.image.values[:, :, 32:64, 32:64])
    assert list(store.index["item_ids"].iloc[0]) == [s.id for s in scenes]

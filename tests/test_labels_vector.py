"""Vector labels from files: rasterised like rasterio.features.rasterize, CRS checked."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import Polygon, box

from geochip.errors import CRSMismatchError, InputError
from geochip.read.labels import rasterize_vector_labels, read_vector_labels

GRID = GeoBox((60, 80), Affine(10, 0, 500_000, 0, -10, 4_000_600), "EPSG:32633")
CLASSES = {"water": 1, "forest": 2, "urban": 3}


def _shapes() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "class": ["water", "forest", "urban"],
            "geometry": [
                box(500_015, 4_000_015, 500_333, 4_000_297),
                Polygon([(500_300, 4_000_100), (500_790, 4_000_150), (500_500, 4_000_590)]),
                box(500_101, 4_000_401, 500_203, 4_000_557),
            ],
        },
        crs="EPSG:32633",
    )


def _oracle(shapes: gpd.GeoDataFrame, all_touched: bool, background: int = 0) -> np.ndarray:
    pairs = [(g, CLASSES[c]) for g, c in zip(shapes.geometry, shapes["class"], strict=True)]
    return rasterio.features.rasterize(
        pairs,
        out_shape=GRID.shape.yx,
        transform=GRID.affine,
        fill=background,
        all_touched=all_touched,
        dtype="uint8",
    )


def _write(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    return path


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".shp", ".parquet"])
@pytest.mark.parametrize("all_touched", [False, True])
def test_each_format_rasterises_like_rasterio(
    tmp_path: Path, suffix: str, all_touched: bool
) -> None:
    path = _write(_shapes(), tmp_path / f"labels{suffix}")
    got, report = rasterize_vector_labels(path, GRID, CLASSES, all_touched=all_touched)
    np.testing.assert_array_equal(got, _oracle(_shapes(), all_touched))
    assert report.burned == 3 and report.empty == 0 and report.invalid == 0


def test_background_value(tmp_path: Path) -> None:
    path = _write(_shapes(), tmp_path / "labels.gpkg")
    got, _ = rasterize_vector_labels(path, GRID, CLASSES, background=9)
    np.testing.assert_array_equal(got, _oracle(_shapes(), False, background=9))
    assert (got == 9).any()


def test_labels_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    path = _write(_shapes().to_crs(4326), tmp_path / "labels.geojson")
    got, report = rasterize_vector_labels(path, GRID, CLASSES)
    assert report.reprojected
    want = _oracle(_shapes(), False)
    # a round trip through degrees moves edges by far less than a pixel: nearly every pixel agrees
    assert (got == want).mean() > 0.995


def test_labels_in_another_crs_are_refused_when_asked(tmp_path: Path) -> None:
    path = _write(_shapes().to_crs(3857), tmp_path / "labels.gpkg")
    with pytest.raises(CRSMismatchError, match=r"labels are in EPSG:3857 but the grid is in"):
        rasterize_vector_labels(path, GRID, CLASSES, on_crs_mismatch="raise")


def test_invalid_and_empty_geometries_are_counted(tmp_path: Path) -> None:
    bowtie = Polygon([(500_000, 4_000_000), (500_100, 4_000_100), (500_100, 4_000_000),
                      (500_000, 4_000_100)])  # fmt: skip
    shapes = gpd.GeoDataFrame(
        {
            "class": ["water", "forest", "urban"],
            "geometry": [bowtie, Polygon(), _shapes().geometry[2]],
        },
        crs="EPSG:32633",
    )
    path = _write(shapes, tmp_path / "labels.gpkg")
    with pytest.raises(InputError, match=r"1 label geometries are invalid \(index \[0\]\)"):
        rasterize_vector_labels(path, GRID, CLASSES)
    got, report = rasterize_vector_labels(path, GRID, CLASSES, skip_invalid=True)
    assert (report.burned, report.empty, report.invalid, report.invalid_ids) == (1, 1, 1, (0,))
    assert set(np.unique(got)) == {0, 3}


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"unsupported label file type '.csv'"):
        read_vector_labels(tmp_path / "labels.csv")
    with pytest.raises(InputError, match="no label file at"):
        read_vector_labels(tmp_path / "nope.gpkg")

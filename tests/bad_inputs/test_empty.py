"""Input that covers nothing or would produce nothing (issue 11, part 4): refused before any
work starts, with a named error, leaving no output folder or file behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, box

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.errors import ConfigError, EmptyInputError, GridMismatchError, NoOverlapError
from geochip.testing import make_cog
from geochip.testing.catalogs import make_scene_catalog, scene_config, scene_grid
from geochip.workflows.timeseries import TimeseriesConfig, run_timeseries

SECRET = "planted-header-secret-93c1"
# the sample Landsat scene (UTM 16N) covers this point
INSIDE = "POINT (-87.45 30.75)"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 128 x 128 scene in UTM 33N (x 500000..501280, y 4000000..4001280)."""
    return make_scene_catalog(tmp_path_factory.mktemp("scenes"), size=128)


def _timeseries(catalog: Path, geoms: str, out: Path, *extra: str) -> list[str]:
    return [
        "timeseries", geoms, "--catalog", str(catalog), "--bands", "red",
        "--crs", "EPSG:32616", "--resolution", "30", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _labels(path: Path, shapes: list, crs: int = 32633) -> Path:
    gpd.GeoDataFrame({"class": ["a"] * len(shapes)}, geometry=shapes, crs=crs).to_file(path)
    return path


def _build_config(tmp_path: Path, scenes: Path, labels: Path, **chips: object) -> Path:
    cfg = scene_config(scenes, tmp_path / "ds", labels={"path": str(labels), "classes": {"a": 1}})
    cfg["chips"] = {**cfg["chips"], **chips}
    path = tmp_path / "build.json"
    path.write_text(json.dumps(cfg))
    return path


# -- time series: geometries that hold nothing --------------------------------------------


def test_timeseries_of_an_empty_geojson(refuse, sample_catalog_path: Path, tmp_path: Path) -> None:
    geoms = tmp_path / "none.geojson"
    geoms.write_text('{"type": "FeatureCollection", "features": []}')
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, str(geoms), out),
        error="EmptyInputError",
        message="no geometries in",
        outputs=[out],
    )


def test_timeseries_of_a_zero_byte_file(refuse, sample_catalog_path: Path, tmp_path: Path) -> None:
    geoms = tmp_path / "zero.geojson"
    geoms.touch()
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, str(geoms), out),
        error="EmptyInputError",
        message="is empty (0 bytes)",
        outputs=[out],
    )


def test_timeseries_of_a_file_that_is_no_vector_file(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    geoms = tmp_path / "broken.geojson"
    geoms.write_text("this is not GeoJSON")
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, str(geoms), out),
        error="InputError",
        message="cannot read the geometry file",
        outputs=[out],
    )


def test_timeseries_of_null_geometries_only(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    geoms = tmp_path / "null.geojson"
    feature = {"type": "Feature", "properties": {"id": "a"}, "geometry": None}
    geoms.write_text(json.dumps({"type": "FeatureCollection", "features": [feature] * 1}))
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, str(geoms), out),
        error="EmptyInputError",
        message="all 1 of them are null or empty",
        outputs=[out],
    )


def test_run_timeseries_of_an_empty_frame_makes_no_folder(
    sample_catalog_path: Path, tmp_path: Path
) -> None:
    config = TimeseriesConfig(
        catalog=str(sample_catalog_path), bands=("red",), crs="EPSG:32616", resolution=30
    )
    empty = gpd.GeoDataFrame({"id": []}, geometry=[], crs=4326)
    with pytest.raises(EmptyInputError, match="no geometries in GeoDataFrame"):
        run_timeseries(empty, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- time series: numbers that make no sense, refused before the first geometry ---------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--buffer", "-100", "--buffer-unit", "m"], "buffer must be >= 0"),
        (["--buffer", "0.01"], "buffer 0.01 has no unit"),
        (["--max-cloud", "150"], "max_cloud is a percentage (0..100), got 150.0"),
        (["--gapfill", "linear", "--max-gap", "-1"], "max_gap must be >= 0 steps"),
        (["--mode", "patch", "--size", "8", "8", "--buffer", "100", "--buffer-unit", "m"],
         "mode 'patch' has a fixed size"),
        (["--datetime", "2016-13-45"], "2016-13-45"),
    ],
)  # fmt: skip
def test_timeseries_numbers_are_refused_before_any_geometry(
    refuse, sample_catalog_path: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, INSIDE, out, *extra),
        error="ConfigError",
        message=message,
        outputs=[out],
    )


def test_an_api_key_variable_that_is_not_set(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    refuse(
        *_timeseries(sample_catalog_path, INSIDE, out, "--api-key-env", "GEOCHIP_NOT_SET_77"),
        error="ConfigError",
        message="variable GEOCHIP_NOT_SET_77 (for header x-api-key) is not set",
        outputs=[out],
    )


def test_a_secret_header_on_the_command_line(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = refuse(
        *_timeseries(sample_catalog_path, INSIDE, out, "--header", f"X-Api-Key: {SECRET}"),
        error="ConfigError",
        message="X-Api-Key holds a secret; take it from the environment",
        outputs=[out],
    )
    assert SECRET not in result.stdout + result.stderr


# -- build: labels that cover nothing --------------------------------------------------------


def test_build_with_labels_outside_every_scene(refuse, scenes: Path, tmp_path: Path) -> None:
    labels = _labels(tmp_path / "far.geojson", [box(600_000, 4_100_000, 600_100, 4_100_100)])
    refuse(
        "build",
        str(_build_config(tmp_path, scenes, labels)),
        "--no-progress",
        error="NoOverlapError",
        message="none of the 1 shapes",
        outputs=[tmp_path / "ds"],
    )


def test_build_with_an_empty_label_file(refuse, scenes: Path, tmp_path: Path) -> None:
    labels = tmp_path / "none.geojson"
    labels.write_text('{"type": "FeatureCollection", "features": []}')
    refuse(
        "build",
        str(_build_config(tmp_path, scenes, labels)),
        "--no-progress",
        error="EmptyInputError",
        message="holds no shape",
        outputs=[tmp_path / "ds"],
    )


def test_labels_on_the_scene_but_on_no_chip(scenes: Path, tmp_path: Path) -> None:
    # chips of 48 px with edge 'drop' cover 96 of the scene's 128 px: a shape in the last
    # 32 px (x > 500960 m, or y < 4000320 m) lies on the scene but on no chip
    shape = box(501_000, 4_000_000, 501_200, 4_000_200)
    labels = _labels(tmp_path / "edge.geojson", [shape])
    config = json.loads(_build_config(tmp_path, scenes, labels, size=48).read_text())
    config["split"] = {"method": "none"}
    with pytest.raises(NoOverlapError, match=r"none of the 1 shapes .* overlaps any of the 4"):
        build(parse_config(config), progress=False)
    assert not (tmp_path / "ds").exists()


def test_geometries_for_a_build_in_degrees_written_as_metres(tmp_path: Path) -> None:
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[Point(15.0, 36.1)], crs=4326).to_file(points)
    config = {
        "sources": {"kind": "sample"},
        "bands": ["red"],
        "chips": {"size": 8},
        "grid": {
            "crs": "EPSG:32633",
            "resolution": 10,
            "geometries": {"path": str(points), "mode": "box", "buffer": 0.01},
        },
        "output": {"path": str(tmp_path / "ds")},
    }
    with pytest.raises(ConfigError, match="buffer 0.01 m is less than a metre"):
        parse_config(config)


@pytest.mark.parametrize(
    ("on_mismatch", "error", "message"),
    [
        ("reproject", NoOverlapError, "the label raster overlaps none of the 1 grids"),
        ("raise", GridMismatchError, "640 columns off"),
    ],
)
def test_a_label_raster_beside_every_scene(
    scenes: Path, tmp_path: Path, on_mismatch: str, error: type, message: str
) -> None:
    # on the scenes' pixel lattice, 5 scenes to the east: it overlaps no grid
    raster = make_cog(tmp_path / "labels.tif", scene_grid(5, 128), dtype="uint8", nodata=255)
    labels = {"kind": "raster", "path": str(raster), "on_mismatch": on_mismatch}
    config = scene_config(scenes, tmp_path / "ds", labels=labels)
    with pytest.raises(error, match=message):
        build(parse_config(config), progress=False)
    assert not (tmp_path / "ds").exists()


def test_timeseries_where_no_geometry_has_a_scene_exits_1(
    sample_catalog_path: Path, tmp_path: Path
) -> None:
    # the search runs per geometry, so this cannot be known up front; but a run that wrote
    # nothing does not end as a success
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "geochip", *_timeseries(sample_catalog_path, "POINT (10 50)", out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing written: none of the 1 geometries has a scene" in result.stderr
    assert not list(out.glob("*.nc"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "empty": 1, "failed": 0, "skipped": 0}


def test_search_refuses_a_bearer_token_on_the_command_line(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "items.json"
    result = refuse(
        "search", "--catalog", str(sample_catalog_path), "--out", str(out),
        "--header", f"Authorization: Bearer {SECRET}",
        error="ConfigError",
        message="Authorization holds a secret",
        outputs=[out],
    )  # fmt: skip
    assert SECRET not in result.stdout + result.stderr

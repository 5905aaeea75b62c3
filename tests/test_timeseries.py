"""Time series per geometry (SITS) on a static catalog of generated Sentinel-2-like COGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import odc.stac
import pytest
import xarray as xr
from shapely.geometry import Point, box

from geochip.core.grid import point_geobox
from geochip.testing import make_catalog
from geochip.testing.cubes import make_s2_series
from geochip.workflows.timeseries import TimeseriesConfig, geometry_grid, run_timeseries

DATES = ["2024-05-01", "2024-05-11", "2024-05-21", "2024-05-31"]
BANDS = ("red", "nir", "swir16")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("s2cat")
    items = make_s2_series(root / "data", DATES, size=256, seed=3)
    return make_catalog(root, items, collection="s2-like"), items


def _points() -> gpd.GeoDataFrame:
    # inside the tile (UTM 33N, x 500000..502560, y 4997440..5000000)
    utm = [Point(500_400, 4_999_500), Point(501_900, 4_999_300)]
    gdf = gpd.GeoDataFrame({"id": ["p1", "p2"]}, geometry=utm, crs=32633)
    return gdf.to_crs(4326)


def _config(catalog: Path, **kw: object) -> TimeseriesConfig:
    base = {
        "catalog": str(catalog),
        "bands": BANDS,
        "crs": "EPSG:3035",
        "resolution": 20,
        "datetime": "2024-05",
        "mode": "patch",
        "size": (10, 6),
        "mask": "scl:0,1,3,8,9,10",
        "resampling": "nearest",
    }
    base.update(kw)
    return TimeseriesConfig(**base)  # type: ignore[arg-type]


def test_patch_files_have_size_crs_and_transform(catalog: tuple, tmp_path: Path) -> None:
    import rioxarray  # noqa: F401  (registers .rio)

    cat, _ = catalog
    config = _config(cat)
    summary = run_timeseries(_points(), config, tmp_path)
    assert summary.counts == {"done": 2, "skipped": 0, "empty": 0, "failed": 0}
    for gid, geom in zip(_points()["id"], _points().geometry, strict=True):
        ds = xr.open_dataset(tmp_path / f"{gid}.nc", decode_coords="all")
        expected = point_geobox(geom, "EPSG:3035", 20, {"y": 6, "x": 10})
        assert ds.red.shape == (4, 6, 10)
        assert ds.rio.crs.to_epsg() == 3035
        assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(expected.affine)[:6])
        assert ds.odc.geobox == expected


def test_masked_values_match_an_independent_load(catalog: tuple, tmp_path: Path) -> None:
    cat, items = catalog
    config = _config(cat)
    run_timeseries(_points().iloc[:1], config, tmp_path)
    from geochip.store.cubes import open_cube

    got = open_cube(tmp_path / "p1.nc")
    grid = geometry_grid(_points().geometry.iloc[0].__geo_interface__, config)
    ref = odc.stac.load(
        items, bands=[*BANDS, "scl"], geobox=grid, resampling="nearest", groupby="solar_day"
    )
    cloud = np.isin(ref.scl.values, [0, 1, 3, 8, 9, 10])
    assert cloud.any() and not cloud.all()  # the fixture has clouds here, and clear pixels
    for band in BANDS:
        expected = np.where(cloud, 0, ref[band].values)
        np.testing.assert_array_equal(got[band].values, expected)
    np.testing.assert_allclose(got["masked_fraction"].values, cloud.mean(axis=(1, 2)))


def test_rerun_skips_written_geometries(catalog: tuple, tmp_path: Path) -> None:
    cat, _ = catalog
    config = _config(cat)
    run_timeseries(_points(), config, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.nc")}
    summary = run_timeseries(_points(), config, tmp_path)
    assert summary.counts["skipped"] == 2 and summary.counts["done"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.nc")} == before
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["skipped"] == 2


def test_empty_and_failed_geometries_are_reported_with_reasons(
    catalog: tuple, tmp_path: Path
) -> None:
    cat, _ = catalog
    far = gpd.GeoDataFrame({"id": ["far"]}, geometry=[Point(-60.0, -10.0)], crs=4326)
    gdf = gpd.GeoDataFrame(
        {"id": ["p1", "far"]},
        geometry=[_points().geometry.iloc[0], far.geometry.iloc[0]],
        crs=4326,
    )
    bad = _config(cat, bands=("red", "nir99"))
    summary = run_timeseries(gdf, bad, tmp_path)
    by_id = {r.id: r for r in summary.results}
    assert by_id["far"].status == "empty" and "no scene" in by_id["far"].reason
    assert by_id["p1"].status == "failed"
    assert "nir99" in by_id["p1"].reason and "'nir'" in by_id["p1"].reason
    assert not list(tmp_path.glob("*.nc")) and not list(tmp_path.glob(".*partial"))


def test_image_mode_with_buffer_in_metres_covers_the_buffered_box(
    catalog: tuple, tmp_path: Path
) -> None:
    cat, _ = catalog
    config = _config(cat, mode="image", size=None, buffer=200, buffer_unit="m", format="zarr")
    gdf = _points().iloc[:1]
    run_timeseries(gdf, config, tmp_path)
    ds = xr.open_zarr(tmp_path / "p1.zarr", decode_coords="all")
    assert ds.odc.geobox.crs.epsg == 3035
    # a 200 m buffer around a point: 400 m across at 20 m, plus at most one pixel of snapping
    assert 20 <= ds.sizes["x"] <= 21 and 20 <= ds.sizes["y"] <= 21
    assert ds.odc.geobox.affine.c % 20 == 0  # pixel edges on the 20 m lattice


def test_gapfill_leaves_no_masked_value_between_clear_observations(
    catalog: tuple, tmp_path: Path
) -> None:
    cat, _ = catalog
    config = _config(cat, gapfill="linear")
    run_timeseries(_points().iloc[1:], config, tmp_path)  # p2: clouds on dates 1 and 3
    ds = xr.open_dataset(tmp_path / "p2.nc")
    red = ds.red.values  # float32: linear filling makes fractions
    assert red.dtype == np.float32
    valid = ~np.isnan(red)
    first = valid.argmax(axis=0)
    last = red.shape[0] - 1 - valid[::-1].argmax(axis=0)
    t = np.arange(red.shape[0])[:, None, None]
    inside = (t >= first) & (t <= last) & valid.any(axis=0)
    assert valid[inside].all()
    assert int(ds.gap_filled.sum()) > 0


def test_dask_cluster_gives_the_same_files_as_threads(catalog: tuple, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    cat, _ = catalog
    config = _config(cat)
    run_timeseries(_points(), config, tmp_path / "threads", workers=2)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        summary = run_timeseries(_points(), config, tmp_path / "dask", client=client)
        assert summary.counts["done"] == 2
        workers = {r.id for r in summary.results}
        assert workers == {"p1", "p2"}
    for gid in ("p1", "p2"):
        a = xr.open_dataset(tmp_path / "threads" / f"{gid}.nc")
        b = xr.open_dataset(tmp_path / "dask" / f"{gid}.nc")
        xr.testing.assert_identical(a[list(BANDS)], b[list(BANDS)])


def test_geometry_ids_must_be_safe_file_names(catalog: tuple, tmp_path: Path) -> None:
    from geochip.errors import InputError

    cat, _ = catalog
    gdf = gpd.GeoDataFrame({"id": ["../evil"]}, geometry=[box(15, 45, 15.01, 45.01)], crs=4326)
    with pytest.raises(InputError, match=r"cannot be file names"):
        run_timeseries(gdf, _config(cat), tmp_path)


def test_cli_writes_files_and_prints_the_summary(catalog: tuple, tmp_path: Path) -> None:
    cat, _ = catalog
    geoms = tmp_path / "points.geojson"
    _points().to_file(geoms)
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "geochip", "timeseries", str(geoms), "--catalog", str(cat),
        "--datetime", "2024-05", "--bands", "red,nir", "--crs", "EPSG:3035",
        "--resolution", "20", "--mode", "patch", "--size", "10", "6",
        "--mask", "scl:0,1,3,8,9,10", "--gapfill", "linear", "--format", "nc",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "done 2, skipped 0" in result.stdout
    assert sorted(p.name for p in out.glob("*.nc")) == ["p1.nc", "p2.nc"]


@pytest.mark.parametrize(
    ("buffer", "unit", "match"),
    [(200, "deg", "more than 500 km"), (0.01, "m", "less than a metre")],
)
def test_a_buffer_in_the_wrong_unit_is_refused(buffer: float, unit: str, match: str) -> None:
    from geochip.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        TimeseriesConfig(
            catalog="c", bands=("red",), crs="EPSG:3035", resolution=20, buffer=buffer,
            buffer_unit=unit,
        )  # fmt: skip


def test_patch_mode_needs_a_size() -> None:
    from geochip.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mode 'patch' needs \(dimx, dimy\)"):
        TimeseriesConfig(catalog="c", bands=("red",), crs="EPSG:3035", resolution=20, mode="patch")


def test_secrets_in_the_catalog_url_stay_out_of_the_files(
    catalog: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geochip.workflows import timeseries
    from geochip.workflows.timeseries import _build

    cat, _ = catalog
    signed = TimeseriesConfig(**{**_config(cat).__dict__, "catalog": f"{cat}?sig=SECRET123"})
    # a file on disk cannot take a query string: open the real catalog behind the signed href
    real_open = timeseries.open_catalog
    monkeypatch.setattr(
        timeseries, "open_catalog", lambda href, **kw: real_open(str(href).split("?")[0], **kw)
    )
    path = tmp_path / "p1.nc"
    status, _, _ = _build("p1", _points().geometry.iloc[0].__geo_interface__, signed, path)
    assert status == "done"
    text = xr.open_dataset(path).attrs["geochip_config"]
    assert "SECRET123" not in text and "sig=REDACTED" in text

"""Time series per geometry (SITS) against a real STAC API: ``rustac serve`` on loopback.

The scenes are generated multi-date Sentinel-2-like COGs (geochip.testing.cubes) served over
HTTP with range requests; the API holds items whose assets point at those URLs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import odc.stac
import pystac
import pytest
from shapely.geometry import Point

from geochip.store.cubes import open_cube
from geochip.testing.cubes import make_s2_series
from geochip.testing.rustac import RustacServer, free_port
from geochip.testing.stac_api import StacApiServer
from geochip.workflows.timeseries import TimeseriesConfig, geometry_grid, run_timeseries

DATES = ["2024-05-01", "2024-05-11", "2024-05-21"]
BANDS = ("red", "nir")
SCL_CLOUD = [0, 1, 3, 8, 9, 10]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[pystac.Item]]]:
    """(URL of a rustac API holding the scenes with HTTP asset hrefs, the local items)."""
    root = tmp_path_factory.mktemp("s2api")
    items = make_s2_series(root, DATES, size=128, seed=3, bands=("red", "nir", "scl"))
    with StacApiServer(files_root=root) as files:
        remote = []
        for item in items:
            clone = item.clone()
            for asset in clone.assets.values():
                asset.href = files.file_url(asset.href)
            remote.append(clone)
        with RustacServer(remote) as server:
            yield server.url, items


def _geometries(*ids: str) -> gpd.GeoDataFrame:
    # inside the tile (UTM 33N, x 500000..501280, y 4998720..5000000), and one far away
    where = {
        "p1": Point(500_400, 4_999_500),
        "p2": Point(501_000, 4_999_100),
        "far": gpd.GeoSeries([Point(-60.0, -10.0)], crs=4326).to_crs(32633).iloc[0],
    }
    gdf = gpd.GeoDataFrame({"id": list(ids)}, geometry=[where[i] for i in ids], crs=32633)
    return gdf.to_crs(4326)


def _config(catalog: str, **kw: object) -> TimeseriesConfig:
    base: dict[str, object] = {
        "catalog": catalog,
        "bands": BANDS,
        "crs": "EPSG:3035",
        "resolution": 20,
        "datetime": "2024-05",
        "mode": "patch",
        "size": (10, 6),
        "mask": "scl:" + ",".join(map(str, SCL_CLOUD)),
        "resampling": "nearest",
    }
    base.update(kw)
    return TimeseriesConfig(**base)  # type: ignore[arg-type]


def test_series_from_the_api_match_an_independent_load(
    api: tuple[str, list[pystac.Item]], tmp_path: Path
) -> None:
    url, items = api
    config = _config(url)
    gdf = _geometries("p1", "p2")
    summary = run_timeseries(gdf, config, tmp_path, workers=2)  # one catalog, two threads
    assert summary.counts == {"done": 2, "skipped": 0, "empty": 0, "failed": 0}
    for gid, geom in zip(gdf["id"], gdf.geometry, strict=True):
        got = open_cube(tmp_path / f"{gid}.nc")
        grid = geometry_grid(geom.__geo_interface__, config)
        ref = odc.stac.load(  # the local files, read by odc-stac directly
            items, bands=[*BANDS, "scl"], geobox=grid, resampling="nearest", groupby="solar_day"
        )
        cloud = np.isin(ref.scl.values, SCL_CLOUD)
        assert got.sizes["time"] == len(DATES)
        for band in BANDS:
            np.testing.assert_array_equal(got[band].values, np.where(cloud, 0, ref[band].values))
        np.testing.assert_allclose(got["masked_fraction"].values, cloud.mean(axis=(1, 2)))


def test_a_geometry_the_api_has_no_scene_for_is_reported_empty(
    api: tuple[str, list[pystac.Item]], tmp_path: Path
) -> None:
    url, _ = api
    summary = run_timeseries(_geometries("p1", "far"), _config(url), tmp_path)
    by_id = {r.id: r for r in summary.results}
    assert by_id["p1"].status == "done"
    assert by_id["far"].status == "empty"
    assert by_id["far"].reason.startswith("no scene")
    assert "intersects=Polygon in [-60.0" in by_id["far"].reason  # the grid's footprint
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == ["p1.nc"]


def test_a_datetime_outside_the_series_is_reported_empty_for_every_geometry(
    api: tuple[str, list[pystac.Item]], tmp_path: Path
) -> None:
    url, _ = api
    summary = run_timeseries(_geometries("p1", "p2"), _config(url, datetime="2023"), tmp_path)
    assert summary.counts == {"done": 0, "skipped": 0, "empty": 2, "failed": 0}
    assert all("datetime=2023-01-01" in r.reason for r in summary.results)


def test_an_unreachable_api_fails_every_geometry_with_the_reason(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    start = time.monotonic()
    summary = run_timeseries(
        _geometries("p1", "p2", "far"), _config(url, retries=2, timeout=2), tmp_path
    )
    assert time.monotonic() - start < 15
    assert summary.counts == {"done": 0, "skipped": 0, "empty": 0, "failed": 3}
    for result in summary.results:
        assert result.reason.startswith("CatalogUnreachableError: cannot reach http://127.0.0.1")
        assert "after 3 attempts" in result.reason and "Connection refused" in result.reason
    assert (tmp_path / "summary.json").exists()
    assert not list(tmp_path.glob("*.nc"))


class _SilentServer:
    """Accepts TCP connections on loopback and never answers (a hung API); counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections.append(conn)

    def __enter__(self) -> _SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.sock.close()


def test_a_hung_api_costs_its_timeouts_once_not_once_per_geometry(tmp_path: Path) -> None:
    gdf = _geometries("p1", "p2", "far")
    with _SilentServer() as server:
        start = time.monotonic()
        summary = run_timeseries(gdf, _config(server.url, retries=1, timeout=1), tmp_path)
        elapsed = time.monotonic() - start
        attempts = len(server.connections)
    assert summary.counts["failed"] == 3
    assert all("timed out" in r.reason and "after 2 attempts" in r.reason for r in summary.results)
    assert attempts == 2  # retries + 1, for the whole run
    assert elapsed < 10  # two 1 s timeouts and a backoff, not three geometries' worth


def test_geometries_already_written_stay_skipped_when_the_api_is_down(
    api: tuple[str, list[pystac.Item]], tmp_path: Path
) -> None:
    url, _ = api
    run_timeseries(_geometries("p1"), _config(url), tmp_path)
    down = f"http://127.0.0.1:{free_port()}/"
    summary = run_timeseries(_geometries("p1", "p2"), _config(down, retries=0), tmp_path)
    by_id = {r.id: r.status for r in summary.results}
    assert by_id == {"p1": "skipped", "p2": "failed"}


def test_cli_reports_an_unreachable_api_and_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    args = [
        sys.executable, "-m", "geochip", "timeseries", "POINT (15.01 45.1)", "--catalog", url,
        "--bands", "red", "--crs", "EPSG:3035", "--resolution", "20", "--mode", "patch",
        "--size", "4", "4", "--retries", "0", "--timeout", "2", "--out", str(tmp_path),
        "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed 1" in result.stdout
    assert "cannot reach" in result.stdout

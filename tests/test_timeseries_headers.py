"""``geochip timeseries`` against a STAC API that needs a key (issue 11, part 5).

A real loopback STAC API (:class:`geochip.testing.stac_api.StacApiServer`) answers 401 to
any request without the planted key; it also serves the scenes (HTTP range requests). The
key comes from the environment (``--api-key-env`` / ``--header-env``, or ``headers_env``
in the API) and must reach every catalog request, and never the output files, the
summary, the printed output, the logs, or what is shipped to a Dask worker.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point

from geochip.store.cubes import open_cube
from geochip.testing.cubes import make_s2_series
from geochip.testing.stac_api import StacApiServer
from geochip.workflows.timeseries import TimeseriesConfig, run_timeseries

KEY = "planted-api-key-5d21c9e7"
WRONG = "planted-wrong-key-0b7f"
DATES = ["2024-05-01", "2024-05-11"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacApiServer]:
    root = tmp_path_factory.mktemp("keyed")
    items = make_s2_series(root, DATES, size=64, seed=5, bands=("red", "nir"))
    with StacApiServer(files_root=root, require_headers={"x-api-key": KEY}) as server:
        remote = []
        for item in items:
            clone = item.clone()
            for asset in clone.assets.values():
                asset.href = server.file_url(asset.href)
            remote.append(clone.to_dict())
        server.state.items = remote
        yield server


def _geometries(path: Path) -> Path:
    # inside the tile (UTM 33N, x 500000..500640, y 4999360..5000000)
    gdf = gpd.GeoDataFrame(
        {"id": ["p1", "p2"]},
        geometry=[Point(500_200, 4_999_800), Point(500_500, 4_999_500)],
        crs=32633,
    )
    gdf.to_crs(4326).to_file(path)
    return path


def _cli(api: StacApiServer, geoms: Path, out: Path, *extra: str, env: dict) -> str:
    result = subprocess.run(
        [
            sys.executable, "-m", "geochip", "timeseries", str(geoms), "--catalog", api.url,
            "--bands", "red,nir", "--crs", "EPSG:32633", "--resolution", "20",
            "--mode", "patch", "--size", "4", "4", "--datetime", "2024-05",
            "--out", str(out), "--no-progress", *extra,
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "200", **env},
    )  # fmt: skip
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def _bytes_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


@pytest.mark.parametrize(
    "options",
    [["--api-key-env", "GEOCHIP_KEY"], ["--header-env", "X-Api-Key=GEOCHIP_KEY"]],
)
def test_the_key_from_the_environment_reaches_the_api_and_nothing_else(
    api: StacApiServer, tmp_path: Path, options: list[str]
) -> None:
    before = len(api.requests)
    out = tmp_path / "out"
    shown = _cli(api, _geometries(tmp_path / "g.geojson"), out, *options, env={"GEOCHIP_KEY": KEY})
    assert shown.startswith("rc=0"), shown
    assert "done 2" in shown
    assert sorted(p.name for p in out.glob("*.nc")) == ["p1.nc", "p2.nc"]
    catalog_requests = [r for r in api.requests[before:] if not r.path.startswith("/files/")]
    assert catalog_requests and api.searches()
    sent = [{k.lower(): v for k, v in r.headers.items()} for r in catalog_requests]
    assert all(h.get("x-api-key") == KEY for h in sent)
    assert KEY not in shown
    blob = _bytes_under(out)
    assert KEY.encode() not in blob
    with open_cube(out / "p1.nc") as cube:  # the header is recorded, never its value
        recorded = json.loads(cube.attrs["geochip_config"])["headers_env"]
    assert {k.lower() for k in recorded} == {"x-api-key"} and KEY not in str(recorded)


def test_without_the_key_the_api_refuses_and_a_wrong_key_never_shows(
    api: StacApiServer, tmp_path: Path
) -> None:
    geoms = _geometries(tmp_path / "g.geojson")
    out = tmp_path / "out"
    shown = _cli(api, geoms, out, env={})
    assert shown.startswith("rc=1") and "401" in shown, shown
    wrong = _cli(api, geoms, tmp_path / "out2", "--api-key-env", "K", env={"K": WRONG})
    assert wrong.startswith("rc=1") and "401" in wrong, wrong
    assert WRONG not in wrong
    assert WRONG.encode() not in _bytes_under(tmp_path / "out2")
    assert not list((tmp_path / "out2").glob("*.nc"))


def test_a_dask_worker_reads_the_key_from_its_environment_not_from_the_task(
    api: StacApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    distributed = pytest.importorskip("distributed")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GEOCHIP_KEY", KEY)
    config = TimeseriesConfig(
        catalog=api.url, bands=("red",), crs="EPSG:32633", resolution=20, mode="patch",
        size=(4, 4), datetime="2024-05", headers_env={"x-api-key": "GEOCHIP_KEY"},
    )  # fmt: skip
    assert KEY.encode() not in pickle.dumps(config)  # what every Dask task carries
    geoms = gpd.read_file(_geometries(tmp_path / "g.geojson"))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = run_timeseries(geoms, config, tmp_path / "out", client=client)
    assert summary.counts["done"] == 2, summary.results
    assert KEY.encode() not in _bytes_under(tmp_path / "out")
    assert KEY not in caplog.text

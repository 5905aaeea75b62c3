"""Cube loads (``load_cube``, ``geochip timeseries``, ``geochip build``) against the loopback
fault server: a transient fault is retried and gives the fault-free pixels exactly; a read
that keeps failing raises RasterReadError naming the href (a geometry or chips then fail),
never zeros (issue 11, part 6)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import odc.stac
import pandas as pd
import pystac
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.core.env import GdalEnv
from geochip.errors import RasterReadError
from geochip.read.load import load_cube
from geochip.store.reader import open_store
from geochip.testing import make_catalog, make_cog, make_item
from geochip.testing.cubes import make_s2_scene
from geochip.testing.http import RangeServer
from geochip.workflows.timeseries import TimeseriesConfig, run_timeseries

FAST = (
    GdalEnv.default()
    .with_options(GDAL_HTTP_RETRY_DELAY=0.01)
    .with_retries(6, backoff=0.01, max_backoff=0.05)
)

ONCE = FAST.with_retries(1)  # a persistent fault: the error, after one retry

DATES = ["2024-05-01", "2024-05-11", "2024-05-21"]


def served(item: pystac.Item, server: RangeServer, query: str = "") -> pystac.Item:
    """``item`` with every asset read from ``server`` (the files under its root)."""
    out = item.clone()
    for asset in out.assets.values():
        asset.href = server.url(Path(asset.href)) + query
    return out


@pytest.fixture(scope="module")
def many_tiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pystac.Item, GeoBox]:
    """One COG of 1024 x 1024 px in 16 px tiles: its tile index (32 kB) lies past the first
    16 kB GDAL reads of a file, so GDAL loads it with a request of its own."""
    root = tmp_path_factory.mktemp("tiles")
    grid = GeoBox.from_bbox((500_000, 0, 510_240, 10_240), "EPSG:32633", resolution=10)
    make_cog(root / "a.tif", grid, tile=16, pattern="random", seed=1)
    return root, make_item("a", {"red": root / "a.tif"}), grid


def test_a_tile_index_cut_short_is_read_again_not_as_zeros(many_tiles: tuple) -> None:
    root, item, grid = many_tiles
    expected = load_cube([item], ["red"], grid, chunks=None).red.values
    with RangeServer(root) as server:
        # the second ranged request loads the tile index; cut its body short once
        server.add_fault("truncate", count=1, ranged_only=True, skip=1)
        plain = odc.stac.load([served(item, server)], bands=["red"], geobox=grid).red.values
        cut = [r.range for r in server.requests if r.fault]
    # what odc-stac's own reader makes of it: tiles of zeros, and no error
    assert cut == ["bytes=16384-49151"]
    assert (plain != expected).any() and (plain[plain != expected] == 0).all()
    with RangeServer(root) as server:
        server.add_fault("truncate", count=1, ranged_only=True, skip=1)
        got = load_cube([served(item, server)], ["red"], grid, chunks=None, env=FAST)
        got = got.red.values
        faults = [r.fault for r in server.requests if r.fault]
    assert faults == ["truncate"]
    assert got.tobytes() == expected.tobytes()


@pytest.fixture(scope="module")
def big_tiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pystac.Item, GeoBox]:
    """Two bands of 1024 x 1024 px in 256 px tiles (one chunk of 256 px: one tile)."""
    root = tmp_path_factory.mktemp("big")
    grid = GeoBox.from_bbox((500_000, 0, 510_240, 10_240), "EPSG:32633", resolution=10)
    for k, band in enumerate(("red", "nir")):
        make_cog(root / f"{band}.tif", grid, tile=256, pattern="random", seed=k)
    return root, make_item("b", {b: root / f"{b}.tif" for b in ("red", "nir")}), grid


@pytest.mark.parametrize("kind", ["truncate", "reset", "status"])
def test_transient_faults_in_a_chunked_cube_give_the_fault_free_cube(
    big_tiles: tuple, kind: str
) -> None:
    root, item, grid = big_tiles
    expected = load_cube([item], ["red", "nir"], grid, chunks=None).to_array().values
    with RangeServer(root, seed=3) as server:
        server.add_fault(kind, rate=0.1, status=503, ranged_only=True)
        cube = load_cube([served(item, server)], ["red", "nir"], grid, chunks=256, env=FAST)
        got = cube.to_array().values  # 32 chunks, read on Dask's threads
        faults = [r.fault for r in server.requests if r.fault]
    assert faults, "the server injected no fault"
    assert got.tobytes() == expected.tobytes()


def test_a_persistent_truncation_raises_naming_the_href_not_its_token(
    big_tiles: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    root, item, grid = big_tiles
    caplog.set_level(logging.DEBUG)
    with RangeServer(root) as server:
        server.add_fault("truncate", rate=1.0, ranged_only=True)
        signed = served(item, server, query="?sig=planted-secret")
        start = time.monotonic()
        with pytest.raises(RasterReadError, match=r"red\.tif\?sig=REDACTED: reading band 1") as err:
            load_cube([signed], ["red"], grid, chunks=512, env=ONCE).red.values  # noqa: B018
        assert time.monotonic() - start < 20
    assert "planted-secret" not in str(err.value)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("geochip", "odc"))]
    assert ours and not any("planted-secret" in m for m in ours)


def test_a_missing_file_is_not_retried(many_tiles: tuple) -> None:
    root, item, grid = many_tiles
    with RangeServer(root) as server:
        gone = served(item, server)
        gone.assets["red"].href = server.url("gone.tif")
        with pytest.raises(RasterReadError, match=r"gone\.tif: reading band 1.*(404|not recog)"):
            load_cube([gone], ["red"], grid, chunks=None, env=FAST)
        gets = [r for r in server.requests if r.method == "GET" and r.range != "bytes=0-0"]
    assert len(gets) <= 1


# -- geochip timeseries -------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pystac.Item]]:
    """Three Sentinel-2-like scenes of one tile (10 m bands, 20 m SCL) in 64 px tiles."""
    root = tmp_path_factory.mktemp("s2")
    items = [make_s2_scene(root, d, size=256, seed=5, tile=64) for d in DATES]
    return root, items


def http_catalog(root: Path, items: list[pystac.Item], server: RangeServer, out: Path) -> Path:
    """A static catalog on disk whose items read their pixels from ``server``."""
    return make_catalog(out, [served(i, server) for i in items], collection="s2-like")


def points(tmp_path: Path) -> Path:
    path = tmp_path / "points.geojson"
    features = [
        {
            "type": "Feature",
            "properties": {"id": gid},
            "geometry": {"type": "Point", "coordinates": xy},
        }
        for gid, xy in (("p1", [15.00763, 45.14898]), ("p2", [15.02417, 45.14717]))
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def ts_args(geoms: Path, catalog: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "geochip", "timeseries", str(geoms), "--catalog", str(catalog),
        "--datetime", "2024-05", "--bands", "red,nir", "--crs", "EPSG:32633",
        "--resolution", "10", "--mode", "patch", "--size", "40", "30", "--format", "nc",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip


def test_cli_timeseries_with_transient_truncations_writes_the_fault_free_files(
    scenes: tuple, tmp_path: Path
) -> None:
    root, items = scenes
    geoms = points(tmp_path)
    with RangeServer(root, seed=1) as server:
        catalog = http_catalog(root, items, server, tmp_path / "cat")
        clean = subprocess.run(
            ts_args(geoms, catalog, tmp_path / "clean"), capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert clean.returncode == 0, clean.stderr
        server.clear_requests()
        server.add_fault("truncate", rate=0.15, ranged_only=True)
        faulty = subprocess.run(
            ts_args(geoms, catalog, tmp_path / "faulty"), capture_output=True, text=True,
            timeout=300, check=False, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        faults = [r for r in server.requests if r.fault]
    assert faulty.returncode == 0, faulty.stdout + faulty.stderr
    assert "done 2, skipped 0 (already written), empty 0, failed 0" in faulty.stdout
    assert faults, "the server injected no fault"
    for gid in ("p1", "p2"):
        a = xr.open_dataset(tmp_path / "clean" / f"{gid}.nc")
        b = xr.open_dataset(tmp_path / "faulty" / f"{gid}.nc")
        assert a["red"].shape == (3, 30, 40)
        assert a["red"].values.tobytes() == b["red"].values.tobytes()
        assert a["nir"].values.tobytes() == b["nir"].values.tobytes()


def test_timeseries_with_a_file_that_keeps_failing_fails_the_geometries_not_zeros(
    scenes: tuple, tmp_path: Path
) -> None:
    root, items = scenes
    with RangeServer(root) as server:
        catalog = http_catalog(root, items, server, tmp_path / "cat")
        # every read of the second scene's red band is cut short
        server.add_fault("truncate", rate=1.0, ranged_only=True, path="*2024-05-11*red*")
        config = TimeseriesConfig(
            catalog=str(catalog), bands=("red", "nir"), crs="EPSG:32633", resolution=10,
            datetime="2024-05", mode="patch", size=(40, 30),
        )  # fmt: skip
        summary = run_timeseries(points(tmp_path), config, tmp_path / "out")
    assert summary.counts["failed"] == 2
    for result in summary.results:
        assert result.reason.startswith("RasterReadError: http://127.0.0.1:")
        assert "red.tif: reading band 1" in result.reason
    assert not list((tmp_path / "out").glob("*.nc"))


# -- geochip build --------------------------------------------------------------------------


def build_config(catalog: Path, out: Path) -> dict:
    return {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["red", "nir"],
        "time": {"start": "2024-05-01", "end": "2024-05-31", "periods": 3},
        "masks": {"kind": "scl", "band": "scl"},
        "chips": {"size": 64},
        "split": {"method": "none"},
        "output": {"path": str(out)},
        "engine": {
            "threads": 2,
            "batch_size": 4,
            "retry_delay": 0.01,
            "gdal": {"GDAL_HTTP_RETRY_DELAY": 0.01},
        },
    }


def test_build_of_a_time_stack_with_transient_truncations_equals_the_fault_free_build(
    scenes: tuple, tmp_path: Path
) -> None:
    root, items = scenes
    local = make_catalog(tmp_path / "local", items, collection="s2-like")
    clean = build(parse_config(build_config(local, tmp_path / "clean")), progress=False)
    with RangeServer(root, seed=2) as server:
        catalog = http_catalog(root, items, server, tmp_path / "cat")
        server.add_fault("truncate", rate=0.15, ranged_only=True)
        faulty = build(parse_config(build_config(catalog, tmp_path / "faulty")), progress=False)
        faults = [r for r in server.requests if r.fault]
    assert faults, "the server injected no fault"
    assert clean.ok and faulty.ok, faulty.failed
    a, b = open_store(clean.path), open_store(faulty.path)
    assert a.image.shape[:3] == (16, 3, 2)  # 16 chips of 3 steps of 2 bands
    for k in range(len(a.index)):
        assert a.read(k)[0].tobytes() == b.read(k)[0].tobytes()


def test_cli_build_with_a_file_that_keeps_failing_records_failed_chips(
    scenes: tuple, tmp_path: Path
) -> None:
    import yaml

    root, items = scenes
    with RangeServer(root) as server:
        catalog = http_catalog(root, items, server, tmp_path / "cat")
        cfg = build_config(catalog, tmp_path / "ds")
        (tmp_path / "build.yaml").write_text(yaml.safe_dump(cfg))
        # every read of one scene's nir band is cut short
        server.add_fault("truncate", rate=1.0, ranged_only=True, path="*2024-05-11*nir*")
        result = subprocess.run(
            [sys.executable, "-m", "geochip", "build", str(tmp_path / "build.yaml"),
             "--no-progress"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert result.returncode != 0, result.stdout + result.stderr
    index = pd.read_parquet(tmp_path / "ds" / "index.parquet")
    failed = index[index.status == "failed"]
    assert len(failed) == len(index) == 16
    assert failed.error.str.contains("RasterReadError").all()
    assert failed.error.str.contains("nir.tif: reading band 1").all()

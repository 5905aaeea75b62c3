"""``geochip chips``: counts from headers, a store equal to rasterio reads, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from typer.testing import CliRunner

from geochip.cli import app
from geochip.store.reader import open_store
from geochip.testing import make_cog, make_item

runner = CliRunner()


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = GeoBox.from_bbox((500_000, 0, 506_000, 4_000), "EPSG:32633", resolution=10)
    return make_cog(
        tmp_path_factory.mktemp("cli") / "scene.tif",
        grid,
        bands=3,
        tile=128,
        overviews=(2, 4),
        nodata=0,
        pattern="random",
        descriptions=["vv", "vh", "r"],
    )


def _run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], 3 * 4),  # 400 x 600 at 128: drop
        (["--overlap", "64"], 5 * 8),
        (["--edge", "pad"], 4 * 5),
        (["--overview-level", "0"], 1 * 2),
    ],
)
def test_count_from_headers(cog: Path, extra: list[str], expected: int) -> None:
    result = _run("chips", str(cog), "--size", "128", *extra, "--count")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(expected)


def test_count_over_several_scenes_and_a_stac_item(cog: Path, tmp_path: Path) -> None:
    import json

    item_path = tmp_path / "item.json"
    item_path.write_text(json.dumps(make_item("it", {"vv": cog}).to_dict()))
    result = _run("chips", str(cog), str(item_path), "--asset", "vv", "--size", "128", "--count")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "24"


def test_out_writes_a_store_equal_to_rasterio_reads(cog: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = _run(
        "chips", str(cog), "--size", "128", "--overlap", "32", "--bands", "vh,1", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    store = open_store(out)
    assert store.bands == ["vh", "vv"]
    assert len(store) == 3 * 5
    with rasterio.open(cog) as ds:
        for i, row in enumerate(store.index.itertuples()):
            window = rasterio.windows.Window(row.col, row.row, 128, 128)
            assert np.array_equal(store.read(i)[0], ds.read([2, 1], window=window))


def _fails(*args: str) -> str:
    import subprocess
    import sys

    geochip = Path(sys.executable).parent / "geochip"
    result = subprocess.run([str(geochip), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    return " ".join(result.stderr.split())


def test_missing_overview_level_is_a_clear_error(cog: Path) -> None:
    message = _fails("chips", str(cog), "--overview-level", "3", "--count")
    assert "scene.tif: no overview level 3; it has levels 0, 1" in message


def test_chip_larger_than_the_scene(cog: Path) -> None:
    message = _fails("chips", str(cog), "--size", "1024", "--count")
    assert "scene.tif: no 1024x1024 chip fits a 400x600 grid with edge='drop'" in message


def test_missing_band_lists_the_bands(cog: Path) -> None:
    message = _fails("chips", str(cog), "--bands", "hh", "--count")
    assert "no band or asset named 'hh'; it has '1:vv', '2:vh', '3:r'" in message


def test_nothing_to_do_is_an_error(cog: Path) -> None:
    message = _fails("chips", str(cog))
    assert "--count, --out DIR, or both" in message

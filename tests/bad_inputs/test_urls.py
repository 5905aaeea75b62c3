"""Inputs and outputs given as URLs (issue 13), the way users get them wrong: an output
bucket that does not exist (refused before any work, nothing written), a scheme geochip
does not know, an extra that is not installed, a catalog or a raster that is not there, a
bucket folder without rasters. The S3 API is moto's server on loopback (``s3_bucket``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from odc.geo.geobox import GeoBox

from geochip.core.storage import filesystem
from geochip.errors import InputError
from geochip.testing import make_cog

GRID = GeoBox.from_bbox((500_000, 0, 501_280, 1_280), "EPSG:32633", resolution=10)
MISSING = "s3://geochip-no-such-bucket"


def _bucket_keys(bucket: str) -> list[str]:
    fs, path = filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    return list(fs.find(path))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return make_cog(tmp_path / "scene.tif", GRID, bands=2, pattern="random")


def test_select_into_a_bucket_that_does_not_exist(
    refuse, s3_bucket: str, sample_catalog_path: Path, tmp_path: Path
) -> None:
    # refused before the labels are read or the catalog searched: the labels file is absent
    refuse(
        "select",
        "--catalog",
        str(sample_catalog_path),
        "--labels",
        str(tmp_path / "labels-not-read.geojson"),
        "--start",
        "2016-01-01",
        "--end",
        "2016-12-31",
        "--out",
        f"{MISSING}/selection.parquet",
        error="StoreError",
        message=f"cannot write to {MISSING}",
        outputs=[tmp_path / "labels-not-read.geojson"],
    )


def test_search_out_to_a_bucket_that_does_not_exist(
    refuse, s3_bucket: str, sample_catalog_path: Path, tmp_path: Path
) -> None:
    local = tmp_path / "footprints.geojson"
    refuse(
        "search",
        "--catalog",
        str(sample_catalog_path),
        "--footprints",
        str(local),
        "--out",
        f"{MISSING}/items.json",
        error="StoreError",
        message="check that the bucket exists",
        outputs=[local],  # refused before the search: the local output is not written either
    )


def test_predict_into_a_bucket_that_does_not_exist(
    refuse, s3_bucket: str, scene: Path, tmp_path: Path
) -> None:
    import torch

    model = torch.jit.script(torch.nn.Conv2d(2, 3, 1))
    model.save(str(tmp_path / "model.pt"))
    refuse(
        "predict",
        str(tmp_path / "model.pt"),
        str(scene),
        "--out",
        f"{MISSING}/pred.tif",
        "--chip",
        "64",
        error="StoreError",
        message=f"cannot write to {MISSING}",
    )


def test_retile_into_a_bucket_that_does_not_exist(refuse, s3_bucket: str, scene: Path) -> None:
    refuse(
        "retile",
        str(scene),
        "--tile",
        "64",
        "--out",
        f"{MISSING}/tiles",
        error="StoreError",
        message=f"cannot write to {MISSING}/tiles",
    )


def test_timeseries_into_an_unknown_scheme(refuse, tmp_path: Path) -> None:
    refuse(
        "timeseries",
        "POINT (-87.5 30.7)",
        "--catalog",
        "sample",
        "--bands",
        "red",
        "--crs",
        "EPSG:32616",
        "--resolution",
        "30",
        "--out",
        "ftp://example.com/series",
        error="InputError",
        message="the scheme ftp:// is not supported here",
        cwd=tmp_path,
        outputs=[tmp_path / "ftp:"],  # not a local folder named after the URL
    )


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_a_gs_output_without_the_gcs_extra(
    refuse, sample_catalog_path: Path, tmp_path: Path
) -> None:
    refuse(
        "search",
        "--catalog",
        str(sample_catalog_path),
        "--out",
        "gs://bucket/items.json",
        error="MissingExtraError",
        message="pip install 'geochip[gcs]'",
        cwd=tmp_path,
        outputs=[tmp_path / "gs:"],
    )


def test_search_a_catalog_that_is_not_in_the_bucket(refuse, s3_bucket: str) -> None:
    refuse(
        "search",
        "--catalog",
        f"s3://{s3_bucket}/stac/catalog.json",
        error="InputError",
        message=f"no STAC catalog at s3://{s3_bucket}/stac/catalog.json: the object does not exist",
    )


def test_chips_of_a_bucket_folder_without_rasters(refuse, s3_bucket: str) -> None:
    fs, path = filesystem(f"s3://{s3_bucket}/scenes/readme.txt")
    fs.pipe_file(path, b"the scenes are elsewhere")
    refuse(
        "chips",
        f"s3://{s3_bucket}/scenes/",
        "--count",
        error="InputError",
        message=f"no raster (.tif, .tiff, .jp2) in the folder s3://{s3_bucket}/scenes/",
    )


def test_chips_of_a_raster_that_is_not_in_the_bucket(refuse, s3_bucket: str) -> None:
    refuse(
        "chips",
        f"s3://{s3_bucket}/scenes/S2_20240503.tif",
        "--count",
        error="RasterReadError",
        message=f"s3://{s3_bucket}/scenes/S2_20240503.tif does not exist",
    )


def test_open_catalog_of_an_object_that_is_not_stac(s3_bucket: str) -> None:
    from geochip import open_catalog

    fs, path = filesystem(f"s3://{s3_bucket}/items.json")
    fs.pipe_file(path, b"id,datetime\na,2024-01-01\n")  # a CSV named .json
    with pytest.raises(InputError, match=rf"s3://{s3_bucket}/items.json is not a JSON STAC"):
        open_catalog(f"s3://{s3_bucket}/items.json")
    assert _bucket_keys(s3_bucket) == [f"{s3_bucket}/items.json"]

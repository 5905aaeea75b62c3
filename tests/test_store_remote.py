"""Chip datasets in object storage, against a real S3 API (moto's server on loopback): written
by ``write_store`` and ``geochip build``, read by ``open_store``, ``ChipDataset`` (DataLoader
workers) and the commands, equal chip by chip to the same store written locally."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.core.storage import ObjectPath, filesystem
from geochip.errors import StoreBusyError
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.format import Layout
from geochip.store.reader import open_store
from geochip.store.remote import LOCK_FILE, REMOTE_CHIPS_PER_SHARD, store_lock
from geochip.store.writer import ChipSource, StoreWriter, write_store
from geochip.testing import BuildStopped, stop_after
from geochip.testing.catalogs import make_scene_catalog, scene_config

SECRET = "geochip-secret-do-not-leak-7f3a"


def _plan_and_sources() -> tuple[Any, dict[str, ChipSource], np.ndarray]:
    gbox = GeoBox.from_bbox((500_000, 0, 500_000 + 10 * 256, 10 * 256), "EPSG:32633", resolution=10)
    plan = assign_splits(plan_chips(gbox, 32), block_size=64, seed=1).plan
    rng = np.random.default_rng(0)
    image = rng.integers(1, 5000, (3, 256, 256), dtype="uint16")
    mask = rng.integers(0, 3, (256, 256), dtype="uint8")
    return plan, {"grid": ChipSource(image, ["r", "g", "b"], 0, mask=mask)}, image


def _objects(url: str) -> dict[str, bytes]:
    fs, root = filesystem(url)
    fs.invalidate_cache()
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def _same_chips(a: Any, b: Any) -> None:
    assert len(a) == len(b)
    assert a.index.drop(columns="geometry").equals(b.index.drop(columns="geometry"))
    for i in range(len(a)):
        (ia, ma), (ib, mb) = a.read(i), b.read(i)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb), i


def test_write_store_to_a_bucket_equals_the_local_store(s3_bucket: str, tmp_path: Path) -> None:
    plan, sources, image = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    out = write_store(url, plan, sources)
    assert out == ObjectPath(url)
    local = open_store(write_store(tmp_path / "ds", plan, sources))
    remote = open_store(url)
    assert remote.manifest["layout"]["chips_per_shard"] == REMOTE_CHIPS_PER_SHARD
    _same_chips(local, remote)
    row = plan.iloc[9]  # the oracle: the source array itself
    assert np.array_equal(
        remote.read(9)[0], image[:, row.row : row.row + 32, row.col : row.col + 32]
    )
    names = set(_objects(url))
    assert {"manifest.json", "index.parquet", "stats.json", "chips.zarr/zarr.json"} <= names
    assert not any(".geochip" in n for n in names)  # the lock is gone
    assert np.array_equal(remote.image[3], local.image[3])  # Zarr reads it too


def test_a_chip_is_one_range_request_once_its_shard_index_is_cached(
    s3_bucket: str, tmp_path: Path
) -> None:
    import s3fs

    plan, sources, _ = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)
    reader = open_store(url).reader("image")
    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = counted  # counts the real requests; they still go out
    try:
        reader.read(0)  # the shard's index, then the chip
        assert calls == ["get_object", "get_object"]
        calls.clear()
        for i in range(1, 9):
            reader.read(i)
        assert calls == ["get_object"] * 8
        calls.clear()
        # a batch of another shard's chips, every other one: its index + one range each
        reader.prefetch(range(32, 64, 2))
        assert calls == ["get_object"] * 17
        calls.clear()
        # the chips of a shard in order (an epoch without shuffling; its index is cached):
        # one range for all 32, cut into the chips the local store holds
        reader.prefetch(range(32))
        assert calls == ["get_object"]
        got = [reader.read(i) for i in range(32)]
        assert calls == ["get_object"]  # all came with that range
        local = tmp_path / "local"
        write_store(local, plan, sources)
        want = open_store(local).reader("image")
        assert all(np.array_equal(got[i], want.read(i)) for i in range(32))
    finally:
        s3fs.S3FileSystem._call_s3 = original


def test_a_block_sampler_batch_is_one_range_request_per_block(
    s3_bucket: str, tmp_path: Path
) -> None:
    """Training with BlockSampler(block=16), batches of 16: each batch is one run of chips
    stored one after another, fetched with one range (a plain shuffle: one per chip); the
    samples are those of the local store at the same positions."""
    import s3fs
    import torch
    from torch.utils.data import DataLoader

    from geochip.ml.sampling import BlockSampler
    from geochip.ml.torch import ChipDataset, collate_chips

    plan, sources, _ = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)
    write_store(tmp_path / "local", plan, sources)
    remote, local = ChipDataset(url), ChipDataset(tmp_path / "local")
    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    def loader(dataset: ChipDataset, shuffle: bool = False) -> DataLoader:
        sampler = None if shuffle else BlockSampler(dataset, block=16, seed=5)
        return DataLoader(
            dataset, batch_size=16, sampler=sampler, shuffle=shuffle, collate_fn=collate_chips
        )

    s3fs.S3FileSystem._call_s3 = counted  # counts the real requests; they still go out
    try:
        got = list(loader(remote))
        blocks = list(calls)
        calls.clear()
        list(loader(ChipDataset(url), shuffle=True))
    finally:
        s3fs.S3FileSystem._call_s3 = original
    # 64 chips in 2 shards of 32, arrays image and mask: each array's metadata (HEAD + GET)
    # and its 2 shard indexes, then per batch of 16 one range per array (a plain shuffle:
    # one per run of neighbours drawn together, most often one per chip and array)
    assert len(got) == 4
    assert sorted(blocks) == sorted(["head_object", "get_object"] * 2 + ["get_object"] * 12)
    assert len(calls) > 4 * len(blocks)
    for a, b in zip(got, loader(local), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert list(a["chip_id"]) == list(b["chip_id"])


def test_only_one_of_two_writers_gets_the_lock(s3_bucket: str) -> None:
    root = ObjectPath(f"s3://{s3_bucket}/ds")
    barrier = threading.Barrier(2)
    outcome: list[str] = []

    def writer() -> None:
        barrier.wait()
        try:
            with store_lock(root):
                outcome.append("locked")
                barrier.wait()  # both have tried while the winner still holds it
        except StoreBusyError:
            outcome.append("busy")
            barrier.wait()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcome) == ["busy", "locked"]
    assert not (root / LOCK_FILE).exists()


def _build_config(catalog: Path, out: str, **output: Any) -> Any:
    config = scene_config(catalog, out)
    config["output"].update(output)
    return parse_config(config)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_catalog(tmp_path_factory.mktemp("cogs"), scenes=2, size=128)


def test_build_resume_verifies_objects_by_sha256_and_rewrites_damaged_batches(
    s3_bucket: str, catalog: Path, tmp_path: Path
) -> None:
    url = f"s3://{s3_bucket}/ds"
    config = _build_config(catalog, url, chips_per_shard=8)

    with pytest.raises(BuildStopped):
        build(config, progress=False, on_batch=stop_after(2))
    names = set(_objects(url))
    assert "manifest.json" not in names and not any(n.endswith("lock") for n in names)
    records = sorted(n for n in names if n.startswith(".geochip/batches/"))
    assert len(records) >= 2
    # damage one recorded chunk object: same size, other bytes (its ETag changes too, but
    # the check is the sha256 of its bytes)
    record = json.loads(_objects(url)[records[0]])
    key = next(k for k, v in record["files"].items() if v is not None)
    fs, root = filesystem(url)
    data = bytearray(fs.cat_file(f"{root}/chips.zarr/{key}"))
    data[0] ^= 0xFF
    fs.pipe_file(f"{root}/chips.zarr/{key}", bytes(data))
    result = build(config, progress=False)
    assert result.batches == 4 and result.skipped_batches == len(records) - 1
    local = build(_build_config(catalog, str(tmp_path / "ds"), chips_per_shard=8), progress=False)
    _same_chips(open_store(local.path), open_store(url))
    assert not any(n.startswith(".geochip") for n in _objects(url))


def test_a_build_is_refused_while_another_holds_the_prefix(s3_bucket: str, catalog: Path) -> None:
    url = f"s3://{s3_bucket}/ds"
    config = _build_config(catalog, url)
    lock = ObjectPath(url) / LOCK_FILE
    lock.write_text(json.dumps({"host": "other-host", "pid": 4242, "started": "then"}))
    with pytest.raises(StoreBusyError, match="other-host pid 4242.*--force-unlock"):
        build(config, progress=False)
    assert set(_objects(url)) == {LOCK_FILE}  # no work was done
    result = build(config, progress=False, force_unlock=True)  # the other build was killed
    assert result.counts["chips"] == 32
    assert not lock.exists()


def test_cli_build_to_a_bucket_leaks_no_secret_and_matches_a_local_build(
    s3_bucket: str, catalog: Path, tmp_path: Path
) -> None:
    """The config, its catalog and the COGs on the bucket too (the catalog's path relative
    to the config's URL); the pictures and the report written to the bucket are the bytes
    written locally; nothing lands in a local folder named ``s3:``."""
    url = f"s3://{s3_bucket}/ds"
    fs, _ = filesystem(url)
    inputs = f"{s3_bucket}/inputs"
    root = catalog.parent.parent  # the catalog's folder and the COGs beside it
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"{inputs}/{file.relative_to(root).as_posix()}")
    config = scene_config(catalog, "unused")
    config["sources"]["path"] = "catalog/catalog.json"  # relative to the config's URL
    fs.pipe_file(f"{inputs}/config.yaml", yaml.safe_dump(config).encode())
    env = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": SECRET,  # moto accepts any secret
        "AWS_SESSION_TOKEN": SECRET + "-token",
        "COLUMNS": "200",
    }

    def geochip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "geochip", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    built = geochip("build", f"s3://{inputs}/config.yaml", "--out", url, "--no-progress")
    assert built.returncode == 0, built.stdout + built.stderr
    same_inputs = {**config, "output": {"path": str(tmp_path / "local")}}
    same_inputs["sources"] = {"kind": "catalog", "path": f"s3://{inputs}/catalog/catalog.json"}
    local = build(parse_config(same_inputs), progress=False)
    _same_chips(open_store(local.path), open_store(url))
    assert open_store(url).manifest["layout"]["chips_per_shard"] == REMOTE_CHIPS_PER_SHARD
    outputs = [built]
    for command in (["info", url], ["check", url], ["stats", url]):
        outputs.append(geochip(*command))
        assert outputs[-1].returncode == 0, outputs[-1].stdout + outputs[-1].stderr
    report = geochip("report", url, "--out", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    assert "32 chips" in outputs[1].stdout
    for where in (f"s3://{s3_bucket}/pictures", str(tmp_path / "pictures")):
        outputs.append(geochip("preview", url, "--out", f"{where}/p.png"))
        outputs.append(geochip("report", url, "--out", f"{where}/r.html"))
        assert all(r.returncode == 0 for r in outputs[-2:]), outputs[-2].stderr + outputs[-1].stderr
    assert not (tmp_path / "s3:").exists()  # not a local folder named "s3:"
    fs.invalidate_cache()
    for name in ("p.png", "p-splits.png", "r.html"):
        got = fs.cat_file(f"{s3_bucket}/pictures/{name}")
        assert got == (tmp_path / "pictures" / name).read_bytes(), name
    objects = _objects(url)
    for name, data in objects.items():
        assert SECRET.encode() not in data, name
        assert b"geochip-test-key" not in data, name
    for result in [*outputs, report]:
        assert SECRET not in result.stdout + result.stderr
    assert SECRET not in (tmp_path / "r.html").read_text()


def _samples(dataset: Any, workers: int) -> list[dict[str, Any]]:
    from torch.utils.data import DataLoader

    from geochip.ml.torch import collate_chips

    loader = DataLoader(
        dataset,
        batch_size=5,
        num_workers=workers,
        collate_fn=collate_chips,
        multiprocessing_context="fork" if workers else None,
    )
    return list(loader)


def test_chip_dataset_from_a_bucket_with_forked_workers_equals_the_local_one(
    s3_bucket: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from geochip.ml.torch import ChipDataset

    plan, sources, _ = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)
    local = write_store(tmp_path / "ds", plan, sources)
    remote_ds = ChipDataset(url, split="train")
    remote_ds[0]  # the parent's client exists before the fork: workers must make their own
    local_batches = _samples(ChipDataset(local, split="train"), 0)
    remote_batches = _samples(remote_ds, 2)
    assert len(local_batches) == len(remote_batches) > 1
    for a, b in zip(local_batches, remote_batches, strict=True):
        assert a["chip_id"] == b["chip_id"]
        assert a["image"].dtype == b["image"].dtype
        assert np.array_equal(a["image"].numpy(), b["image"].numpy())
        assert np.array_equal(a["mask"].numpy(), b["mask"].numpy())
        assert np.array_equal(a["bounds"].numpy(), b["bounds"].numpy())
    normalized = ChipDataset(url, split="train", normalize="zscore")
    expected = ChipDataset(local, split="train", normalize="zscore")
    assert np.array_equal(normalized[2]["image"].numpy(), expected[2]["image"].numpy())


def test_memory_urls_for_unit_tests() -> None:
    plan, sources, _ = _plan_and_sources()
    url = "memory://geochip-unit/ds"
    write_store(url, plan.head(40), sources)
    store = open_store(url)
    assert len(store) == 40 and store.manifest["layout"]["chips_per_shard"] == 32
    digest = hashlib.sha256((ObjectPath(url) / "manifest.json").read_bytes()).hexdigest()
    assert len(digest) == 64


def test_overwrite_replaces_a_remote_store_without_stale_objects(s3_bucket: str) -> None:
    plan, sources, image = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)  # 64 chips: 2 shards
    write_store(
        url, plan.head(20), {"grid": ChipSource(image[:2] + 1, ["a", "b"], 0)}, overwrite=True
    )
    store = open_store(url)
    assert len(store) == 20 and store.bands == ["a", "b"] and not store.has_mask
    row = plan.iloc[5]
    expected = image[:2, row.row : row.row + 32, row.col : row.col + 32] + 1
    assert np.array_equal(store.read(5)[0], expected)
    chunks = sorted(n for n in _objects(url) if "/c/" in n)
    assert chunks == ["chips.zarr/image/c/0/0/0/0"]  # the old mask and second shard are gone


def test_pickled_readers_and_datasets_carry_no_client_and_no_secret(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    plan, sources, _ = _plan_and_sources()
    url = f"s3://{s3_bucket}/ds"
    write_store(url, plan, sources)
    store = open_store(url)
    store.read(0)  # clients and caches exist now
    things: list[Any] = [store, store.reader("image"), ObjectPath(url)]
    if importlib.util.find_spec("torch") is not None:
        from geochip.ml.torch import ChipDataset

        dataset = ChipDataset(url)
        dataset[0]
        things.append(dataset)
    for thing in things:
        data = pickle.dumps(thing)
        assert SECRET.encode() not in data and b"geochip-test-key" not in data
        assert b"S3FileSystem" not in data and b"aiobotocore" not in data
    assert np.array_equal(pickle.loads(pickle.dumps(store)).read(3)[0], store.read(3)[0])


def test_cli_chips_out_to_a_bucket(s3_bucket: str, tmp_path: Path) -> None:
    import rasterio
    from rasterio.windows import Window

    from geochip.testing import make_cog

    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    cog = make_cog(tmp_path / "a.tif", gbox, bands=2, nodata=0)
    url = f"s3://{s3_bucket}/chips"
    result = subprocess.run(
        [sys.executable, "-m", "geochip", "chips", str(cog), "--size", "32", "--out", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "s3:").exists()
    store = open_store(url)
    assert len(store) == 4
    with rasterio.open(cog) as src:  # the oracle: a plain read of each chip's window
        for i, row in enumerate(store.index.itertuples()):
            window = Window(row.col, row.row, row.width, row.height)
            assert np.array_equal(store.read(i)[0], src.read(window=window))


def test_each_shard_is_one_put_of_the_bytes_a_local_store_holds(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from geochip.testing.proxy import FaultProxy

    plan, sources, _ = _plan_and_sources()  # 64 chips with a mask: 2 shards per array
    bucket = f"geochip-{os.urandom(6).hex()}"
    s3_server.create_bucket(bucket)
    url = f"s3://{bucket}/ds"
    with FaultProxy(s3_server.endpoint) as proxy:
        for key, value in s3_server.environ(proxy.url.rstrip("/")).items():
            monkeypatch.setenv(key, value)
        write_store(url, plan, sources)
        chunk_requests = sorted(
            (r.method, r.path.split(f"/{bucket}/ds/chips.zarr/", 1)[1])
            for r in proxy.requests
            if "/c/" in r.path
        )
    keys = ["image/c/0/0/0/0", "image/c/1/0/0/0", "mask/c/0/0/0", "mask/c/1/0/0"]
    # no read of the shard before it is written, no multipart upload: one PUT each
    assert chunk_requests == [("PUT", key) for key in keys]
    local = write_store(tmp_path / "ds", plan, sources, layout=Layout(chips_per_shard=32))
    remote = _objects(url)
    for key in keys:
        assert remote[f"chips.zarr/{key}"] == (local / "chips.zarr" / key).read_bytes(), key


def test_an_all_fill_batch_removes_the_object_an_interrupted_run_left() -> None:
    url = "memory://geochip-unit-fill/ds"
    writer = StoreWriter(url)
    writer.create(
        n=64, lead=(2,), height=8, width=8, dtype="uint16", nodata=0, bands=["a", "b"],
        with_mask=False, classes=None, layout=Layout(chips_per_shard=32),
    )  # fmt: skip
    stale = ObjectPath(url) / "chips.zarr" / "image" / "c" / "1" / "0" / "0" / "0"
    stale.write_bytes(b"half a shard, left by a killed build")
    assert writer.write(32, np.zeros((32, 2, 8, 8), "uint16"), None) == {"image/c/1/0/0/0": None}
    assert not stale.exists()
    files = writer.write(0, np.ones((32, 2, 8, 8), "uint16"), None)
    written = ObjectPath(url) / "chips.zarr" / "image" / "c" / "0" / "0" / "0" / "0"
    assert files == {"image/c/0/0/0/0": hashlib.sha256(written.read_bytes()).hexdigest()}
    assert writer.verify(files)


def test_a_shard_starting_beside_another_shards_probe_object_is_not_refused(
    s3_bucket: str, catalog: Path
) -> None:
    from geochip.builder.shards import Shard, build_shard
    from geochip.core.storage import WRITE_PROBE

    url = f"s3://{s3_bucket}/ds"
    (ObjectPath(url) / f"{WRITE_PROBE}from-another-shard").write_bytes(b"")
    result = build_shard(_build_config(catalog, url), Shard(0, 1), progress=False)
    assert result.finalized is not None and result.finalized.counts["chips"] == 32

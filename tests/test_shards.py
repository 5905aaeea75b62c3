"""Array jobs (`geochip build CONFIG --shard i/N`, then `--finalize`): N processes that share
nothing but the output write the store a single build writes, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from geochip.builder.config import load_config
from geochip.builder.shards import Shard, build_shard, finalize_build, parse_shard
from geochip.errors import IncompleteBuildError
from geochip.testing.catalogs import make_scene_catalog, make_time_catalog, scene_config


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def geochip(*args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "geochip", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        **popen,
    )


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _scenes(tmp: Path) -> dict[str, Any]:
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=96)
    # 2 scenes x 9 chips; shards of 2 chips (a batch is whole chunk files): 9 batches
    return scene_config(
        catalog,
        tmp / "unused",
        size=32,
        output={"path": str(tmp / "unused"), "chips_per_shard": 2},
        engine={"threads": 1, "batch_size": 2},
    )


def _time_stack(tmp: Path) -> dict[str, Any]:
    dates = ["2024-01-05", "2024-02-10", "2024-04-15"]
    catalog = make_time_catalog(tmp / "cat", dates, covers=[30, 5, 20], size=64)
    return {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["red", "nir"],
        "time": {"start": "2024-01-01", "end": "2024-04-30", "periods": "monthly"},
        "masks": {"kind": "scl", "band": "scl"},
        "chips": {"size": 16},
        "split": {"block_size": 2},
        "stats": {"per_step": True},
        "output": {"path": str(tmp / "unused")},
        "engine": {"threads": 1, "batch_size": 3},
    }


CONFIGS = {"scenes": _scenes, "time-stack": _time_stack}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A config and the files of its single-machine build."""
    tmp = tmp_path_factory.mktemp(request.param)
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIGS[request.param](tmp)))
    single = finish(geochip("build", str(config), "--out", str(tmp / "single")))
    assert single.returncode == 0, single.stderr
    return config, files(tmp / "single")


def test_three_array_jobs_started_together_write_the_single_build_byte_for_byte(
    job: tuple, tmp_path: Path
) -> None:
    config, reference = job
    out = tmp_path / "sharded"
    # started at once: they plan, write the state and create the arrays concurrently
    procs = [geochip("build", str(config), "--out", str(out), f"--shard={i}/3") for i in range(3)]
    done = [finish(p) for p in procs]
    for d in done:
        assert d.returncode == 0, d.stderr
        assert "Traceback" not in d.stderr
    # exactly the shards that found every batch recorded at their end tried to finalize;
    # the store is finished and identical to the single build, every byte of every file
    assert any("store: " in d.stdout for d in done), [d.stdout for d in done]
    assert files(out) == reference
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["failed"] == 0 and "stats" in manifest
    again = finish(geochip("build", str(config), "--out", str(out), "--finalize"))
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    rerun = finish(geochip("build", str(config), "--out", str(out), "--shard=1/3"))
    assert rerun.returncode == 0, rerun.stderr
    assert "shard 1/3: nothing to do, the store is complete" in rerun.stdout
    assert files(out) == reference


def test_finalize_before_every_shard_ended_names_what_is_missing_then_finalizes(
    job: tuple, tmp_path: Path
) -> None:
    config_path, reference = job
    out = tmp_path / "sharded"
    config = load_config(config_path).with_overrides(out=out)
    first = build_shard(config, Shard(0, 3), finalize=False, progress=False)
    last = build_shard(config, Shard(2, 3), finalize=False, progress=False)
    assert first.finalized is None and last.finalized is None
    # what shard 1/3 owns is what is missing (shard 2/3's batches end with the build's)
    assert last.missing == list(parse_shard("1/3").batches(last.batches.stop))
    with pytest.raises(IncompleteBuildError, match=r"shards not finished: 1/3\. Run"):
        finalize_build(config, progress=False)
    assert not (out / "manifest.json").exists() and not (out / "index.parquet").exists()
    result = finish(geochip("build", str(config_path), "--out", str(out), "--shard", "1/3"))
    assert result.returncode == 0, result.stderr
    assert "store: " in result.stdout  # the last shard to end finalized
    assert files(out) == reference


def test_finalize_writes_the_store_when_no_shard_did(job: tuple, tmp_path: Path) -> None:
    config_path, reference = job
    out = tmp_path / "sharded"
    config = load_config(config_path).with_overrides(out=out)
    results = [build_shard(config, Shard(i, 2), finalize=False, progress=False) for i in (1, 0)]
    assert results[0].missing and not results[1].missing
    assert not (out / "manifest.json").exists()
    final = finish(geochip("build", str(config_path), "--out", str(out), "--finalize"))
    assert final.returncode == 0, final.stderr
    assert files(out) == reference


def test_a_shard_run_again_verifies_and_skips_what_it_wrote(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(_scenes(tmp_path)))
    config = load_config(config_path).with_overrides(out=tmp_path / "ds")
    first = build_shard(config, Shard(0, 2), progress=False)
    assert first.skipped == 0 and len(first.batches) == 4 and len(first.missing) == 5
    # a damaged chunk file: that batch is read and written again, the others are skipped
    chunk = tmp_path / "ds" / "chips.zarr" / "image" / "c" / "2" / "0" / "0" / "0"
    chunk.write_bytes(b"damaged")
    second = build_shard(config, Shard(0, 2), progress=False)
    assert second.skipped == 3 and second.engine == "1 thread"
    assert chunk.read_bytes() != b"damaged"
    more = build_shard(config, Shard(0, 12), progress=False)  # more shards than batches
    assert len(more.batches) == 0 and "has no batch" in more.note


def test_the_batches_are_dealt_out_exactly_once() -> None:
    for total in (0, 1, 7, 9, 100):
        for count in (1, 2, 3, 10, 13):
            dealt = [b for i in range(count) for b in Shard(i, count).batches(total)]
            assert dealt == list(range(total))

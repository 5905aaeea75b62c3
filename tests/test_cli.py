"""The command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def geochip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
        check=False,
    )


def test_help_lists_every_command_with_help_text() -> None:
    result = geochip("--help")
    assert result.returncode == 0
    for command, words in {
        "demo": "whole pipeline",
        "sample": "sample STAC catalog",
        "info": "Summarise a chip dataset",
        "versions": "GDAL, PROJ, GEOS",
    }.items():
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {command} "))
        assert words in line, line


def test_versions_prints_gdal_proj_geos() -> None:
    out = geochip("versions").stdout
    for name in ("geochip", "GDAL", "PROJ", "GEOS", "numpy", "xarray", "dask", "torch"):
        assert any(line.startswith(name) for line in out.splitlines()), name


def test_demo_then_info(tmp_path: Path) -> None:
    result = geochip("demo", "--out", str(tmp_path / "d"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "DataLoader train: 2 batches, shapes [(4, 6, 256, 256)]" in result.stdout
    assert "time per stage" in result.stdout
    info = geochip("info", str(tmp_path / "d"))
    assert info.returncode == 0
    assert "16 chips, 0 failed" in info.stdout


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    result = geochip("info", str(tmp_path))
    assert result.returncode == 1
    assert "not a complete geochip store" in result.stderr
    assert "Traceback" not in result.stderr


def test_sample_prints_the_catalog_path(tmp_path: Path) -> None:
    result = geochip("sample", "--root", str(tmp_path / "s"))
    assert result.returncode == 0
    assert Path(result.stdout.strip()) == tmp_path / "s" / "catalog.json"
    assert (tmp_path / "s" / "catalog.json").exists()

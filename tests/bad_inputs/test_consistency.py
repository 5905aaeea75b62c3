"""Bad input across the commands (issue 16): each command with a typical mistake (a missing
file, a bad option value, an unknown command) refuses on one named line that says what to
do, never with a traceback or a usage box."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geochip.errors import ConfigError, InputError
from geochip.read.open import open_scenes

from .conftest import CliCase


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["chips", "missing.tif", "--count"], "RasterReadError", "missing.tif does not exist"),
        (["info", "nostore"], "StoreError", "give the folder a build"),
        (["check", "nostore"], "StoreError", "no manifest.json"),
        (["stats", "nostore"], "StoreError", "no manifest.json"),
        (["report", "nostore"], "StoreError", "no manifest.json"),
        (["preview", "nostore"], "StoreError", "no manifest.json"),
        (["search", "--catalog", "missing.json"], "InputError", "no STAC catalog at missing"),
        (["retile", "missing.tif", "--tile", "256", "--out", "tiles"], "InputError", "check the"),
        (["datasets", "show", "nope"], "DatasetNotFoundError", "registered: sample-landsat8"),
        (["build", "nope.yaml"], "ConfigError", "no config file at nope.yaml; check the path"),
        (
            ["timeseries", "nogeoms.geojson", "--catalog", "sample", "--bands", "red", "--crs",
             "EPSG:3035", "--resolution", "10", "--out", "ts"],
            "InputError",
            "check the path",
        ),
        (
            ["predict", "model.pt", "x.tif", "--out", "p.tif", "--mean", "a", "--std", "1"],
            "InputError",
            "--mean takes numbers (repeated or separated by commas), got 'a'",
        ),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None,
)  # fmt: skip
def test_a_missing_file_or_bad_value_is_one_named_line(
    refuse: CliCase, tmp_path: Path, args: list[str], error: str, message: str
) -> None:
    refuse(
        *args,
        error=error,
        message=message,
        cwd=tmp_path,
        outputs=[tmp_path / "tiles", tmp_path / "ts", tmp_path / "p.tif"],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chips", "x.tif", "--size", "0", "--count"], "Invalid value for '--size'"),
        (["demo", "--workers", "0", "--out", "demo"], "see `geochip demo --help`"),
        (["frobnicate"], "No such command 'frobnicate'; see `geochip --help`"),
        (["chips", "x.tif", "--bogus"], "No such option: --bogus"),
        (["datasets", "show"], "Missing argument 'tag'; see `geochip datasets show --help`"),
        (["build"], "give a CONFIG.yaml"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_usage_error_is_one_named_line_with_status_2(
    refuse: CliCase, tmp_path: Path, args: list[str], message: str
) -> None:
    refuse(
        *args,
        error="CommandLineError",
        message=message,
        status=2,
        cwd=tmp_path,
        outputs=[tmp_path / "demo"],
    )


def test_a_config_without_output_and_no_out_names_both_ways(
    refuse: CliCase, tmp_path: Path
) -> None:
    from geochip.builder.config import parse_config

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"sources": {"kind": "files", "path": "x"}}))
    refuse(
        "build",
        str(config),
        error="ConfigError",
        message="no output folder: give output.path in the config, or the folder on the "
        "command line (geochip build CONFIG --out DIR",
        cwd=tmp_path,
    )
    with pytest.raises(ConfigError, match="no output folder"):
        parse_config({"sources": {}, "output": {"codec": "lz4"}})


def test_a_stac_json_that_is_not_an_item_is_refused_by_the_api(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"type": "Catalog", "id": "c", "links": []}')
    with pytest.raises(
        InputError, match=r"a STAC Item or ItemCollection was expected, got type 'Catalog'"
    ):
        open_scenes([catalog])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json: cannot read it as JSON"):
        open_scenes([str(tmp_path / "broken.json")])

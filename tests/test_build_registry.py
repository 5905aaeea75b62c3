"""Chip datasets from named datasets (a `registry` source): images, grids and masks come
from the registry entry, and the chips equal what the same files give through other paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.windows import Window

from geochip.builder.config import load_config, parse_config
from geochip.builder.run import build
from geochip.errors import ConfigError, DatasetNotFoundError
from geochip.store.reader import open_store

ROOT = Path(__file__).parents[1]


def test_registry_example_equals_the_folder_example(tmp_path: Path) -> None:
    by_tag = load_config(ROOT / "examples/gim_cv-registry.yaml").with_overrides(out=tmp_path / "a")
    by_folder = load_config(ROOT / "examples/gim_cv.yaml").with_overrides(out=tmp_path / "b")
    a = open_store(build(by_tag, progress=False).path)
    b = open_store(build(by_folder, progress=False).path)
    assert a.index["chip_id"].tolist() == b.index["chip_id"].tolist()
    np.testing.assert_array_equal(a.image[:], b.image[:])
    np.testing.assert_array_equal(a.mask[:], b.mask[:])
    # the dataset's masks became the labels, recorded in the manifest's config
    labels = a.manifest["config"]["labels"]
    assert labels["kind"] == "vector"
    assert labels["classes"] == {"water": 1, "vegetation": 2, "land": 3}
    assert a.manifest["config"]["grid"]["resolution"] == 10.0


def _tiles_config(tmp_path: Path, tag: str, **extra: object) -> Path:
    config = {
        "sources": {
            "kind": "registry",
            "tag": tag,
            "registry": str(ROOT / "examples/registries/tiles.yaml"),
            "download": True,
        },
        "bands": ["data.1", "data.2", "data.3"],
        "chips": {"size": 32},
        "split": {"method": "none"},
        "output": {"path": str(tmp_path / "out")},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_raster_masks_of_a_registry_dataset_become_the_mask_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOCHIP_CACHE_DIR", str(tmp_path / "cache"))
    result = build(load_config(_tiles_config(tmp_path, "tiles-raster")), progress=False)
    store = open_store(result.path)
    assert result.counts["failed"] == 0
    root = tmp_path / "cache" / "datasets" / "tiles-raster"
    assert store.manifest["config"]["labels"]["asset"] == "mask"
    checked = 0
    for row in store.ok().itertuples():
        tile = row.grid_id
        with rasterio.open(root / "masks" / f"{tile}.tif") as src:
            expected = src.read(1, window=Window(row.col, row.row, 32, 32))
        image_path = next((root / "images").glob(f"{tile}.*"))
        with rasterio.open(image_path) as src:
            pixels = src.read(window=Window(row.col, row.row, 32, 32))
        image, mask = store.read(row.index)
        np.testing.assert_array_equal(mask, expected, row.chip_id)
        np.testing.assert_array_equal(image, pixels, row.chip_id)
        checked += 1
    assert checked == len(store) == 8  # two 64 px tiles, four 32 px chips each


def test_explicit_labels_win_over_the_registry_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOCHIP_CACHE_DIR", str(tmp_path / "cache"))
    labels = {"path": "sample", "attribute": "class", "classes": {"water": 1}}
    config = load_config(_tiles_config(tmp_path, "tiles-raster", labels=labels))
    from geochip.builder.catalog import apply_registry

    assert apply_registry(config).labels == config.labels


def test_unknown_tag_is_named_with_the_known_ones(tmp_path: Path) -> None:
    config = parse_config(
        {
            "sources": {"kind": "registry", "tag": "nope"},
            "bands": ["B02"],
            "chips": {"size": 32},
            "output": {"path": str(tmp_path / "o")},
        }
    )
    with pytest.raises(DatasetNotFoundError, match=r"nope.*sample-sentinel2"):
        build(config, progress=False)


def test_registry_source_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"sources.tag: required field is missing"):
        parse_config(
            {
                "sources": {"kind": "registry"},
                "bands": ["B02"],
                "chips": {"size": 32},
                "output": {"path": "o"},
            }
        )

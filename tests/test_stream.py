"""Chip plans from headers, and chips/batches equal to plain rasterio reads, decoded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from geochip.core.grid import YX
from geochip.errors import InputError, NoChipsError, RasterReadError
from geochip.plan.chips import load_plan, save_plan
from geochip.plan.scenes import filter_nodata, plan_random, plan_scenes, sample_chips
from geochip.read.open import open_scene, open_scenes
from geochip.read.scene import Scene, ScenePart
from geochip.read.stream import ChipStream
from geochip.testing import make_cog
from geochip.testing.http import RangeServer


def _grid(height: int, width: int, x0: float = 500_000) -> GeoBox:
    return GeoBox.from_bbox((x0, 0, x0 + width * 10, height * 10), "EPSG:32633", resolution=10)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("stream")
    a = make_cog(
        folder / "a.tif",
        _grid(700, 900),
        bands=3,
        dtype="uint16",
        tile=128,
        pattern="random",
        overviews=(2,),
        nodata=0,
        nodata_box=(slice(0, 256), slice(0, 256)),
    )
    b = make_cog(
        folder / "b.tif",
        _grid(520, 610, 600_000),
        bands=3,
        dtype="uint16",
        tile=128,
        pattern="random",
        seed=5,
        overviews=(2,),
        nodata=0,
    )
    return [a, b]


def _oracle(
    path: Path, row: int, col: int, h: int, w: int, level: int | None = None, fill: int = 0
) -> np.ndarray:
    """A plain rasterio read of the window (padded with ``fill`` past the edges)."""
    kwargs = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **kwargs) as ds:
        out = np.full((ds.count, h, w), fill, dtype=ds.dtypes[0])
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + h, ds.height), min(col + w, ds.width)
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = ds.read(
            window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        )
    return out


def _fake_scene(height: int, width: int, scene_id: str = "s") -> Scene:
    return Scene(
        id=scene_id,
        parts=(ScenePart("/nowhere.tif", (1,), YX(256, 256)),),
        geobox=_grid(height, width),
        dtype="uint16",
        nodata=0,
        band_names=("b1",),
    )


def test_plan_positions_match_xbatcher() -> None:
    import xarray as xr
    import xbatcher

    scene = _fake_scene(1044, 1569)
    plan = plan_scenes([scene], {"y": 512, "x": 512}, overlap={"y": 256, "x": 256})
    da = xr.DataArray(np.zeros((1, 1044, 1569), "uint8"), dims=("band", "y", "x"))
    da = da.assign_coords(y=np.arange(1044), x=np.arange(1569))
    gen = xbatcher.BatchGenerator(
        da, input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
    )
    expected = [(int(b.y[0]), int(b.x[0])) for b in gen]
    assert list(zip(plan.row, plan.col, strict=True)) == expected
    assert len(plan) == 15


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 900),
    width=st.integers(1, 900),
    size=st.integers(1, 300),
    stride=st.integers(1, 300),
    edge=st.sampled_from(["drop", "shift", "pad"]),
)
def test_plan_covers_the_grid_as_the_edge_policy_says(
    height: int, width: int, size: int, stride: int, edge: str
) -> None:
    scene = _fake_scene(height, width)
    try:
        plan = plan_scenes([scene], size, stride=stride, edge=edge)
    except NoChipsError:
        assert edge != "pad" and (size > height or size > width)
        return
    rows, cols = plan.row.to_numpy(), plan.col.to_numpy()
    assert (rows >= 0).all() and (cols >= 0).all()
    if edge != "pad":
        assert (rows + size <= height).all() and (cols + size <= width).all()
    if edge != "drop" and stride <= size:  # every pixel is in some chip
        assert rows.max() + size >= height and cols.max() + size >= width
    assert plan.chip_id.is_unique


def test_planning_reads_no_pixels(cogs: list[Path]) -> None:
    with RangeServer(cogs[0].parent) as server:
        scene = open_scene(server.url("a.tif"))
        server.clear_requests()
        plan = plan_scenes([scene], 128, overlap=64)
        stream = ChipStream(plan, [scene])
        assert len(stream) == len(plan) == 9 * 13
        assert len(stream.batch(10)) == 12
        assert server.requests == []


def test_stride_and_overlap_per_axis() -> None:
    scene = _fake_scene(100, 200)
    plan = plan_scenes([scene], {"y": 50, "x": 100}, stride={"y": 25, "x": 50})
    assert sorted(set(plan.row)) == [0, 25, 50]
    assert sorted(set(plan.col)) == [0, 50, 100]
    with pytest.raises(InputError, match="stride or overlap, not both"):
        plan_scenes([scene], 50, stride=10, overlap=10)


def test_chip_larger_than_scene_with_drop_names_the_scene(cogs: list[Path]) -> None:
    scene = open_scene(cogs[1])
    with pytest.raises(NoChipsError, match=r"b.tif: no 1024x1024 chip fits a 520x610 grid"):
        plan_scenes([scene], 1024)


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize(
    ("size", "stride", "edge", "level"),
    [
        (128, 128, "drop", None),  # chips own their tiles: GDAL reads into the batch
        (128, 64, "shift", None),  # overlapping chips: tiles decoded once, shared
        (100, 70, "pad", None),  # unaligned, padded past the edges
        (96, 48, "drop", 0),  # at an overview level
    ],
)
def test_every_chip_equals_a_plain_rasterio_read(
    cogs: list[Path], threads: int, size: int, stride: int, edge: str, level: int | None
) -> None:
    scenes = open_scenes(cogs, overview_level=level)
    plan = plan_scenes(scenes, size, stride=stride, edge=edge)
    paths = {s.id: p for s, p in zip(scenes, cogs, strict=True)}
    count = 0
    for chip in ChipStream(plan, scenes, threads=threads, read_ahead=threads > 0):
        expected = _oracle(paths[chip.scene_id], chip.row, chip.col, size, size, level)
        assert chip.image.tobytes() == expected.tobytes(), chip.chip_id
        count += 1
    assert count == len(plan)


def test_batches_cross_scene_boundaries_in_one_preallocated_array(cogs: list[Path]) -> None:
    scenes = open_scenes(cogs)
    plan = plan_scenes(scenes, 256)
    batches = list(ChipStream(plan, scenes).batch(4))
    assert [len(b) for b in batches] == [4, 4, 2]  # 2x3 chips in a, 2x2 in b
    assert [b.scene_ids for b in batches] == [["a"] * 4, ["a", "a", "b", "b"], ["b", "b"]]
    mixed = batches[1]
    image = mixed.image
    assert image.dtype == np.uint16 and image.flags.c_contiguous and image.base is None
    k = mixed.scene_ids.index("b")
    row, col = (int(v[1:]) for v in mixed.chip_ids[k].split("-")[1:])
    assert np.array_equal(image[k], _oracle(cogs[1], row, col, 256, 256))


def test_overlapping_chips_decode_each_tile_once(
    cogs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import geochip.read.tiles as stream_module

    calls: list[tuple] = []
    real = stream_module.read_part

    def counting(scene, part, row, col, h, w, out, env):  # type: ignore[no-untyped-def]
        if out is None:  # a tile decode (direct chip reads pass their destination)
            calls.append((scene.id, row, col))
        return real(scene, part, row, col, h, w, out, env)

    monkeypatch.setattr(stream_module, "read_part", counting)
    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 256, stride=128)  # every tile is shared by up to 4 chips
    images = [b.image.copy() for b in ChipStream(plan, [scene], threads=2).batch(8)]
    assert len(calls) == len(set(calls))  # no tile decoded twice
    # the tiles the chips touch: rows/cols 0..(last chip end) in 256 px units
    last_row = int(plan.row.max()) + 256
    last_col = int(plan.col.max()) + 256
    assert len(calls) == -(-last_row // 256) * -(-last_col // 256)
    assert sum(len(i) for i in images) == len(plan)


def test_small_cache_budget_still_gives_exact_chips(cogs: list[Path]) -> None:
    scene = open_scene(cogs[0])
    plan = sample_chips(plan_scenes([scene], 128, stride=32), seed=3).head(60)
    for chip in ChipStream(plan, [scene], cache_mb=0, threads=2):
        assert np.array_equal(chip.image, _oracle(cogs[0], chip.row, chip.col, 128, 128))


def test_chip_carries_its_grid_and_dataarray(cogs: list[Path]) -> None:
    import odc.geo.xr  # noqa: F401
    import rioxarray  # noqa: F401

    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128, stride=128)
    chip = next(iter(ChipStream(plan.iloc[[7]], [scene])))
    assert chip.geobox == scene.geobox[chip.row : chip.row + 128, chip.col : chip.col + 128]
    da = chip.to_dataarray()
    assert da.dims == ("band", "y", "x")
    assert da.odc.geobox == chip.geobox
    assert da.rio.transform() == chip.geobox.affine
    assert da.rio.nodata == 0
    assert np.array_equal(da.values, chip.image)


def test_random_plan_is_seeded_and_inside(cogs: list[Path]) -> None:
    scenes = open_scenes(cogs)
    a = plan_random(scenes, 200, 50, seed=7)
    b = plan_random(scenes, 200, 50, seed=7)
    c = plan_random(scenes, 200, 50, seed=8)
    assert a.chip_id.tolist() == b.chip_id.tolist() != c.chip_id.tolist()
    assert a.chip_id.is_unique and set(a.grid_id) == {"a", "b"}
    shapes = {s.id: s.shape[1:] for s in scenes}
    for row in a.itertuples():
        h, w = shapes[row.grid_id]
        assert 0 <= row.row <= h - 200 and 0 <= row.col <= w - 200


def test_sample_chips_is_a_seeded_permutation(cogs: list[Path]) -> None:
    plan = plan_scenes(open_scenes(cogs), 128)
    shuffled = sample_chips(plan, seed=1)
    assert sorted(shuffled.chip_id) == sorted(plan.chip_id)
    assert shuffled.chip_id.tolist() != plan.chip_id.tolist()
    assert sample_chips(plan, 5, seed=1).chip_id.tolist() == shuffled.chip_id.tolist()[:5]


def test_saved_plan_streams_the_same_pixels_after_reload(cogs: list[Path], tmp_path: Path) -> None:
    scenes = open_scenes(cogs, overview_level=0)
    plan = plan_scenes(scenes, 64, overlap=16)
    path = save_plan(plan, tmp_path / "plan.parquet")
    again = load_plan(path)
    assert again.chip_id.tolist() == plan.chip_id.tolist()
    first = [b.image.copy() for b in ChipStream(plan, scenes).batch(16)]
    reopened = [b.image.copy() for b in ChipStream(again).batch(16)]  # scenes from the plan
    assert all(np.array_equal(x, y) for x, y in zip(first, reopened, strict=True))


def test_nodata_filter_reads_pixels_and_keeps_exact_fractions(
    cogs: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128)
    with caplog.at_level("WARNING"):
        kept = filter_nodata(plan, 0.5, scenes=[scene])
    assert "reads the pixels" in caplog.text
    full = scene.read()
    for row in plan.itertuples():
        window = full[:, row.row : row.row + 128, row.col : row.col + 128]
        fraction = float((window == 0).any(axis=0).mean())
        assert (row.chip_id in set(kept.chip_id)) == (fraction <= 0.5)
    assert len(kept) == len(plan) - 4  # the 256x256 nodata box covers 4 chips


def test_nodata_filter_needs_a_nodata_value(tmp_path: Path) -> None:
    path = make_cog(tmp_path / "n.tif", _grid(128, 128), tile=128)
    scene = open_scene(path)
    with pytest.raises(InputError, match=r"n.tif has no nodata value.*nodata=<value>"):
        plan_scenes([scene], 64, max_nodata=0.1)


def test_a_failed_read_names_the_chip_and_the_file(tmp_path: Path) -> None:
    path = make_cog(tmp_path / "gone.tif", _grid(256, 256), tile=128)
    scene = open_scene(path)
    plan = plan_scenes([scene], 128)
    path.write_bytes(path.read_bytes()[:2000])  # truncate the pixels away
    with pytest.raises(
        RasterReadError, match=r"chip gone-r0-c0: .*gone.tif: reading rows 0:256.*TIFF"
    ):
        list(ChipStream(plan, [scene], threads=0))


def test_workers_share_every_chip_exactly_once(cogs: list[Path]) -> None:
    plan = plan_scenes(open_scenes(cogs), 64)
    stream = ChipStream(plan)
    for split in ("contiguous", "interleaved"):
        seen: list[str] = []
        for worker in range(3):
            seen += [c.chip_id for c in stream.shard(worker, 3, unit=5, split=split)]
        assert sorted(seen) == sorted(plan.chip_id)
        assert len(seen) == len(set(seen))


def test_batches_you_keep_keep_their_pixels_and_dropped_ones_are_reused(
    cogs: list[Path],
) -> None:
    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128, stride=64)  # overlapping: tiles copied into batches
    kept = []
    pointers = set()
    for k, batch in enumerate(ChipStream(plan, [scene], threads=2).batch(4)):
        pointers.add(batch.image.ctypes.data)
        if k % 3 == 0:
            kept.append((batch.chip_ids[0], batch.image[0]))  # a view keeps the batch
    assert len(pointers) < len(plan) // 4  # dropped batches' memory was written again
    for chip_id, view in kept:
        row, col = (int(v[1:]) for v in chip_id.split("-")[1:])
        assert np.array_equal(view, _oracle(cogs[0], row, col, 128, 128)), chip_id


def test_a_rewritten_file_is_read_anew_by_the_next_stream(tmp_path: Path) -> None:
    path = make_cog(tmp_path / "r.tif", _grid(256, 256), tile=128, pattern="random", seed=1)
    scene = open_scene(path)
    plan = plan_scenes([scene], 128)
    first = [c.image.copy() for c in ChipStream(plan, [scene], threads=2)]
    make_cog(tmp_path / "new.tif", _grid(256, 256), tile=128, pattern="random", seed=2)
    (tmp_path / "new.tif").replace(path)  # same path, new file: kept handles must notice
    for threads in (2, 0):
        again = list(ChipStream(plan, [scene], threads=threads, read_ahead=threads > 0))
        for chip, old in zip(again, first, strict=True):
            expected = _oracle(path, chip.row, chip.col, 128, 128)
            assert np.array_equal(chip.image, expected)
            assert not np.array_equal(chip.image, old)


def test_reader_threads_outlive_streams(cogs: list[Path]) -> None:
    # a thread that ends runs GDAL/PROJ destructors after join(); a fork at that moment
    # (a DataLoader right after a stream) could copy a held SQLite lock into the worker
    import threading

    def readers() -> set[int]:  # the threads of the process's 2-thread pool
        return {t.ident or 0 for t in threading.enumerate() if t.name.startswith("geochip-read-2_")}

    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128)
    list(ChipStream(plan, [scene], threads=2))
    before = readers()
    list(ChipStream(plan, [scene], threads=2).batch(3))
    assert len(before) == 2 and readers() == before


def test_closing_a_stream_early_leaves_no_read_running(cogs: list[Path]) -> None:
    from concurrent.futures import Future

    import geochip.read.tiles as stream_module

    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128)
    submitted: list[Future] = []
    pool = stream_module._reader_pool(2)
    real_submit = pool.submit

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        future = real_submit(*args, **kwargs)
        submitted.append(future)
        return future

    pool.submit = recording  # type: ignore[method-assign]
    try:
        batches = ChipStream(plan, [scene], threads=2).batch(2)
        iterator = iter(batches)
        next(iterator)
        iterator.close()  # read-ahead was in flight
    finally:
        del pool.submit
    assert len(submitted) > 2
    assert all(f.done() for f in submitted)


def test_dataarray_chips_share_no_mutable_state(cogs: list[Path]) -> None:
    scene = open_scene(cogs[0])
    plan = plan_scenes([scene], 128, stride=128)
    chips = list(ChipStream(plan.head(2), [scene]))
    a, b = (c.to_dataarray() for c in chips)
    a.attrs["note"] = "mine"
    a["x"] = a.x + 5  # a new coordinate for a only
    c = chips[0].to_dataarray()
    assert "note" not in b.attrs and "note" not in c.attrs
    assert float(c.x[0]) == float(scene.geobox.affine.c + 5.0)  # half a 10 m pixel
    assert np.array_equal(c.y.values, b.y.values)

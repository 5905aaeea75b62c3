"""Streaming into a DataLoader: every chip once, deterministic, handles opened in each worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from odc.geo.geobox import GeoBox
from torch.utils.data import DataLoader

from geochip.errors import InputError
from geochip.ml.stream import StreamDataset
from geochip.plan.scenes import plan_scenes
from geochip.read.open import open_scenes
from geochip.read.stream import ChipStream
from geochip.testing import make_cog


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> ChipStream:
    folder = tmp_path_factory.mktemp("torchstream")
    paths = []
    for k, (h, w) in enumerate([(400, 520), (330, 300)]):
        grid = GeoBox.from_bbox((k * 1e5, 0, k * 1e5 + w * 10, h * 10), "EPSG:32633", resolution=10)
        paths.append(
            make_cog(folder / f"s{k}.tif", grid, bands=2, tile=128, pattern="random", seed=k)
        )
    scenes = open_scenes(paths)
    return ChipStream(plan_scenes(scenes, 96, overlap=32), scenes)


def _reference(stream: ChipStream) -> dict[str, np.ndarray]:
    return {c.chip_id: c.image.copy() for c in stream}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("split", ["contiguous", "interleaved"])
def test_every_chip_once_with_right_pixels(stream: ChipStream, workers: int, split: str) -> None:
    reference = _reference(stream)
    dataset = StreamDataset(stream, 7, split=split)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    assert len(loader) == len(dataset) == -(-len(stream) // 7)
    seen: list[str] = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint16
        assert batch["image"].shape[1:] == (2, 96, 96)
        for k, chip_id in enumerate(batch["chip_id"]):
            assert np.array_equal(batch["image"][k].numpy(), reference[chip_id])
        seen += batch["chip_id"]
    assert sorted(seen) == sorted(reference)
    assert len(seen) == len(set(seen))


def test_order_is_deterministic_and_interleaved_matches_plan_order(stream: ChipStream) -> None:
    def ids(split: str) -> list[str]:
        loader = DataLoader(StreamDataset(stream, 5, split=split), batch_size=None, num_workers=2)
        return [i for b in loader for i in b["chip_id"]]

    assert ids("contiguous") == ids("contiguous")
    assert ids("interleaved") == [c.chip_id for c in stream]


def test_workers_under_spawn(stream: ChipStream) -> None:
    loader = DataLoader(
        StreamDataset(stream, 8),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="spawn",
    )
    assert sum(len(b["chip_id"]) for b in loader) == len(stream)


def test_fork_after_the_parent_read_the_same_files(stream: ChipStream) -> None:
    # the parent holds open GDAL handles (serial reads keep them in the main thread);
    # forked workers must open their own instead of sharing the parent's file offsets
    serial = stream.with_threads(0)
    serial.read_ahead = False
    reference = _reference(serial)
    loader = DataLoader(
        StreamDataset(serial, 3, threads=2),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
    )
    for batch in loader:
        for k, chip_id in enumerate(batch["chip_id"]):
            assert np.array_equal(batch["image"][k].numpy(), reference[chip_id])


def _mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping that holds ``address``."""
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            start, end = (int(v, 16) for v in line.split()[0].split("-"))
            if start <= address < end:
                return line.strip()
    raise AssertionError(f"no mapping holds {address:#x}")


def test_workers_send_batches_in_shared_buffers_they_reuse(stream: ChipStream) -> None:
    reference = _reference(stream)
    loader = DataLoader(StreamDataset(stream, 2), batch_size=None, num_workers=2)
    inodes = []
    batches = 0
    for batch in loader:  # each batch is dropped before the next one arrives
        line = _mapping_of(batch["image"].data_ptr())
        assert "geochip-batch" in line  # a worker's memfd, mapped here: no copy
        inodes.append(int(line.split()[4]))
        for k, chip_id in enumerate(batch["chip_id"]):
            assert np.array_equal(batch["image"][k].numpy(), reference[chip_id])
        batches += 1
    assert batches == 26
    assert len(set(inodes)) <= 2 * 4 < batches  # at most 4 buffers per worker


def test_batches_the_main_process_keeps_are_never_written_again(stream: ChipStream) -> None:
    reference = _reference(stream)
    loader = DataLoader(StreamDataset(stream, 2), batch_size=None, num_workers=2)
    # keep a view of each batch (the batch itself is dropped): 13 batches per worker,
    # more than the 4 buffers a worker reuses
    firsts = [(b["chip_id"][0], b["image"][0]) for b in loader]
    assert len(firsts) == 26
    for chip_id, view in firsts:
        assert np.array_equal(view.numpy(), reference[chip_id])


def test_dtype_and_custom_collate(stream: ChipStream) -> None:
    as_float = next(iter(StreamDataset(stream, 4, dtype=torch.float32)))
    assert as_float["image"].dtype == torch.float32

    def first_ids(chips: list) -> list[str]:
        return [c.chip_id for c in chips]

    out = list(StreamDataset(stream, 4, collate_fn=first_ids))
    assert [i for b in out for i in b] == [c.chip_id for c in stream]


def test_single_chips_and_drop_last(stream: ChipStream) -> None:
    chips = list(StreamDataset(stream))
    assert len(chips) == len(stream) and chips[0]["image"].shape == (2, 96, 96)
    dropped = StreamDataset(stream, 7, drop_last=True)
    assert len(list(dropped)) == len(dropped) == len(stream) // 7


def test_bad_arguments_are_named(stream: ChipStream) -> None:
    with pytest.raises(InputError, match="batch_size must be at least 1"):
        StreamDataset(stream, 0)
    with pytest.raises(InputError, match="split must be 'contiguous' or 'interleaved'"):
        StreamDataset(stream, 2, split="random")


def test_a_shared_batch_pickles_by_value_outside_multiprocessing() -> None:
    import pickle

    from geochip.ml.sharing import SharedBatches as _SharedBatches

    alloc = _SharedBatches(keep=1)
    array, tensor = alloc((2, 3), np.dtype("int32"))  # (torch cannot unpickle uint16)
    array[:] = np.arange(6).reshape(2, 3)
    again = pickle.loads(pickle.dumps({"image": tensor}))["image"]
    assert type(again) is torch.Tensor
    assert again.tolist() == [[0, 1, 2], [3, 4, 5]]
    del array, tensor
    alloc.close()


def test_a_shared_batch_is_reused_only_after_the_receiver_lets_go() -> None:
    from multiprocessing.reduction import ForkingPickler

    from geochip.ml.sharing import SharedBatches as _SharedBatches

    alloc = _SharedBatches(keep=1)
    array, tensor = alloc((4,), np.dtype("int32"))
    array[:] = [1, 2, 3, 4]
    payload = ForkingPickler.dumps(tensor)  # what a worker sends
    del array, tensor
    received = ForkingPickler.loads(payload)  # what the main process gets: a mapping
    assert type(received) is torch.Tensor and received.tolist() == [1, 2, 3, 4]
    view = received[1:]
    del received
    second, _ = alloc((4,), np.dtype("int32"))  # the view still holds the first buffer
    second[:] = 0
    assert view.tolist() == [2, 3, 4]
    del view, second, _
    third, _ = alloc((4,), np.dtype("int32"))  # released: the kept buffer again
    third[:] = 7
    assert alloc.made == 2
    del third, _
    alloc.close()

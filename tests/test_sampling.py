"""Label-aware sampling, tested by counting what the sampler draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from torch.utils.data import DataLoader

from geochip.errors import InputError, UnknownClassError
from geochip.ml.sampling import BlockSampler, LabelSampler, chip_weights
from geochip.ml.torch import ChipDataset, collate_chips
from geochip.plan.chips import plan_chips
from geochip.store.writer import ChipSource, write_store


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ChipDataset:
    """16 chips of 16x16: background 0 everywhere; class 1 fills chip 5; class 2 covers
    32 pixels of chips 9 and 10; chip 15 is three quarters nodata."""
    tmp = tmp_path_factory.mktemp("sampling")
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    plan = plan_chips(gbox, 16)
    image = np.ones((1, 64, 64), dtype="uint8")
    mask = np.zeros((64, 64), dtype="uint8")
    mask[16:32, 16:32] = 1  # chip 5 (row 1, col 1)
    mask[32:34, 16:32] = 2  # chip 9
    mask[32:34, 32:48] = 2  # chip 10
    image[0, 48:64, 48:60] = 0  # chip 15: 12 of 16 columns nodata
    path = write_store(
        tmp / "ds",
        plan,
        {"grid": ChipSource(image, ["b"], 0, mask)},
        classes={"bg": 0, "a": 1, "b": 2, "c": 3},
    )
    return ChipDataset(path)


def _shares(sampler: LabelSampler, n: int) -> np.ndarray:
    counts = np.bincount(list(sampler), minlength=n)
    return counts / counts.sum()


def test_inverse_frequency_draws_rare_classes_as_weighted(dataset: ChipDataset) -> None:
    # the oracle: weights by hand from the index's class counts
    counts = [json.loads(t) for t in dataset.store.index["class_counts"]]
    totals: dict[str, int] = {}
    for d in counts:
        for c, v in d.items():
            totals[c] = totals.get(c, 0) + v
    labelled = sum(totals.values())
    want = np.array(
        [sum(v / sum(d.values()) * labelled / totals[c] for c, v in d.items()) for d in counts]
    )
    want /= want.sum()
    sampler = LabelSampler(dataset, num_samples=40_000, seed=1)
    np.testing.assert_allclose(sampler.weights / sampler.weights.sum(), want)
    shares = _shares(sampler, len(dataset))
    assert np.abs(shares - want).max() < 5 * np.sqrt(want.max() / 40_000)
    assert shares[5] > 10 * shares[0]  # the chip full of class 1 beats a background chip


def test_target_classes_min_pixels_survival_and_nodata(dataset: ChipDataset) -> None:
    sampler = LabelSampler(
        dataset,
        num_samples=30_000,
        weighting=None,
        classes=[2],
        min_pixels=32,
        survival=0.1,
        max_nodata_fraction=0.5,
        seed=2,
    )
    shares = _shares(sampler, len(dataset))
    assert shares[15] == 0  # over the nodata limit: never drawn
    # targets (9, 10) weigh 1, the 13 others 0.1: 2 / 3.3 of the draws
    assert shares[[9, 10]].sum() == pytest.approx(2 / 3.3, abs=0.02)
    assert shares[0] == pytest.approx(0.1 / 3.3, abs=0.01)


def test_without_replacement_survival_is_a_coin_per_epoch(dataset: ChipDataset) -> None:
    sampler = LabelSampler(
        dataset, replacement=False, weighting=None, classes=[1, 2], survival=0.5, seed=3
    )
    seen_negatives = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(set(drawn))  # each chip at most once
        assert {5, 9, 10} <= set(drawn)  # targets always
        seen_negatives.append(len(drawn) - 3)
    assert np.mean(seen_negatives) == pytest.approx(13 * 0.5, abs=0.5)


def test_deterministic_and_sharded_like_distributed_sampler(dataset: ChipDataset) -> None:
    one = LabelSampler(dataset, num_samples=99, seed=7)
    again = LabelSampler(dataset, num_samples=99, seed=7)
    assert list(one) == list(again)
    one.set_epoch(1)
    assert list(one) != list(again)
    one.set_epoch(0)
    ranks = [LabelSampler(dataset, num_samples=99, seed=7, rank=r, world_size=4) for r in range(4)]
    shares = [list(r) for r in ranks]
    assert [len(s) for s in shares] == [25] * 4 == [len(r) for r in ranks]
    # dealt out: rank r has draws r, r + 4, ... of one sequence (no position shared)
    everything = LabelSampler(dataset, num_samples=100, seed=7).draws()
    for r, share in enumerate(shares):
        assert share == everything[r::4].tolist()
    # without replacement: no chip on two ranks
    chips = [
        set(LabelSampler(dataset, replacement=False, seed=7, rank=r, world_size=3))
        for r in range(3)
    ]
    assert not (chips[0] & chips[1]) and not (chips[0] & chips[2]) and not (chips[1] & chips[2])
    assert sum(len(c) for c in chips) == 15  # 16 chips, cut down to a multiple of 3


def test_unknown_class_is_refused(dataset: ChipDataset) -> None:
    with pytest.raises(UnknownClassError, match=r"class ids \[7\] are not in this dataset"):
        chip_weights(dataset, classes=[7])
    chip_weights(dataset, classes=[3])  # declared in the store's classes, though absent


def test_sampler_feeds_a_dataloader(dataset: ChipDataset) -> None:
    sampler = LabelSampler(dataset, num_samples=8, seed=0)
    batch = next(iter(DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collate_chips)))
    assert batch["chip_id"] == [dataset.chip_ids[i] for i in sampler]


def _blocks_of(order: list[int], block: int, n: int) -> list[list[int]]:
    """``order`` cut into the sampler's blocks, each checked to be one whole block of
    neighbours (``block`` chips from a multiple of ``block``; the last one shorter)."""
    out, k = [], 0
    while k < len(order):
        start = order[k] // block * block
        size = min(block, n - start)
        run = order[k : k + size]
        assert sorted(run) == list(range(start, start + size)), run
        out.append(run)
        k += size
    return out


def test_block_sampler_yields_every_chip_once_in_shuffled_blocks() -> None:
    sampler = BlockSampler(range(50), block=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    blocks = _blocks_of(first, 8, 50)
    assert len(blocks) == 7
    assert [b[0] // 8 for b in blocks] != list(range(7))  # blocks shuffled
    assert any(b != sorted(b) for b in blocks)  # chips shuffled inside blocks
    assert list(BlockSampler(range(50), block=8, seed=3)) == first  # the seed decides
    sampler.set_epoch(1)
    again = list(sampler)
    assert again != first and sorted(again) == list(range(50))


def test_block_sampler_deals_blocks_to_ranks_without_overlap() -> None:
    # 100 chips in 13 blocks (the last of 4 chips): 12 dealt, 4 to each of 3 ranks
    ranks = [
        list(BlockSampler(range(100), block=8, seed=0, rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(_blocks_of(r, 8, 100)) for r in ranks] == [4, 4, 4]
    seen = [set(r) for r in ranks]
    assert len(seen[0] | seen[1] | seen[2]) == sum(map(len, ranks)) in (92, 96)
    with pytest.raises(InputError, match="rank must be in"):
        BlockSampler(range(10), rank=2, world_size=2)
    with pytest.raises(InputError, match="block must be >= 1"):
        BlockSampler(range(10), block=0)

"""Samplers for chip datasets, deterministic with a seed and split across ranks as
``DistributedSampler`` splits (each rank its share, no overlap): label-aware sampling from
the index's class counts (:func:`chip_weights`, :class:`LabelSampler`), and
:class:`BlockSampler`, shuffled runs of neighbouring chips that a remote store serves in one
range request per run.

Weights, per chip of a :class:`~geochip.ml.torch.ChipDataset` (in its order):

- ``weighting="inverse"``: the mean over the chip's labelled pixels of 1 / the class's share
  of the dataset's labelled pixels, divided by the number of classes (balanced classes: 1
  per chip; a chip of a rare class weighs more; a chip without a labelled pixel weighs 0);
  ``None``: 1 per chip;
- ``classes`` and ``min_pixels``: a chip is a *target* chip when it has at least
  ``min_pixels`` pixels of those classes together; the others are kept with probability
  ``survival`` (their weight is multiplied by it: with replacement, the expected share;
  without, a draw per epoch);
- ``max_nodata_fraction``: chips with more nodata weigh 0.

Example:
    >>> import numpy as np
    >>> counts = ['{"0": 90, "1": 10}', '{"0": 100}', '{"0": 50, "2": 50}']
    >>> w = weights_from_counts(counts, [0.0, 0.0, 0.9], weighting="inverse",
    ...                         max_nodata_fraction=0.5)
    >>> [round(float(x), 3) for x in w]
    [1.375, 0.417, 0.0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Sampler

from ..errors import InputError, NoChipsError, UnknownClassError
from ..store.format import MASK_IGNORE

if TYPE_CHECKING:
    from .torch import ChipDataset

__all__ = [
    "BlockSampler",
    "LabelSampler",
    "chip_weights",
    "weights_from_counts",
]


def _parse(counts: Sequence[str]) -> list[dict[int, int]]:
    out = []
    for text in counts:
        d = {int(k): int(v) for k, v in json.loads(text or "{}").items()}
        d.pop(MASK_IGNORE, None)
        out.append(d)
    return out


def weights_from_counts(
    class_counts: Sequence[str],
    nodata_fractions: Sequence[float],
    *,
    weighting: str | None = "inverse",
    classes: Sequence[int] | None = None,
    min_pixels: int = 1,
    survival: float = 1.0,
    max_nodata_fraction: float = 1.0,
    known: Sequence[int] | None = None,
) -> npt.NDArray[np.float64]:
    """Chip weights from the index's ``class_counts`` (JSON per chip) and nodata fractions;
    see the module's text. ``known``: the class ids the dataset has (default: those seen)."""
    if weighting not in ("inverse", None):
        raise InputError(f"weighting must be 'inverse' or None, got {weighting!r}")
    if not 0.0 <= survival <= 1.0:
        raise InputError(f"survival must be a probability in [0, 1], got {survival}")
    if min_pixels < 0:
        raise InputError(f"min_pixels must be >= 0, got {min_pixels}")
    chips = _parse(class_counts)
    seen = sorted({c for d in chips for c in d})
    have = sorted(set(known or ()) | set(seen))
    if classes is not None:
        unknown = sorted({int(c) for c in classes} - set(have))
        if unknown:
            raise UnknownClassError(
                f"class ids {unknown} are not in this dataset (it has {have}); choose among those"
            )
    totals: dict[int, int] = {}
    for d in chips:
        for c, n in d.items():
            totals[c] = totals.get(c, 0) + n
    labelled = sum(totals.values())
    if weighting == "inverse" and labelled == 0:
        raise NoChipsError(
            "no chip has a labelled pixel: inverse class frequency needs a mask with classes; "
            "use weighting=None"
        )
    weights = np.ones(len(chips), dtype=np.float64)
    for k, d in enumerate(chips):
        if weighting == "inverse":
            n = sum(d.values())
            # mean over the chip's pixels of 1 / share = sum_c (n_c / n) * (labelled / total_c)
            weights[k] = (
                sum(v / n * labelled / totals[c] for c, v in d.items()) / len(totals) if n else 0.0
            )
        if classes is not None and sum(d.get(int(c), 0) for c in classes) < min_pixels:
            weights[k] *= survival
        if float(nodata_fractions[k]) > max_nodata_fraction:
            weights[k] = 0.0
    return weights


def chip_weights(dataset: ChipDataset, **options: Any) -> npt.NDArray[np.float64]:
    """:func:`weights_from_counts` for the chips of ``dataset``, in its order."""
    index = dataset.store.index.set_index("index").loc[dataset.positions]
    mask = dataset.store.manifest.get("mask") or {}
    known = [int(v) for v in (mask.get("classes") or {}).values()]
    return weights_from_counts(
        index["class_counts"].tolist(),
        index["nodata_fraction"].tolist(),
        known=known,
        **options,
    )


def _rank_of(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``, each defaulting to ``torch.distributed``'s when it is
    initialised (else 0 of 1); refused unless ``0 <= rank < world_size``."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    return rank, world_size


class LabelSampler(Sampler[int]):
    """Draws chip indices by :func:`chip_weights`.

    With replacement (the default): ``num_samples`` draws per epoch in all (default: the
    number of chips with weight > 0), rounded up to a multiple of ``world_size``. Without:
    every chip with weight > 0 at most once per epoch, in a weighted random order
    (``survival`` is then a coin per chip and epoch), cut to ``num_samples`` and down to a
    multiple of ``world_size`` (so no chip is repeated to pad). Rank ``r`` yields draws
    ``r, r + world_size, ...``: every rank its share, none shared. ``rank`` and
    ``world_size`` default to ``torch.distributed``'s when it is initialised. The draws
    depend only on ``seed`` and the epoch (:meth:`set_epoch`), never on the rank.
    """

    def __init__(
        self,
        dataset: ChipDataset,
        *,
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        **weights: Any,
    ) -> None:
        self.weights = chip_weights(dataset, **weights)
        self.base = chip_weights(dataset, **{**weights, "survival": 1.0})
        self.survival = float(weights.get("survival", 1.0))
        self.rank, self.world_size = _rank_of(rank, world_size)
        positive = int((self.base > 0).sum() if not replacement else (self.weights > 0).sum())
        if positive == 0:
            raise NoChipsError(
                "no chip has a weight above 0 (every chip is over max_nodata_fraction, or "
                "survival is 0 and no chip has the target classes); relax the options"
            )
        self.num_samples = positive if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise InputError(f"num_samples must be >= 1, got {num_samples}")
        self.replacement = replacement
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a new sequence (the same on every rank) for this epoch."""
        self.epoch = epoch

    def draws(self) -> npt.NDArray[np.int64]:
        """Every rank's draws of this epoch, before they are dealt out."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.replacement:
            total = math.ceil(self.num_samples / self.world_size) * self.world_size
            w = torch.from_numpy(self.weights)
            out = torch.multinomial(w, total, replacement=True, generator=g)
            return out.numpy().astype(np.int64)
        weights = self.base.copy()
        if self.survival < 1.0:  # chips without the target classes: a coin each
            others = self.weights < self.base
            coins = torch.rand(len(weights), generator=g, dtype=torch.float64).numpy()
            weights[others & (coins >= self.survival)] = 0.0
        n = int((weights > 0).sum())
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        order = torch.multinomial(torch.from_numpy(weights), n, replacement=False, generator=g)
        keep = min(n, self.num_samples) // self.world_size * self.world_size
        return order.numpy()[:keep].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draws()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        if self.replacement:
            return math.ceil(self.num_samples / self.world_size)
        return len(self.draws()) // self.world_size


class BlockSampler(Sampler[int]):
    """Every chip once per epoch, shuffled by blocks of ``block`` neighbouring chips: the
    dataset's positions (in the store's order) are cut into blocks, the blocks shuffled, and
    the chips inside each block shuffled. With ``batch_size`` a multiple of ``block``, a
    batch is ``batch_size / block`` blocks: a store in object storage serves each block's
    chips, stored one after another in a shard, with one range request (per chip with a
    plain shuffle), and its server streams large ranges faster than many small ones. The
    price: a batch holds ``batch_size / block`` places rather than ``batch_size``
    (neighbouring chips of a block are neighbours on the ground). Rank ``r`` of
    ``world_size`` takes blocks ``r, r + world_size, ...`` of the shuffled order (the last
    blocks are dropped so that every rank gets as many; ``rank``/``world_size`` default to
    ``torch.distributed``'s); the order depends only on ``seed`` and :meth:`set_epoch`.

    >>> sampler = BlockSampler(range(10), block=4, seed=1)
    >>> order = list(sampler)
    >>> sorted(order) == list(range(10)), sorted(order[:4]) in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9])
    (True, True)
    """

    def __init__(
        self,
        dataset: Sequence[Any] | ChipDataset,
        *,
        block: int = 16,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if block < 1:
            raise InputError(f"block must be >= 1 chip, got {block}")
        self.rank, self.world_size = _rank_of(rank, world_size)
        self.n = len(dataset)
        self.block = block
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle anew (the same on every rank) for this epoch."""
        self.epoch = epoch

    def _blocks(self) -> list[npt.NDArray[np.int64]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        starts = range(0, self.n, self.block)
        order = torch.randperm(len(starts), generator=g).tolist()
        keep = len(order) // self.world_size * self.world_size
        mine = order[:keep][self.rank :: self.world_size]
        out = []
        for b in mine:
            chips = np.arange(starts[b], min(starts[b] + self.block, self.n), dtype=np.int64)
            out.append(chips[torch.randperm(len(chips), generator=g).numpy()])
        return out

    def __iter__(self) -> Iterator[int]:
        for chips in self._blocks():
            yield from chips.tolist()

    def __len__(self) -> int:
        return sum(len(chips) for chips in self._blocks())

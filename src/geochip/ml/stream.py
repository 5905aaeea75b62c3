""":class:`StreamDataset`: chips or batches of a :class:`~geochip.read.stream.ChipStream` for
a ``DataLoader``, every worker reading its own share of whole batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy.typing as npt
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import InputError
from ..read.stream import ChipStream
from .sharing import LocalBatches, SharedBatches, inline_tensor, shared_alloc

__all__ = [
    "StreamDataset",
]


class StreamDataset(IterableDataset[Any]):
    """Chips or batches of a :class:`~geochip.read.stream.ChipStream` for a ``DataLoader``.

    Use ``DataLoader(dataset, batch_size=None, num_workers=...)``: batching happens here,
    across scene boundaries. With ``num_workers`` > 0 every worker reads its own share of
    whole batches (``split="contiguous"``: one run of neighbouring batches per worker, so
    tiles are decoded by one worker; ``"interleaved"``: round-robin, so the DataLoader
    yields batches in plan order), opening its own file handles lazily, under ``fork`` or
    ``spawn``; no chip is lost or duplicated, and the order is deterministic.

    Each item is ``{"image", "chip_id", "scene_id", "crs", "bounds", "index"}``; ``image``
    is (N, C, H, W) in the source dtype (or ``dtype``), written by GDAL straight into one
    preallocated (shared-memory, in a worker) buffer. ``collate_fn`` replaces that: it gets
    a list of :class:`~geochip.read.stream.Chip` (or of DataArrays with ``as_dataarray``).
    ``batch_size=None`` yields single chips.
    """

    def __init__(
        self,
        stream: Any,
        batch_size: int | None = None,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        dtype: torch.dtype | None = None,
        drop_last: bool = False,
        split: str = "contiguous",
        threads: int | None = None,
        as_dataarray: bool = False,
    ) -> None:
        if not isinstance(stream, ChipStream):
            raise InputError(f"StreamDataset takes a ChipStream, got {type(stream).__name__}")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be at least 1 or None, got {batch_size}")
        if split not in ("contiguous", "interleaved"):
            raise InputError(f"split must be 'contiguous' or 'interleaved', got {split!r}")
        self.stream = stream
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.dtype = dtype
        self.drop_last = drop_last
        self.split = split
        self.threads = threads
        self.as_dataarray = as_dataarray

    def __len__(self) -> int:
        n = len(self.stream)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __repr__(self) -> str:
        return f"StreamDataset({len(self)} items, batch_size={self.batch_size}, {self.stream!r})"

    def _threads(self, num_workers: int) -> int:
        if self.threads is not None:
            return self.threads
        if num_workers <= 1:
            return int(self.stream.threads)
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 2
        return max(1, cpus // num_workers)

    def _sample(self, chip: Any) -> Any:
        if self.as_dataarray:
            return chip.to_dataarray()
        image = torch.from_numpy(chip.image)
        return {
            "image": image if self.dtype is None else image.to(self.dtype),
            "chip_id": chip.chip_id,
            "scene_id": chip.scene_id,
            "crs": chip.crs,
            "bounds": torch.from_numpy(chip.bounds),
            "index": chip.index,
        }

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = self.stream.with_threads(self._threads(workers))
        size = self.batch_size
        if size is None:
            part = stream.shard(worker, workers, unit=1, split=self.split)  # type: ignore[arg-type]
            if len(part):
                yield from (self._sample(chip) for chip in part)
            return
        if self.collate_fn is not None:
            part = stream.head(len(self) * size).shard(worker, workers, unit=size, split=self.split)  # type: ignore[arg-type]
            if not len(part):
                return
            for chips in part.chunks(size):
                items = [c.to_dataarray() for c in chips] if self.as_dataarray else chips
                yield self.collate_fn(items)
            return
        batches = stream.batch(size, drop_last=self.drop_last).shard(
            worker,
            workers,
            split=self.split,  # type: ignore[arg-type]
        )
        alloc: Any
        small: Callable[[npt.NDArray[Any]], Any] = torch.from_numpy
        if info is None:
            alloc = LocalBatches()
        elif hasattr(os, "memfd_create"):
            alloc = SharedBatches()
            small = inline_tensor
        else:  # pragma: no cover - not Linux
            alloc = shared_alloc
        try:
            for batch in batches.iter(alloc):
                image = batch.buffer
                if self.dtype is not None and image.dtype != self.dtype:
                    image = image.to(self.dtype)
                item = {
                    "image": image,
                    "chip_id": batch.chip_ids,
                    "scene_id": batch.scene_ids,
                    "crs": batch.crs,
                    "bounds": small(batch.bounds),
                    "index": small(batch.indexes),
                }
                del batch, image  # the item alone holds the buffer
                yield item
                del item
        finally:
            if isinstance(alloc, SharedBatches):
                alloc.close()

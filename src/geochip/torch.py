"""PyTorch side: a map-style Dataset over a store, and a collate that fills one buffer.

torch is an optional extra (``pip install 'geochip[torch]'``); importing this module without
it raises :class:`~geochip.errors.MissingExtraError`.

Samples follow torchgeo's convention: ``{"image", "mask", "crs", "bounds", "chip_id"}``.
``image`` keeps the store's dtype (e.g. ``torch.uint16``; convert in a transform), ``mask``
is ``torch.uint8`` with 255 = ignore. Zarr handles are opened lazily in the process that
reads, so the dataset is safe with ``num_workers > 0`` under ``fork`` and ``spawn``.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from torch.utils.data import DataLoader
    >>> from geochip.plan import plan_chips, assign_splits
    >>> from geochip.store import ChipSource, write_store
    >>> gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> plan = assign_splits(plan_chips(gbox, 16), block_size=32, seed=1).plan
    >>> image = np.ones((3, 64, 64), dtype="uint16")
    >>> path = write_store(pathlib.Path(tempfile.mkdtemp()) / "ds", plan,
    ...                    {"grid": ChipSource(image, ["r", "g", "b"], 0, mask=np.zeros((64, 64)))})
    >>> ds = ChipDataset(path, split="train")
    >>> batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_chips)))
    >>> tuple(batch["image"].shape), batch["image"].dtype, tuple(batch["bounds"].shape)
    ((4, 3, 16, 16), torch.uint16, (4, 4))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MissingExtraError
from .plan import SPLITS
from .store import ChipStore, open_store

try:
    import torch
    from torch.utils.data import Dataset, IterableDataset
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise MissingExtraError("torch", "torch") from err

__all__ = ["ChipDataset", "StreamDataset", "collate_chips", "torch_dtype"]

Sample = dict[str, Any]


class ChipDataset(Dataset[Sample]):
    """A map-style dataset over the chips of a store (optionally one split).

    ``transforms`` is called on every sample dict and returns a sample dict.
    """

    def __init__(
        self,
        path: str | Path | ChipStore,
        split: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        self.store = path if isinstance(path, ChipStore) else open_store(path)
        index = self.store.index
        if split is not None:
            if split not in SPLITS:
                raise InputError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
            index = index[index["split"] == split]
        index = index[index["status"] == "ok"]
        self.split = split
        self.transforms = transforms
        self.positions = index["index"].to_numpy(dtype=np.int64)
        self.chip_ids = index["chip_id"].tolist()
        self.crs = index["crs"].tolist()
        self.bounds = index[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"chip {i} out of range for a dataset of {len(self)}")
        image, mask = self.store.read(int(self.positions[i]))
        sample: Sample = {
            "image": torch.from_numpy(image),
            "crs": self.crs[i],
            "bounds": torch.from_numpy(self.bounds[i].copy()),
            "chip_id": self.chip_ids[i],
        }
        if mask is not None:
            sample["mask"] = torch.from_numpy(mask)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __repr__(self) -> str:
        return f"ChipDataset({str(self.store.path)!r}, split={self.split!r}, chips={len(self)})"


def _stack_into(tensors: Sequence[Any]) -> Any:
    """Copy equally shaped tensors/arrays into one new tensor (shared memory in a worker)."""
    first = tensors[0]
    first_t = first if isinstance(first, torch.Tensor) else torch.from_numpy(np.asarray(first))
    shape = (len(tensors), *first_t.shape)
    if torch.utils.data.get_worker_info() is not None:
        # In a DataLoader worker the batch crosses to the main process through shared
        # memory; allocating it there directly avoids one more copy.
        nbytes = int(np.prod(shape)) * first_t.element_size()
        storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
        out = torch.empty(0, dtype=first_t.dtype).set_(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=first_t.dtype)
    for i, t in enumerate(tensors):
        out[i].copy_(t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t)))
    return out


def collate_chips(samples: Sequence[Sample]) -> Sample:
    """Collate samples: arrays into one preallocated (N, ...) tensor each, keeping the dtype;
    ``bounds`` into an (N, 4) float64 tensor; strings into lists."""
    if not samples:
        raise InputError("cannot collate an empty batch")
    out: Sample = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor | np.ndarray):
            out[key] = _stack_into(values)
        elif isinstance(first, str):
            out[key] = list(values)
        else:
            out[key] = values
    return out


# --- streaming: chips straight from scenes into a DataLoader ---------------------------------


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype (``uint16`` -> ``torch.uint16``)."""
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype


def _shared_alloc(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """A tensor in shared memory and its numpy view: GDAL decodes into it, and the batch
    reaches the main process without another copy."""
    tdtype = torch_dtype(dtype)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    tensor = torch.empty(0, dtype=tdtype).set_(storage).view(shape)
    return tensor.numpy(), tensor


class StreamDataset(IterableDataset[Any]):
    """Chips or batches of a :class:`~geochip.stream.ChipStream` for a ``DataLoader``.

    Use ``DataLoader(dataset, batch_size=None, num_workers=...)``: batching happens here,
    across scene boundaries. With ``num_workers`` > 0 every worker reads its own share of
    whole batches (``split="contiguous"``: one run of neighbouring batches per worker, so
    tiles are decoded by one worker; ``"interleaved"``: round-robin, so the DataLoader
    yields batches in plan order), opening its own file handles lazily, under ``fork`` or
    ``spawn``; no chip is lost or duplicated, and the order is deterministic.

    Each item is ``{"image", "chip_id", "scene_id", "crs", "bounds", "index"}``; ``image``
    is (N, C, H, W) in the source dtype (or ``dtype``), written by GDAL straight into one
    preallocated (shared-memory, in a worker) buffer. ``collate_fn`` replaces that: it gets
    a list of :class:`~geochip.stream.Chip` (or of DataArrays with ``as_dataarray``).
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
        from .stream import ChipStream

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
            "crs": str(chip.scene.geobox.crs),
            "index": chip.index,
        }

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import get_worker_info

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
        alloc = _shared_alloc if info is not None else _local_alloc
        for batch in batches.iter(alloc):
            image = batch.buffer
            if self.dtype is not None and image.dtype != self.dtype:
                image = image.to(self.dtype)
            yield {
                "image": image,
                "chip_id": batch.chip_ids,
                "scene_id": batch.scene_ids,
                "crs": batch.crs,
                "bounds": torch.from_numpy(batch.bounds),
                "index": torch.from_numpy(batch.indexes),
            }


def _local_alloc(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    tensor = torch.empty(shape, dtype=torch_dtype(dtype))
    return tensor.numpy(), tensor

"""PyTorch side: a map-style Dataset over a store, and a collate that fills one buffer.

torch is an optional extra (``pip install 'geochip[torch]'``); importing this module without
it raises :class:`~geochip.errors.MissingExtraError`.

Samples follow torchgeo's convention: ``{"image", "mask", "crs", "bounds", "chip_id"}``.
``image`` keeps the store's dtype (e.g. ``torch.uint16``; convert in a transform), ``mask``
is ``torch.uint8`` with 255 = ignore. Files are opened in the process that reads, so the
dataset is safe with ``num_workers > 0`` under ``fork`` and ``spawn``.

**Why it is fast.** A DataLoader asks for a whole batch at once (``__getitems__``): the
dataset allocates one batch buffer and decodes every chip's chunk file straight into its
slot (:class:`~geochip.store.ArrayReader`; no Zarr call per chip). In a DataLoader worker
the buffer is a ``memfd`` filled with ``pwrite``/``sendfile`` (the kernel copies into
fresh shared pages, so no page faults are taken one 4 KiB page at a time); torch then
passes it to the main process as a file descriptor, without a copy. :func:`collate_chips`
sees that the samples are consecutive views of one buffer and returns the buffer itself;
with other samples it copies them into one preallocated tensor.

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

import contextlib
import mmap
import os
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InputError, MissingExtraError
from .plan import SPLITS
from .store import ArrayReader, ChipStore, open_store
from .stream import _UNREFERENCED

try:
    import torch
    from torch.utils.data import Dataset, IterableDataset
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise MissingExtraError("torch", "torch") from err

__all__ = ["ChipDataset", "StreamDataset", "collate_chips", "torch_dtype"]

Sample = dict[str, Any]

_TORCH_DTYPES = {
    np.dtype("uint8"): torch.uint8,
    np.dtype("int8"): torch.int8,
    np.dtype("uint16"): torch.uint16,
    np.dtype("int16"): torch.int16,
    np.dtype("uint32"): torch.uint32,
    np.dtype("int32"): torch.int32,
    np.dtype("uint64"): torch.uint64,
    np.dtype("int64"): torch.int64,
    np.dtype("float16"): torch.float16,
    np.dtype("float32"): torch.float32,
    np.dtype("float64"): torch.float64,
}


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


class _BatchBuffer:
    """One (n, *shape) tensor that chips are decoded into.

    In a DataLoader worker it lives in a memfd that torch shares with the main process by
    file descriptor; chips reach it through ``pwrite``/``sendfile`` (no user page faults).
    Elsewhere it is an ordinary tensor.
    """

    def __init__(self, n: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.n = n
        self.shape = shape
        self.dtype = dtype
        self.chip_bytes = int(np.prod(shape)) * dtype.itemsize
        self.fd: int | None = None
        self.tensor: Any = None
        self._scratch: npt.NDArray[Any] | None = None
        nbytes = n * self.chip_bytes
        if _in_worker() and hasattr(os, "memfd_create") and nbytes > 0:
            self.fd = os.memfd_create("geochip-batch", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, nbytes)
        else:
            self.tensor = torch.empty((n, *shape), dtype=_TORCH_DTYPES[dtype])

    def fill(self, k: int, reader: ArrayReader, i: int, scratch: npt.NDArray[Any]) -> None:
        """Put chip ``i`` of ``reader`` into slot ``k``."""
        if self.fd is None:
            reader.read_into(i, self.tensor[k].numpy())
            return
        offset = k * self.chip_bytes
        where = reader.locate(i) if reader._fast else None
        if where is not None and reader.codec == "none":
            path, start, nbytes = where
            if nbytes != self.chip_bytes:
                from .errors import StoreError

                raise StoreError(f"{path}: chip {i} has {nbytes} bytes, expected {self.chip_bytes}")
            src = os.open(path, os.O_RDONLY)
            try:
                os.lseek(self.fd, offset, os.SEEK_SET)
                left, pos = nbytes, start
                while left:
                    sent = os.sendfile(self.fd, src, pos, left)
                    if sent <= 0:
                        raise OSError(f"{path}: sendfile stopped after {nbytes - left} bytes")
                    pos += sent
                    left -= sent
            finally:
                os.close(src)
            return
        reader.read_into(i, scratch)
        os.pwrite(self.fd, scratch.reshape(-1).view(np.uint8).data, offset)

    def finish(self) -> Any:
        """The filled (n, *shape) tensor."""
        if self.fd is None:
            return self.tensor
        try:
            nbytes = self.n * self.chip_bytes
            storage = torch.UntypedStorage._new_shared_fd_cpu(self.fd, nbytes)  # type: ignore[attr-defined]
        finally:
            os.close(self.fd)
            self.fd = None
        flat = torch.empty(0, dtype=_TORCH_DTYPES[self.dtype]).set_(storage)
        return flat.view((self.n, *self.shape))


class ChipDataset(Dataset[Sample]):
    """A map-style dataset over the usable chips of a store (optionally one split).

    ``transforms`` is called on every sample dict and returns a sample dict. Chips whose
    status is not ``ok`` (over the nodata limit, failed) are left out.
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
        self._pid: int | None = None
        self._readers: dict[str, ArrayReader] = {}
        self._scratch: dict[str, npt.NDArray[Any]] = {}

    def __len__(self) -> int:
        return len(self.positions)

    def _reader(self, name: str) -> ArrayReader:
        # readers hold no open file, but their caches belong to one process
        if self._pid != os.getpid():
            self._readers = {}
            self._scratch = {}
            self._pid = os.getpid()
            if _in_worker():
                # DataLoader workers already use every core: Blosc's own threads would
                # only fight them (measured: slower than no worker at all).
                import numcodecs.blosc

                numcodecs.blosc.use_threads = False
        if name not in self._readers:
            reader = ArrayReader(self.store.path / "chips.zarr" / name)
            self._readers[name] = reader
            self._scratch[name] = np.empty(reader.chip_shape, dtype=reader.dtype)
        return self._readers[name]

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"chip {i} out of range for a dataset of {len(self)}")
        return i % len(self)

    def _sample(self, i: int, image: Any, mask: Any) -> Sample:
        sample: Sample = {
            "image": image,
            "crs": self.crs[i],
            "bounds": torch.from_numpy(self.bounds[i].copy()),
            "chip_id": self.chip_ids[i],
        }
        if mask is not None:
            sample["mask"] = mask
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __getitem__(self, i: int) -> Sample:
        i = self._check(int(i))
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """A batch of samples whose arrays are consecutive views of one batch buffer."""
        idx = [self._check(int(i)) for i in indices]
        names = ["image"] + (["mask"] if self.store.has_mask else [])
        views: dict[str, Any] = {}
        for name in names:
            reader = self._reader(name)
            buffer = _BatchBuffer(len(idx), reader.chip_shape, reader.dtype)
            try:
                for k, i in enumerate(idx):
                    buffer.fill(k, reader, int(self.positions[i]), self._scratch[name])
            except BaseException:
                if buffer.fd is not None:
                    os.close(buffer.fd)
                raise
            views[name] = buffer.finish()
        mask = views.get("mask")
        return [
            self._sample(i, views["image"][k], None if mask is None else mask[k])
            for k, i in enumerate(idx)
        ]

    def __repr__(self) -> str:
        return f"ChipDataset({str(self.store.path)!r}, split={self.split!r}, chips={len(self)})"


def _as_tensor(value: Any) -> Any:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


def _base_of_views(tensors: Sequence[Any]) -> Any:
    """The (N, ...) tensor whose consecutive slots the tensors are, or None."""
    first = tensors[0]
    if not all(isinstance(t, torch.Tensor) for t in tensors) or not first.is_contiguous():
        return None
    storage = first.untyped_storage()
    step = first.numel()
    start = first.storage_offset()
    for k, t in enumerate(tensors):
        if (
            t.untyped_storage().data_ptr() != storage.data_ptr()
            or t.storage_offset() != start + k * step
            or t.shape != first.shape
            or t.dtype != first.dtype
            or not t.is_contiguous()
        ):
            return None
    if start + len(tensors) * step > storage.nbytes() // first.element_size():
        return None
    shape = (len(tensors), *first.shape)
    stride = torch.empty(shape, device="meta").stride()
    return torch.empty(0, dtype=first.dtype).set_(storage, start, shape, stride)


def _stack_into(tensors: Sequence[Any]) -> Any:
    """One (N, ...) tensor: the buffer the samples already share, or a preallocated copy."""
    base = _base_of_views(tensors)
    if base is not None:
        return base
    first_t = _as_tensor(tensors[0])
    shape = (len(tensors), *first_t.shape)
    if _in_worker():
        # In a DataLoader worker the batch crosses to the main process through shared
        # memory; allocating it there directly avoids one more copy.
        nbytes = int(np.prod(shape)) * first_t.element_size()
        storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
        out = torch.empty(0, dtype=first_t.dtype).set_(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=first_t.dtype)
    for i, t in enumerate(tensors):
        out[i].copy_(_as_tensor(t))
    return out


def collate_chips(samples: Sequence[Sample]) -> Sample:
    """Collate samples: arrays into one (N, ...) tensor each, keeping the dtype (no copy when
    they are consecutive views of one batch buffer, as :class:`ChipDataset` returns them);
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


# A DataLoader worker hands every batch to the main process in shared memory. Allocating
# that memory afresh for every batch (what torch does) costs the kernel more than GDAL
# spends decoding at stride 256 on this kind of machine: ~1.8 ms per 2 MB chip, against
# ~1.4 ms of decoding. So each worker keeps a few shared buffers and decodes into them
# again once the main process has let go of the batch it last sent in one:
#
# - a buffer is a memfd, mapped once in the worker, with a release counter after the
#   pixels; the worker yields a tensor over it (a private subclass, so that
#   multiprocessing pickles it with :func:`_reduce_shared_batch`, and only there);
# - pickling sends the memfd (as torch does) and counts the send; the main process maps
#   it and makes a plain tensor on that mapping, and when the last tensor on it dies it
#   adds one to the release counter (:func:`_rebuild_shared_batch`);
# - the worker reuses a buffer when every send has been released and nothing in the
#   worker holds it any more (its reference count, as :class:`~geochip.stream.Recycler`).
#
# A batch the main process keeps is never written again; past ``keep`` busy buffers the
# worker makes a new one per batch (the plain behaviour). If the main process forwards a
# batch to another process, torch copies it into new shared memory first (the tensor is
# not torch-shared), so that process never sees the buffer reused.

_TRAILER = 64  # bytes after the pixels: the release counter (int64)
_RELEASE_LOCK = threading.Lock()


class _SentTensor(torch.Tensor):
    """A tensor that multiprocessing sends its own way (a reducer registered for the
    subclass); operations on it give plain tensors (which torch sends the usual way), and
    ordinary pickling (torch.save, pickle.dumps) a plain tensor, by value."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_identity, (self.as_subclass(torch.Tensor),))


def _identity(value: Any) -> Any:
    return value


class _SharedBatchTensor(_SentTensor):
    """A worker's batch tensor over a :class:`_SharedSlot` (sent by reference to it)."""

    _geochip_slot: _SharedSlot


class _SharedSlot:
    """One shared batch buffer of a DataLoader worker: a memfd with a release counter.

    The memfd is closed when the slot is garbage (no tensor over it is left to send); the
    worker's mapping goes with the last array on it.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.fd = os.memfd_create("geochip-batch", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, nbytes + _TRAILER)
        self.mm = mmap.mmap(self.fd, nbytes + _TRAILER)
        # every view handed out is a view of this array: its reference count says
        # whether anything in the worker still holds the buffer
        self.pixels = [np.frombuffer(self.mm, dtype=np.uint8, count=nbytes)]
        self.sent = 0

    def released(self) -> int:
        """How many sends the main process has let go of."""
        return int(struct.unpack_from("q", self.mm, self.nbytes)[0])

    def free(self) -> bool:
        """Whether the buffer can be written again."""
        if _UNREFERENCED is None:  # pragma: no cover - free-threaded Python
            return False
        return sys.getrefcount(self.pixels[0]) == _UNREFERENCED and self.released() == self.sent

    def take(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        """A numpy view of ``shape`` at the start of the buffer, and the tensor over it."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        array = self.pixels[0][:nbytes].view(dtype).reshape(shape)
        tensor = torch.from_numpy(array).as_subclass(_SharedBatchTensor)
        tensor._geochip_slot = self
        return array, tensor


class _SharedBatches:
    """The batch allocator of a DataLoader worker: shared buffers, reused when released;
    past ``keep`` busy ones, a new buffer per batch."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.slots: list[_SharedSlot] = []
        self.made = 0

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        for slot in self.slots:
            if slot.nbytes >= nbytes and slot.free():
                return slot.take(shape, dtype)
        slot = _SharedSlot(nbytes)
        self.made += 1
        if len(self.slots) < self.keep:
            self.slots.append(slot)
        return slot.take(shape, dtype)

    def close(self) -> None:
        """Let go of the kept buffers (each closes once nothing in flight uses it)."""
        self.slots.clear()


def _reduce_shared_batch(tensor: _SharedBatchTensor) -> Any:
    """How multiprocessing sends a worker's batch: the memfd, and where the tensor lies."""
    from multiprocessing.reduction import DupFd

    slot = tensor._geochip_slot
    slot.sent += 1
    return (
        _rebuild_shared_batch,
        (
            DupFd(slot.fd),
            slot.nbytes,
            str(tensor.dtype).removeprefix("torch."),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.storage_offset(),
        ),
    )


def _rebuild_shared_batch(
    dupfd: Any,
    nbytes: int,
    dtype: str,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    offset: int,
) -> torch.Tensor:
    """In the main process: a tensor on a mapping of the worker's buffer; the buffer is
    released when the last tensor on the mapping dies."""
    fd = dupfd.detach()
    try:
        mm = mmap.mmap(fd, nbytes + _TRAILER)
    finally:
        os.close(fd)
    pixels = memoryview(mm)[:nbytes]
    flat = torch.frombuffer(pixels, dtype=getattr(torch, dtype))
    weakref.finalize(pixels, _release_shared_batch, mm, nbytes)
    del pixels
    return flat.as_strided(shape, stride, offset)


def _release_shared_batch(mm: mmap.mmap, nbytes: int) -> None:
    with _RELEASE_LOCK:
        (count,) = struct.unpack_from("q", mm, nbytes)
        struct.pack_into("q", mm, nbytes, count + 1)
    with contextlib.suppress(BufferError):  # nothing else exports the mapping
        mm.close()


class _InlineTensor(_SentTensor):
    """A small tensor of a worker's batch (bounds, indexes) that multiprocessing sends by
    value, in the pickle, instead of in a shared-memory file of its own (one fewer file
    descriptor to pass per tensor)."""


def _reduce_inline(tensor: _InlineTensor) -> Any:
    plain = tensor.as_subclass(torch.Tensor)
    return (_rebuild_inline, (plain.numpy().copy(),))


def _rebuild_inline(array: npt.NDArray[Any]) -> torch.Tensor:
    return torch.from_numpy(array)


def _inline(array: npt.NDArray[Any]) -> torch.Tensor:
    return torch.from_numpy(array).as_subclass(_InlineTensor)


if hasattr(os, "memfd_create"):
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(_SharedBatchTensor, _reduce_shared_batch)
    ForkingPickler.register(_InlineTensor, _reduce_inline)


def _shared_alloc(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """A tensor in torch's shared memory and its numpy view (where memfd is missing)."""
    tdtype = torch_dtype(dtype)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    tensor = torch.empty(0, dtype=tdtype).set_(storage).view(shape)
    return tensor.numpy(), tensor


class _LocalBatches:
    """The batch allocator outside workers: recycled numpy arrays, as torch tensors."""

    def __init__(self) -> None:
        from .stream import Recycler

        self.recycler = Recycler()

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        array, _ = self.recycler(shape, dtype)
        return array, torch.from_numpy(array)


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
        alloc: Any
        small: Callable[[npt.NDArray[Any]], Any] = torch.from_numpy
        if info is None:
            alloc = _LocalBatches()
        elif hasattr(os, "memfd_create"):
            alloc = _SharedBatches()
            small = _inline
        else:  # pragma: no cover - not Linux
            alloc = _shared_alloc
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
            if isinstance(alloc, _SharedBatches):
                alloc.close()

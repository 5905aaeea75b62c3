"""How a DataLoader worker hands batches to the main process: shared buffers reused once
released, small tensors sent inline; the batch allocators of
:class:`~geochip.ml.stream.StreamDataset` and of the normalised batches of
:class:`~geochip.ml.torch.ChipDataset`.

A DataLoader worker hands every batch to the main process in shared memory. Allocating that
memory afresh for every batch (what torch does) costs the kernel more than GDAL spends
decoding at stride 256 on this kind of machine: ~1.8 ms per 2 MB chip, against ~1.4 ms of
decoding. So each worker keeps a few shared buffers (:class:`SharedBatches`) and decodes
into them again once the main process has let go of the batch it last sent in one:

- a buffer is a memfd, mapped once in the worker, with a release counter after the pixels;
  the worker yields a tensor over it (a private subclass, so that multiprocessing pickles
  it with :func:`_reduce_shared_batch`, and only there);
- pickling sends the memfd (as torch does) and counts the send; the main process maps it
  and makes a plain tensor on that mapping, and when the last tensor on it dies it adds
  one to the release counter (:func:`_rebuild_shared_batch`);
- the worker reuses a buffer when every send has been released and nothing in the worker
  holds it any more (its reference count, as :class:`~geochip.read.recycler.Recycler`).
- several arrays may share one buffer (:meth:`SharedBatches.many`: an image and its valid
  mask), and any view of one may be sent (a sample of a batch): the tensor says where it
  starts in the buffer; :func:`same_kind` gives a view made by torch the subclass back.

A batch the main process keeps is never written again; past ``keep`` busy buffers the
worker makes a new one per batch (the plain behaviour). If the main process forwards a
batch to another process, torch copies it into new shared memory first (the tensor is not
torch-shared), so that process never sees the buffer reused.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import sys
import threading
import weakref
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ..read.recycler import UNREFERENCED, Recycler

_TRAILER = 64  # bytes after the pixels: the release counter (int64)
_ALIGN = 64  # arrays sharing one buffer start on a multiple of this many bytes

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
        if UNREFERENCED is None:  # pragma: no cover - free-threaded Python
            return False
        return sys.getrefcount(self.pixels[0]) == UNREFERENCED and self.released() == self.sent

    def take(self, shape: tuple[int, ...], dtype: np.dtype[Any], start: int = 0) -> tuple[Any, Any]:
        """A numpy view of ``shape`` at byte ``start`` of the buffer, and the tensor over it."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        array = self.pixels[0][start : start + nbytes].view(dtype).reshape(shape)
        tensor = torch.from_numpy(array).as_subclass(_SharedBatchTensor)
        tensor._geochip_slot = self
        return array, tensor


class SharedBatches:
    """The batch allocator of a DataLoader worker: shared buffers, reused when released;
    past ``keep`` busy ones, a new buffer per batch."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.slots: list[_SharedSlot] = []
        self.made = 0

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        return self.many((shape, dtype))[0]

    def many(self, *specs: tuple[tuple[int, ...], np.dtype[Any]]) -> list[tuple[Any, Any]]:
        """Several arrays (``(shape, dtype)`` each) and their tensors in one buffer (a
        batch's image and its mask: one file descriptor to send, one buffer to reuse)."""
        starts, nbytes = [], 0
        for shape, dtype in specs:
            starts.append(nbytes)
            nbytes += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
        for slot in self.slots:
            if slot.nbytes >= nbytes and slot.free():
                break
        else:
            slot = _SharedSlot(nbytes)
            self.made += 1
            if len(self.slots) < self.keep:
                self.slots.append(slot)
        return [
            slot.take(shape, np.dtype(dtype), start)
            for (shape, dtype), start in zip(specs, starts, strict=True)
        ]

    def close(self) -> None:
        """Let go of the kept buffers (each closes once nothing in flight uses it)."""
        self.slots.clear()


def _reduce_shared_batch(tensor: _SharedBatchTensor) -> Any:
    """How multiprocessing sends a worker's batch: the memfd, and where the tensor lies."""
    slot = tensor._geochip_slot
    # where the tensor starts in the buffer, in its elements (it may be a view anywhere in
    # it: one of several arrays, or one sample of a batch)
    size = tensor.element_size()
    start = tensor.untyped_storage().data_ptr() - slot.pixels[0].ctypes.data
    start += int(tensor.storage_offset()) * size
    if start % size:  # pragma: no cover - take() aligns every array
        raise ValueError(f"a shared batch tensor starts at byte {start}, not on an element")
    slot.sent += 1
    return (
        _rebuild_shared_batch,
        (
            DupFd(slot.fd),
            slot.nbytes,
            str(tensor.dtype).removeprefix("torch."),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            start // size,
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
    tdtype = getattr(torch, dtype)
    flat = torch.frombuffer(pixels, dtype=tdtype, count=nbytes // tdtype.itemsize)
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


def same_kind(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` (a view of the same buffer as ``like``) sent the way ``like`` is: a
    worker's shared batch by reference to its buffer, anything else as torch sends it."""
    if not isinstance(like, _SharedBatchTensor):
        return tensor
    kept = tensor.as_subclass(_SharedBatchTensor)
    kept._geochip_slot = like._geochip_slot
    return kept


def inline_tensor(array: npt.NDArray[Any]) -> torch.Tensor:
    """A small array as a tensor that multiprocessing sends inside the pickle."""
    return torch.from_numpy(array).as_subclass(_InlineTensor)


if hasattr(os, "memfd_create"):
    ForkingPickler.register(_SharedBatchTensor, _reduce_shared_batch)
    ForkingPickler.register(_InlineTensor, _reduce_inline)


def shared_alloc(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """A tensor in torch's shared memory and its numpy view (where memfd is missing)."""
    tdtype = torch_dtype(dtype)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    tensor = torch.empty(0, dtype=tdtype).set_(storage).view(shape)
    return tensor.numpy(), tensor


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype (``uint16`` -> ``torch.uint16``)."""
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype


class LocalBatches:
    """The batch allocator outside workers: recycled numpy arrays, as torch tensors."""

    def __init__(self) -> None:
        self.recycler = Recycler()

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        array, _ = self.recycler(shape, dtype)
        return array, torch.from_numpy(array)

"""PyTorch side: a map-style Dataset over a store, and a collate that fills one buffer.

torch is an optional extra (``pip install 'geochip[torch]'``); importing this module without
it raises :class:`~geochip.errors.MissingExtraError`.

Samples follow torchgeo's convention: ``{"image", "mask", "crs", "bounds", "chip_id"}``.
``image`` keeps the store's dtype (e.g. ``torch.uint16``; convert in a transform), ``mask``
is ``torch.uint8`` with 255 = ignore. Files are opened in the process that reads, so the
dataset is safe with ``num_workers > 0`` under ``fork`` and ``spawn``. A store in object
storage (``ChipDataset("s3://bucket/ds")``) is read through byte ranges, each batch's chips
fetched concurrently; every worker opens its own client after the fork.

**Why it is fast.** A DataLoader asks for a whole batch at once (``__getitems__``): the
dataset allocates one batch buffer and decodes every chip's chunk file straight into its
slot (:class:`~geochip.store.reader.ArrayReader`; no Zarr call per chip). In a DataLoader worker
the buffer is a ``memfd`` filled with ``pwrite``/``sendfile`` (the kernel copies into
fresh shared pages, so no page faults are taken one 4 KiB page at a time); torch then
passes it to the main process as a file descriptor, without a copy. :func:`collate_chips`
sees that the samples are consecutive views of one buffer and returns the buffer itself;
with other samples it copies them into one preallocated tensor. A normalised batch
(``dtype="float32"``, ``normalize=...``) is written by the worker straight into a shared
buffer that it reuses once the main process lets go of it
(:class:`~geochip.ml.sharing.SharedBatches`; a fresh 64 MiB per batch cost more than the
normalising), ``valid`` beside it.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from torch.utils.data import DataLoader
    >>> from geochip.plan.chips import plan_chips
    >>> from geochip.plan.splits import assign_splits
    >>> from geochip.store.writer import ChipSource, write_store
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numcodecs.blosc
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from ..core.storage import ObjectPath
from ..errors import InputError, StoreError
from ..plan.splits import SPLITS
from ..store.bandstats import band_stats
from ..store.reader import ArrayReader, ChipStore, open_store
from .normalize import Normalizer
from .sharing import LocalBatches, SharedBatches, same_kind, torch_dtype

__all__ = [
    "ChipDataset",
    "Sample",
    "collate_chips",
    "torch_dtype",
]

Sample = dict[str, Any]


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
            self.tensor = torch.empty((n, *shape), dtype=torch_dtype(dtype))

    def fill(self, k: int, reader: ArrayReader, i: int, scratch: npt.NDArray[Any]) -> None:
        """Put chip ``i`` of ``reader`` into slot ``k``."""
        if self.fd is None:
            reader.read_into(i, self.tensor[k].numpy())
            return
        offset = k * self.chip_bytes
        where = reader.locate(i) if reader._fast and not reader.remote else None
        if where is not None and reader.codec == "none":
            path, start, nbytes = where
            if nbytes != self.chip_bytes:
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
        flat = torch.empty(0, dtype=torch_dtype(self.dtype)).set_(storage)
        return flat.view((self.n, *self.shape))


class ChipDataset(Dataset[Sample]):
    """A map-style dataset over the usable chips of a store (optionally one split).

    ``transforms`` is called on every sample dict and returns a sample dict. Chips whose
    status is not ``ok`` are left out: ``failed`` ones always, ``nodata`` ones (no data at
    all, or over the build's nodata limit) unless ``include_nodata=True`` (their pixels
    read as the image's nodata and the mask's ignore value where they were not stored).

    ``dtype=None`` (the default) keeps the store's dtype. ``dtype="float32"`` (or another
    float) with ``normalize="zscore"``, ``"percentile"``, a callable or None gives model-ready
    images normalised with the band statistics of ``stats_split`` (see
    :mod:`geochip.ml.normalize`): nodata and NaN become ``fill`` and the sample gains
    ``valid``, a bool (H, W) (or (T, H, W)) mask of pixels where every band is valid.
    ``normalize`` alone implies ``dtype="float32"``.
    """

    def __init__(
        self,
        path: str | Path | ObjectPath | ChipStore,
        split: str | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        *,
        include_nodata: bool = False,
        dtype: Any = None,
        normalize: str | Callable[[Any], Any] | None = None,
        fill: float = 0.0,
        stats_split: str = "train",
    ) -> None:
        self.store = path if isinstance(path, ChipStore) else open_store(path)
        index = self.store.index
        if split is not None:
            if split not in SPLITS:
                raise InputError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
            index = index[index["split"] == split]
        usable = ("ok", "nodata") if include_nodata else ("ok",)
        index = index[index["status"].isin(usable)]
        self.split = split
        self.transforms = transforms
        self.positions = index["index"].to_numpy(dtype=np.int64)
        self.chip_ids = index["chip_id"].tolist()
        self.crs = index["crs"].tolist()
        self.bounds = index[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64)
        self._pid: int | None = None
        self._readers: dict[str, ArrayReader] = {}
        self._scratch: dict[str, npt.NDArray[Any]] = {}
        self._shared: SharedBatches | None = None
        self._local: LocalBatches | None = None
        self.normalizer: Normalizer | None = None
        if dtype is not None or normalize is not None:
            stats = band_stats(self.store, stats_split) if isinstance(normalize, str) else None
            self.normalizer = Normalizer(
                stats,
                normalize,
                "float32" if dtype is None else dtype,
                nodata=self.store.manifest["image"].get("nodata"),
                fill=fill,
            )

    def __len__(self) -> int:
        return len(self.positions)

    def __getstate__(self) -> dict[str, Any]:
        # a worker's shared buffers (file descriptors, mappings) stay in that process
        state = self.__dict__.copy()
        state["_shared"] = state["_local"] = None
        return state

    def _reader(self, name: str) -> ArrayReader:
        # readers hold no open file, but their caches belong to one process
        if self._pid != os.getpid():
            self._readers = {}
            self._scratch = {}
            self._shared = None
            self._local = None
            self._pid = os.getpid()
            if _in_worker():
                # DataLoader workers already use every core: Blosc's own threads would
                # only fight them (measured: slower than no worker at all).

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

    def _sample(self, i: int, image: Any, mask: Any, valid: Any = None) -> Sample:
        sample: Sample = {
            "image": image,
            "crs": self.crs[i],
            "bounds": torch.from_numpy(self.bounds[i].copy()),
            "chip_id": self.chip_ids[i],
        }
        if mask is not None:
            sample["mask"] = mask
        if valid is not None:
            sample["valid"] = valid
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
        if self.normalizer is not None:
            views["image"], views["valid"] = self._normalized(idx)
            names.remove("image")
        for name in names:
            reader = self._reader(name)
            reader.prefetch([self.positions[i] for i in idx])  # a remote store: concurrently
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
        valid = views.get("valid")
        return [
            self._sample(
                i,
                same_kind(views["image"][k], views["image"]),
                None if mask is None else mask[k],
                None if valid is None else same_kind(valid[k], valid),
            )
            for k, i in enumerate(idx)
        ]

    def _normalized(self, idx: Sequence[int]) -> tuple[Any, Any]:
        """The batch as normalised floats (in shared memory in a worker), and its valid mask."""
        assert self.normalizer is not None
        reader = self._reader("image")
        shape = (len(idx), *reader.chip_shape)
        raw = self._scratch.get("raw")
        if raw is None or raw.shape != shape:
            raw = np.empty(shape, dtype=reader.dtype)
            self._scratch["raw"] = raw
        reader.prefetch([self.positions[i] for i in idx])
        for k, i in enumerate(idx):
            reader.read_into(int(self.positions[i]), raw[k])
        dtype = self.normalizer.dtype
        if not (_in_worker() and hasattr(os, "memfd_create") and len(idx)):
            # batches of earlier calls that nothing holds any more are written again (their
            # pages are warm; a fresh 64 MiB per batch faults in every page)
            if self._local is None:
                self._local = LocalBatches()
            values, out = self._local(shape, dtype)
            valid, mask = self._local((*shape[:-3], *shape[-2:]), np.dtype(bool))
            self.normalizer(raw, values, valid=valid)
            return out, mask
        # a DataLoader worker: normalise straight into a shared buffer that the main
        # process has let go of (its pages are mapped and warm; a fresh one per batch
        # costs the kernel more than the normalising), the valid mask beside it
        if self._shared is None:
            self._shared = SharedBatches()
        (values, out), (valid, mask) = self._shared.many(
            (shape, dtype), ((*shape[:-3], *shape[-2:]), np.dtype(bool))
        )
        self.normalizer(raw, values, valid=valid)
        return out, mask

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
    return same_kind(torch.empty(0, dtype=first.dtype).set_(storage, start, shape, stride), first)


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

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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MissingExtraError
from .plan import SPLITS
from .store import ChipStore, open_store

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise MissingExtraError("torch", "torch") from err

__all__ = ["ChipDataset", "collate_chips"]

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

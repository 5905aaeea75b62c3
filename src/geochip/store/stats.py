"""What the index records about each chip once it is read (:class:`ChipStats`): status,
nodata fraction, pixels per class, and a checksum of its bytes.

Statuses: ``ok``; ``nodata``: the chip holds no data at all (every value of every band,
at every time step, is nodata or NaN: :func:`all_nodata`) or more nodata pixels than the
build's ``max_nodata_fraction``; ``failed``: it could not be read. Readers
(``ChipDataset``, ``geochip check``) use ``ok`` chips only, unless asked otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ChipStats",
    "all_nodata",
    "chip_checksum",
    "chip_stats",
    "nodata_pixels",
]


@dataclass(frozen=True)
class ChipStats:
    """What the index records about one chip after it was read."""

    status: str
    nodata_fraction: float
    class_counts: str
    checksum: str
    error: str = ""
    empty_steps: int | None = None
    """Time stacks: the chip's time steps without any valid pixel (None: no time axis)."""

    def to_json(self) -> dict[str, Any]:
        """Plain data for a batch record."""
        out: dict[str, Any] = {
            "status": self.status,
            "nodata_fraction": self.nodata_fraction,
            "class_counts": self.class_counts,
            "checksum": self.checksum,
            "error": self.error,
        }
        if self.empty_steps is not None:
            out["empty_steps"] = self.empty_steps
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChipStats:
        """The inverse of :meth:`to_json`."""
        empty = data.get("empty_steps")
        return cls(
            str(data["status"]),
            float(data["nodata_fraction"]),
            str(data["class_counts"]),
            str(data["checksum"]),
            str(data.get("error", "")),
            None if empty is None else int(empty),
        )


def nodata_pixels(image: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    """(y, x) booleans: pixels where any band (any time step) is nodata (or NaN)."""
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        bad = (
            np.isnan(image)
            if np.issubdtype(image.dtype, np.floating)
            else np.zeros_like(image, bool)
        )
    else:
        bad = image == nodata
        if np.issubdtype(image.dtype, np.floating):
            bad |= np.isnan(image)
    return np.asarray(bad.reshape(-1, *image.shape[-2:]).any(axis=0))


def all_nodata(image: npt.NDArray[Any], nodata: float | int | None) -> bool:
    """Whether every value of ``image`` (every band, every time step) is nodata or NaN.

    >>> all_nodata(np.array([[0, 0], [0, 0]], "uint8"), 0), all_nodata(np.zeros(4, "uint8"), 1)
    (True, False)
    >>> all_nodata(np.array([np.nan, -9999.0]), -9999), all_nodata(np.array([1.0]), None)
    (True, False)
    """
    nan_nodata = nodata is None or (isinstance(nodata, float) and np.isnan(nodata))
    if np.issubdtype(image.dtype, np.floating):
        bad = np.isnan(image)
        if not nan_nodata:
            bad |= image == nodata
        return bool(bad.all())
    return not nan_nodata and bool((image == nodata).all())


def chip_checksum(image: npt.NDArray[Any], mask: npt.NDArray[Any] | None) -> str:
    """sha256 of the chip's image bytes, then its mask bytes (C order)."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()


def chip_stats(
    image: npt.NDArray[Any],
    mask: npt.NDArray[Any] | None,
    nodata: float | int | None,
    *,
    max_nodata_fraction: float = 1.0,
    invalid: npt.NDArray[np.bool_] | None = None,
) -> ChipStats:
    """Nodata fraction, class counts and checksum of one chip; status ``nodata`` when every
    value is nodata (:func:`all_nodata`) or the nodata fraction exceeds
    ``max_nodata_fraction``. ``invalid`` adds pixels to count as nodata (e.g. padding)."""
    bad = nodata_pixels(image, nodata)
    if invalid is not None:
        bad = bad | invalid
    fraction = float(bad.mean())
    counts = "{}"
    if mask is not None:
        values, n = np.unique(mask, return_counts=True)
        counts = json.dumps(
            {str(int(v)): int(c) for v, c in zip(values, n, strict=False)}, sort_keys=True
        )
    empty = fraction > max_nodata_fraction or all_nodata(image, nodata)
    status = "nodata" if empty else "ok"
    return ChipStats(status, fraction, counts, chip_checksum(image, mask))

"""The store's format: its name and version, the mask's "ignore" value, chip statuses, the
chunk layout (codec, shards) and how a build cuts the arrays into batches of whole chunk
files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyproj
import rasterio

from .._version import __version__
from ..errors import InputError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MASK_IGNORE",
    "STATUSES",
    "Layout",
    "class_labels",
    "name_class_counts",
    "iter_batches",
]

FORMAT = "geochip-store"

#: 2: statuses other than "ok" (nodata, failed), an ``error`` column, layout in the manifest.
FORMAT_VERSION = 2

#: Mask value of pixels that carry no label for training (cloud, nodata, padding).
MASK_IGNORE = 255


def class_labels(classes: Mapping[str, int] | None) -> dict[str, str]:
    """Mask value (as text, as class counts are keyed) -> the label every command prints:
    the class's name, ``ignore`` for :data:`MASK_IGNORE`, ``background`` for an unnamed 0.

    >>> class_labels({"water": 1, "land": 2})
    {'0': 'background', '255': 'ignore', '1': 'water', '2': 'land'}
    """
    names = {"0": "background", str(MASK_IGNORE): "ignore"}
    names.update({str(int(v)): str(k) for k, v in (classes or {}).items()})
    return names


def name_class_counts(
    counts: Mapping[str, int], classes: Mapping[str, int] | None
) -> dict[str, int]:
    """Pixel counts keyed by mask value, keyed by :func:`class_labels` instead (a value
    without a name keeps its number).

    >>> name_class_counts({"1": 5, "0": 2, "7": 1}, {"water": 1})
    {'water': 5, 'background': 2, '7': 1}
    """
    names = class_labels(classes)
    out: dict[str, int] = {}
    for key, value in counts.items():
        label = names.get(str(key), str(key))
        out[label] = out.get(label, 0) + int(value)
    return out


#: Status of a chip in the index: written and usable / over the nodata limit / not read.
STATUSES = ("ok", "nodata", "failed")


@dataclass(frozen=True)
class Layout:
    """How chips are laid out in chunk files: the codec and chips per shard.

    ``codec``: ``"none"``, ``"lz4"`` (Blosc lz4 with byte shuffle) or ``"zstd"``;
    ``chips_per_shard``: 1 for one chip per chunk file, more for Zarr shards of that many
    chips (one chip per inner chunk). The default (uncompressed, one chip per file) is the
    trade-off measured by ``benchmarks/store.py``: the fastest to train from; lz4 saves disk
    at a read cost.
    """

    codec: str = "none"
    level: int | None = None
    chips_per_shard: int = 1

    def __post_init__(self) -> None:
        if self.codec not in {"none", "lz4", "zstd"}:
            raise InputError(f"codec must be none, lz4 or zstd, got {self.codec!r}")
        if self.chips_per_shard < 1:
            raise InputError(f"chips_per_shard must be >= 1, got {self.chips_per_shard}")

    def compressors(self) -> Any:
        """The Zarr v3 compressors for this codec."""
        from zarr.codecs import BloscCodec, ZstdCodec  # lazy: see above

        if self.codec == "none":
            return None
        if self.codec == "lz4":
            return BloscCodec(
                cname="lz4", clevel=self.level if self.level is not None else 5, shuffle="shuffle"
            )
        return ZstdCodec(level=self.level if self.level is not None else 3)

    def describe(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return {"codec": self.codec, "level": self.level, "chips_per_shard": self.chips_per_shard}


def store_versions() -> dict[str, str]:
    """The versions a manifest records (geochip, GDAL, PROJ, rasterio, zarr, numpy)."""
    import zarr  # lazy: ~0.6 s; DataLoader workers read chips without it

    return {
        "geochip": __version__,
        "gdal": str(rasterio.__gdal_version__),
        "proj": str(pyproj.proj_version_str),
        "rasterio": str(rasterio.__version__),
        "zarr": str(zarr.__version__),
        "numpy": np.__version__,
    }


def iter_batches(n: int, batch_size: int, per_file: int) -> Iterable[tuple[int, int]]:
    """[start, stop) runs of chips covering whole chunk files (shards), in order.

    >>> list(iter_batches(10, 4, 1)), list(iter_batches(10, 5, 4))
    ([(0, 4), (4, 8), (8, 10)], [(0, 8), (8, 10)])
    """
    step = max(per_file, -(-batch_size // per_file) * per_file)
    for start in range(0, n, step):
        yield start, min(start + step, n)

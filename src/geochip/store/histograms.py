"""Exact, mergeable histograms and moments of chip pixels, per split and band (or per
(step, band)): the arithmetic under :mod:`geochip.store.bandstats`.

A batch of chips (N, [T,] C, H, W) gives one :class:`BandAccumulator` per split and band
(:func:`batch_stats`): the histogram of every group comes from one ``np.bincount`` over keys
offset per group (invalid pixels go to a sink bin), so the cost is one pass over the batch
whatever the number of bands and steps. Accumulators merge by adding histograms (and, for
float data, Chan et al.'s parallel update of mean and M2), in batch order
(:func:`merge_batches`); :func:`summarize` turns one into count, mean, std, min, max and
percentiles. Bins: one per value for 8/16-bit integers (every number exact), the bfloat16
value otherwise. The histograms of ``stats.json`` are written compressed
(:func:`encode_histogram`, :func:`decode_histogram`).

Example:
    >>> import numpy as np
    >>> chips = np.array([[[[0, 1], [2, 3]]], [[[4, 5], [6, 0]]]], dtype="uint16")
    >>> acc = batch_stats(chips, ["all", "all"], nodata=0)
    >>> summarize(acc["all"][0], np.dtype("uint16"))["max"]
    6.0
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = [
    "PERCENTILES",
    "Accumulators",
    "BandAccumulator",
    "batch_stats",
    "batch_to_json",
    "decode_histogram",
    "encode_histogram",
    "exact_bins",
    "HISTOGRAM_ENCODING",
    "fold_steps",
    "merge_batches",
    "summarize",
    "valid_pixels",
]

#: The percentiles reported, as keys ``p1`` ... ``p99``.
PERCENTILES = (1, 2, 50, 98, 99)


def exact_bins(dtype: Any) -> bool:
    """Whether ``dtype`` gets one histogram bin per value (integers of 8 or 16 bits)."""
    dt = np.dtype(dtype)
    return dt.kind in "ui" and dt.itemsize <= 2


def _bins(dtype: Any) -> tuple[int, int]:
    """(number of bins, key of bin 0) of a dtype's histogram."""
    dt = np.dtype(dtype)
    if exact_bins(dt):
        n = 1 << (8 * dt.itemsize)
        return n, (-(n // 2) if dt.kind == "i" else 0)
    return 1 << 16, -(1 << 15)


def _keys(values: npt.NDArray[Any], exact: bool) -> npt.NDArray[Any]:
    """Histogram keys: the value itself (exact), else the bfloat16 bit pattern (signed)."""
    if exact:
        return values
    return values.astype(np.float32).view(np.int32) >> 16


def _key_values(keys: npt.NDArray[np.int64], exact: bool) -> npt.NDArray[np.float64]:
    if exact:
        return keys.astype(np.float64)
    return (keys.astype(np.int32) << 16).view(np.float32).astype(np.float64)


@dataclass
class BandAccumulator:
    """What a set of valid pixels of one band adds up to; merges exactly with another.

    ``hist`` is dense (one count per bin of the dtype, see :func:`_bins`)."""

    dtype: np.dtype[Any]
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    hist: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        if len(self.hist) == 0:
            self.hist = np.zeros(_bins(self.dtype)[0], dtype=np.int64)

    @property
    def exact(self) -> bool:
        """Whether every number comes from the histogram exactly."""
        return exact_bins(self.dtype)

    def add(self, values: npt.NDArray[Any]) -> None:
        """Add pixel values (1-D, valid only)."""
        if values.size == 0:
            return
        nbins, first = _bins(self.dtype)
        keys = _keys(values, self.exact)
        index = keys if first == 0 else keys.astype(np.int32) - first
        self.hist += np.bincount(index, minlength=nbins)
        if self.exact:
            self.count += int(values.size)
            self.min = min(self.min, float(values.min()))
            self.max = max(self.max, float(values.max()))
            return
        data = values.astype(np.float64)
        mean = float(data.mean())
        other = BandAccumulator(
            self.dtype,
            int(data.size),
            mean,
            float(np.square(data - mean).sum()),
            float(data.min()),
            float(data.max()),
            np.zeros(1, np.int64),
        )
        self._chan(other)

    def _chan(self, other: BandAccumulator) -> None:
        n = self.count + other.count
        if other.count == 0:
            return
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def merge(self, other: BandAccumulator) -> None:
        """Add ``other`` (Chan et al. for mean and M2; histograms added)."""
        self.hist += other.hist
        if self.exact:
            self.count += other.count
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        else:
            self._chan(other)

    def merge_json(
        self, data: Mapping[str, Any], bins: tuple[npt.NDArray[Any], npt.NDArray[Any]]
    ) -> None:
        """:meth:`merge` a batch record's accumulator (:meth:`to_json`; ``bins``: its
        decoded histogram, :meth:`decode`) without building its dense histogram."""
        keys, counts = bins
        np.add.at(self.hist, keys, counts)
        count = int(data["count"])
        if count == 0:
            return
        if self.exact:
            self.count += count
            self.min = min(self.min, float(data["min"]))
            self.max = max(self.max, float(data["max"]))
            return
        scalars = (float(data["mean"]), float(data["m2"]), float(data["min"]), float(data["max"]))
        self._chan(BandAccumulator(self.dtype, count, *scalars, np.zeros(1, np.int64)))

    def keys(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The histogram's non-empty bins: keys (values, or bfloat16 patterns) and counts."""
        nonzero = np.flatnonzero(self.hist)
        return nonzero + _bins(self.dtype)[1], self.hist[nonzero]

    def to_json(self) -> dict[str, Any]:
        """Plain data for a batch record: the histogram's non-empty bins as base64 of
        little-endian int32 keys and counts (uint32 when they fit, as in any batch: field
        ``counts_dtype``; int64 otherwise, and in records of older versions); JSON lists of
        ints cost far more."""
        nonzero = np.flatnonzero(self.hist)
        keys = (nonzero + _bins(self.dtype)[1]).astype("<i4")
        counts = self.hist[nonzero]
        small = len(counts) == 0 or int(counts.max()) < 1 << 32
        extra = {"counts_dtype": "<u4"} if small else {}
        counts = counts.astype("<u4" if small else "<i8")
        return {
            **extra,
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": None if self.count == 0 else self.min,
            "max": None if self.count == 0 else self.max,
            "keys_b64": base64.b64encode(keys.tobytes()).decode(),
            "counts_b64": base64.b64encode(counts.tobytes()).decode(),
        }

    @staticmethod
    def decode(data: Mapping[str, Any], dtype: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """A record's histogram: bin indices and counts of its non-empty bins."""
        keys = np.frombuffer(base64.b64decode(data["keys_b64"]), dtype="<i4")
        counts = np.frombuffer(
            base64.b64decode(data["counts_b64"]), dtype=data.get("counts_dtype", "<i8")
        )
        return keys.astype(np.int64) - _bins(dtype)[1], counts.astype(np.int64)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], dtype: Any) -> BandAccumulator:
        """The inverse of :meth:`to_json`."""
        count = int(data["count"])
        acc = cls(
            np.dtype(dtype),
            count,
            float(data["mean"]),
            float(data["m2"]),
            math.inf if count == 0 else float(data["min"]),
            -math.inf if count == 0 else float(data["max"]),
        )
        index, counts = cls.decode(data, dtype)
        acc.hist[index] = counts
        return acc


Accumulators = dict[str, list[BandAccumulator]]


def valid_pixels(image: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    """Where no band is nodata or NaN: (..., y, x) of an (..., band, y, x) image."""
    bad = np.zeros(image.shape[:-3] + image.shape[-2:], dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= (image == nodata).any(axis=-3)
    if image.dtype.kind == "f":
        bad |= np.isnan(image).any(axis=-3)
    return ~bad


#: Pixels per bincount call (keys are int64: 8 bytes each).
_CHUNK = 1 << 22


def _histograms(
    chips: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.int64]:
    """(G, bins) histograms of chips (N, *G, H, W) over the pixels where ``valid`` (N,
    *G[:-1], H, W) holds (None: all): one bincount over keys offset per group (and a sink
    bin for invalid pixels), in chunks of chips, instead of a pass per group."""
    nbins, first = _bins(chips.dtype)
    gshape = chips.shape[1:-2]
    groups = math.prod(gshape)
    offsets = (np.arange(groups, dtype=np.int64) * nbins - first).reshape(*gshape, 1, 1)
    sink = groups * nbins
    step = max(1, _CHUNK // max(1, chips[0].size))
    hist: npt.NDArray[np.int64] | None = None
    for start in range(0, len(chips), step):
        keys = _keys(chips[start : start + step], exact_bins(chips.dtype)).astype(np.int64)
        keys += offsets
        if valid is not None:
            np.copyto(keys, sink, where=~valid[start : start + step, ..., None, :, :])
        part = np.bincount(keys.reshape(-1), minlength=sink + 1)
        if hist is None:
            hist = part
        else:
            hist += part
    assert hist is not None
    return hist[:sink].reshape(groups, nbins)


def _group_accumulators(
    chips: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None
) -> list[BandAccumulator]:
    """One accumulator per group (``t * C + b`` of (N, [T,] C, H, W) chips)."""
    hist = _histograms(chips, valid)
    dtype, first = chips.dtype, _bins(chips.dtype)[1]
    present = hist > 0
    counts = np.asarray(present.any(axis=1))
    lows = present.argmax(axis=1) + first
    highs = hist.shape[1] - 1 - present[:, ::-1].argmax(axis=1) + first
    accs = []
    n, height, width = len(chips), chips.shape[-2], chips.shape[-1]
    flat = chips.reshape(n, -1, height, width)
    masks = None if valid is None else valid.reshape(n, -1, height, width)
    per_mask = flat.shape[1] // (1 if masks is None else masks.shape[1])
    for g in range(len(hist)):
        acc = BandAccumulator(dtype, hist=hist[g])
        if counts[g] and acc.exact:
            acc.count = int(hist[g].sum())
            acc.min, acc.max = float(lows[g]), float(highs[g])
        elif counts[g]:  # float data: moments from the values (Chan's merge needs them)
            group = flat[:, g]
            values = group.reshape(-1) if masks is None else group[masks[:, g // per_mask]]
            data = values.astype(np.float64)
            acc.count, acc.mean = int(data.size), float(data.mean())
            acc.m2 = float(np.square(data - acc.mean).sum())
            acc.min, acc.max = float(data.min()), float(data.max())
        accs.append(acc)
    return accs


def fold_steps(steps: Accumulators, nbands: int) -> Accumulators:
    """Per band accumulators from per (step, band) ones (``t * C + b``): merged over steps."""
    out: Accumulators = {}
    for split, accs in steps.items():
        bands = [BandAccumulator(accs[0].dtype) for _ in range(nbands)]
        for g, acc in enumerate(accs):
            bands[g % nbands].merge(acc)
        out[split] = bands
    return out


def batch_stats(
    images: npt.NDArray[Any],
    splits: Sequence[str],
    nodata: float | int | None,
    ok: Sequence[bool] | None = None,
    *,
    per_step: bool = False,
) -> Accumulators:
    """Accumulators per split (one per band) of a batch of chips (N, [T,] C, H, W).

    ``splits[k]`` is chip k's split; chips with ``ok[k]`` False are left out. ``per_step``:
    one per (step, band) of (N, T, C, H, W) chips instead, step-major (``t * C + b``).
    """
    nbands = images.shape[-3]
    if per_step and images.ndim != 5:
        raise InputError(
            f"per-step statistics need chips (N, T, C, H, W), got shape {images.shape}; "
            "leave out per_step for chips without a time axis"
        )
    groups = nbands * (images.shape[1] if per_step else 1)
    out: Accumulators = {}
    for split in sorted(set(splits)):
        rows = [k for k, s in enumerate(splits) if s == split and (ok is None or ok[k])]
        if not rows:
            accs = [BandAccumulator(images.dtype) for _ in range(groups)]
        else:
            whole = rows == list(range(len(images)))
            chips = images if whole else images[rows]
            valid = valid_pixels(chips, nodata)
            if chips.ndim == 5 and not per_step:  # every step a chip of its own
                chips = chips.reshape(-1, *chips.shape[2:])
                valid = valid.reshape(-1, *valid.shape[2:])
            accs = _group_accumulators(chips, None if valid.all() else valid)
        out[split] = accs
    return out


def batch_to_json(accs: Accumulators) -> dict[str, list[dict[str, Any]]]:
    """Plain data of a batch's accumulators (stored in its record)."""
    return {split: [a.to_json() for a in bands] for split, bands in accs.items()}


def merge_batches(
    batches: Iterable[Mapping[str, Sequence[Mapping[str, Any]]]], dtype: Any, nbands: int
) -> Accumulators:
    """Merge batch records' accumulators, in the order given, per split, plus ``all`` (the
    splits merged, in name order)."""
    out: Accumulators = {}
    for batch in batches:
        for split, bands in batch.items():
            accs = out.setdefault(split, [BandAccumulator(dtype) for _ in range(nbands)])
            for b, data in enumerate(bands):
                accs[b].merge_json(data, BandAccumulator.decode(data, dtype))
    out = dict(sorted(out.items()))
    if "all" not in out:  # (a store without splits has only "all")
        everything = [BandAccumulator(dtype) for _ in range(nbands)]
        for accs in out.values():
            for b, acc in enumerate(accs):
                everything[b].merge(acc)
        out["all"] = everything
    return out


def _sums(keys: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    """Exact sums of counts, key * count and key**2 * count (Python ints): products in
    int64 where they cannot overflow (keys of 16 bits at most), added as Python ints."""
    squares = keys * keys
    if int(squares.max()) * int(counts.max()) < 1 << 62:
        return (
            sum(counts.tolist()),
            sum((keys * counts).tolist()),
            sum((squares * counts).tolist()),
        )
    pairs = list(zip(keys.tolist(), counts.tolist(), strict=True))
    return (
        sum(c for _, c in pairs),
        sum(k * c for k, c in pairs),
        sum(k * k * c for k, c in pairs),
    )


def summarize(acc: BandAccumulator, dtype: Any) -> dict[str, Any]:
    """Count, mean, std (population), min, max and percentiles of one accumulator (None
    where there is no valid pixel)."""
    exact = exact_bins(acc.dtype)
    out: dict[str, Any] = {"count": acc.count}
    if acc.count == 0:
        out.update(dict.fromkeys(("mean", "std", "min", "max")))
        out.update({f"p{q}": None for q in PERCENTILES})
        return out
    nonzero = np.flatnonzero(acc.hist)
    keys = nonzero + _bins(acc.dtype)[1]
    counts = acc.hist[nonzero]
    values = _key_values(keys, exact)
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    if exact:  # integer arithmetic over the histogram: exact
        n, total, total_sq = _sums(keys.astype(np.int64), acc.hist[nonzero])
        mean = total / n
        var = (n * total_sq - total * total) / (n * n)
    else:
        n = acc.count
        mean = acc.mean
        var = acc.m2 / n
    out["mean"] = float(mean)
    out["std"] = float(math.sqrt(max(var, 0.0)))
    out["min"] = float(acc.min)
    out["max"] = float(acc.max)
    cum = np.cumsum(counts)
    for q in PERCENTILES:
        # numpy's inverted_cdf: the smallest value whose cumulative count reaches q * n
        target = q / 100 * n
        i = int(np.searchsorted(cum, target, side="left"))
        out[f"p{q}"] = float(values[min(i, len(values) - 1)])
    return out


#: How :func:`encode_histogram` writes a histogram (stated in ``stats.json``).
HISTOGRAM_ENCODING = (
    "non-empty bins only: {bins: how many, keys: base64 of zlib of little-endian int64 "
    "differences between successive keys (the first from 0), counts: base64 of zlib of "
    "little-endian int64 counts}; keys are the values (exact bins) or bfloat16 bit patterns"
)


def _pack(values: npt.NDArray[Any]) -> str:
    return base64.b64encode(zlib.compress(values.astype("<i8").tobytes(), 1)).decode()


def _unpack(text: str) -> npt.NDArray[np.int64]:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8").astype(np.int64)


def encode_histogram(acc: BandAccumulator) -> dict[str, Any]:
    """An accumulator's histogram for ``stats.json`` (:data:`HISTOGRAM_ENCODING`): a
    fraction of the size of JSON lists of keys and counts.

    >>> acc = batch_stats(np.array([[[[3, 5], [5, 9]]]], dtype="uint8"), ["a"], None)["a"][0]
    >>> [v.tolist() for v in decode_histogram(encode_histogram(acc))]
    [[3, 5, 9], [1, 2, 1]]
    """
    keys, counts = acc.keys()
    return {"bins": len(keys), "keys": _pack(np.diff(keys, prepend=0)), "counts": _pack(counts)}


def decode_histogram(data: Mapping[str, Any]) -> tuple[npt.NDArray[np.int64], ...]:
    """(keys, counts) of a histogram of ``stats.json``: this encoding, or version 1's JSON
    lists."""
    if isinstance(data["keys"], list):  # stats.json version 1
        return np.asarray(data["keys"], np.int64), np.asarray(data["counts"], np.int64)
    return np.cumsum(_unpack(data["keys"])), _unpack(data["counts"])

"""Band statistics of a store, per split and per band, computed while the chips are written
and merged exactly: valid-pixel count, mean, standard deviation, min, max and percentiles
(p1, p2, p50, p98, p99).

**Valid pixels.** A pixel of a chip is valid when no band at it is the image's nodata or
NaN (cloud-masked pixels are written as nodata, so they are left out too); in a time stack
each time step counts apart. Only chips with status ``ok`` count.

**Per time step.** For time stacks (N, T, C, H, W) a build with ``stats: {per_step: true}``
also keeps one accumulator per (step, band) (``step * C + band``, the same bins and
merges), written under ``per_step`` (see :func:`stats_document`).

**Exact merges.** A batch of chips gives one :class:`BandAccumulator` per split and band;
accumulators merge by adding histograms (and, for float data, Chan et al.'s parallel
update of mean and M2), always in batch order, so the result does not depend on threads,
workers or a resume. The histograms' bins depend only on the dtype:

- integer dtypes of 8 or 16 bits: one bin per value. Count, mean, variance, min, max and
  percentiles then come from the histogram exactly (integer arithmetic);
- other dtypes: a bin per bfloat16 value (the top 16 bits of the float32), so percentiles
  are within 2**-8 of the value (relative); mean and variance by Chan's update, min and
  max exact.

Percentiles are numpy's ``method="inverted_cdf"`` over the bin values: the smallest value
whose cumulative share reaches q.

Example:
    >>> import numpy as np
    >>> chips = np.array([[[[0, 1], [2, 3]]], [[[4, 5], [6, 0]]]], dtype="uint16")
    >>> acc = batch_stats(chips, ["all", "all"], nodata=0)
    >>> s = summarize(acc["all"][0], np.dtype("uint16"))
    >>> s["count"], s["mean"], s["min"], s["max"], s["p50"]
    (6, 3.5, 1.0, 6.0, 3.0)
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..core.files import atomic_write_text
from ..core.storage import store_path
from ..errors import InputError, NoValidPixelsError

if TYPE_CHECKING:
    from .reader import ChipStore

__all__ = [
    "PERCENTILES",
    "STATS_FILE",
    "STATS_VERSION",
    "BandAccumulator",
    "band_stats",
    "batch_stats",
    "compute_store_stats",
    "exact_bins",
    "merge_batches",
    "save_statistics",
    "save_stats",
    "stats_document",
    "step_stats",
    "store_stats",
    "summarize",
]

#: The file beside the manifest with the statistics and their histograms.
STATS_FILE = "stats.json"

#: Version of the ``stats`` section (manifest) and of ``stats.json``.
STATS_VERSION = 1

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

    def keys(self) -> tuple[list[int], list[int]]:
        """The histogram's non-empty bins: keys (values, or bfloat16 patterns) and counts."""
        nonzero = np.flatnonzero(self.hist)
        return (nonzero + _bins(self.dtype)[1]).tolist(), self.hist[nonzero].tolist()

    def to_json(self) -> dict[str, Any]:
        """Plain data for a batch record: the histogram's non-empty bins as base64 of
        little-endian int32 keys and int64 counts (JSON lists of ints cost far more)."""
        nonzero = np.flatnonzero(self.hist)
        keys = (nonzero + _bins(self.dtype)[1]).astype("<i4")
        counts = self.hist[nonzero].astype("<i8")
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": None if self.count == 0 else self.min,
            "max": None if self.count == 0 else self.max,
            "keys_b64": base64.b64encode(keys.tobytes()).decode(),
            "counts_b64": base64.b64encode(counts.tobytes()).decode(),
        }

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
        keys = np.frombuffer(base64.b64decode(data["keys_b64"]), dtype="<i4")
        counts = np.frombuffer(base64.b64decode(data["counts_b64"]), dtype="<i8")
        acc.hist[keys.astype(np.int64) - _bins(acc.dtype)[1]] = counts
        return acc


Accumulators = dict[str, list[BandAccumulator]]


def valid_pixels(image: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    """Where no band is nodata or NaN: (..., y, x) of an (..., band, y, x) image."""
    bad = np.zeros(image.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= image == nodata
    if image.dtype.kind == "f":
        bad |= np.isnan(image)
    return np.asarray(~bad.any(axis=-3))


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
    steps = images.shape[1] if per_step else 1
    out: Accumulators = {}
    for split in sorted(set(splits)):
        rows = [k for k, s in enumerate(splits) if s == split and (ok is None or ok[k])]
        accs = [BandAccumulator(images.dtype) for _ in range(steps * nbands)]
        out[split] = accs
        if not rows:
            continue
        whole = rows == list(range(len(images)))
        chips = images if whole else images[rows]
        valid = valid_pixels(chips, nodata)
        everything = bool(valid.all())
        for b in range(nbands):
            band = chips[..., b, :, :]
            if not per_step:
                accs[b].add(band.reshape(-1) if everything else band[valid])
                continue
            for t in range(steps):
                step = band[:, t]
                accs[t * nbands + b].add(step.reshape(-1) if everything else step[valid[:, t]])
    return out


def batch_to_json(accs: Accumulators) -> dict[str, list[dict[str, Any]]]:
    """Plain data of a batch's accumulators (stored in its record)."""
    return {split: [a.to_json() for a in bands] for split, bands in accs.items()}


def merge_batches(
    batches: Iterable[Mapping[str, Sequence[Mapping[str, Any]]]], dtype: Any, nbands: int
) -> Accumulators:
    """Merge batch records' accumulators, in the order given, per split, plus ``all``."""
    out: Accumulators = {}
    everything = [BandAccumulator(dtype) for _ in range(nbands)]
    for batch in batches:
        for split, bands in batch.items():
            accs = out.setdefault(split, [BandAccumulator(dtype) for _ in range(nbands)])
            for b, data in enumerate(bands):
                acc = BandAccumulator.from_json(data, dtype)
                accs[b].merge(acc)
                everything[b].merge(acc)
    out.pop("all", None)
    out = dict(sorted(out.items()))
    out["all"] = everything
    return out


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
        pairs = list(zip(keys.tolist(), acc.hist[nonzero].tolist(), strict=True))
        n = sum(c for _, c in pairs)
        total = sum(k * c for k, c in pairs)
        total_sq = sum(k * k * c for k, c in pairs)
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


def stats_document(
    accs: Accumulators,
    bands: Sequence[str],
    dtype: Any,
    *,
    histograms: bool,
    steps: Accumulators | None = None,
) -> dict[str, Any]:
    """The ``stats`` section of the manifest (``histograms=False``) or ``stats.json``.

    ``steps`` (per (step, band) accumulators, step-major) adds ``per_step``: ``{steps: T,
    splits: {split: [{band: summary} per step]}}`` (and ``histograms`` alike in
    ``stats.json``)."""
    doc: dict[str, Any] = {
        "version": STATS_VERSION,
        "file": STATS_FILE,
        "dtype": np.dtype(dtype).name,
        "bins": "exact" if exact_bins(dtype) else "bfloat16",
        "valid": "pixels where no band is nodata or NaN (cloud-masked pixels are nodata)",
        "std": "population (ddof=0)",
        "percentiles": "numpy inverted_cdf over the histogram",
        "bands": list(bands),
        "splits": {
            split: {band: summarize(a, dtype) for band, a in zip(bands, bands_acc, strict=True)}
            for split, bands_acc in accs.items()
        },
    }
    if histograms:
        doc["histograms"] = {
            split: {
                band: dict(zip(("keys", "counts"), a.keys(), strict=True))
                for band, a in zip(bands, bands_acc, strict=True)
            }
            for split, bands_acc in accs.items()
        }
    if steps is not None:
        doc["per_step"] = _steps_document(steps, bands, dtype, histograms=histograms)
    return doc


def _steps_document(
    steps: Accumulators, bands: Sequence[str], dtype: Any, *, histograms: bool
) -> dict[str, Any]:
    nbands = len(bands)
    count = len(next(iter(steps.values()))) // nbands if steps else 0

    def per_step(accs: list[BandAccumulator], value: Any) -> list[dict[str, Any]]:
        return [
            {band: value(accs[t * nbands + b]) for b, band in enumerate(bands)}
            for t in range(count)
        ]

    doc: dict[str, Any] = {
        "steps": count,
        "splits": {s: per_step(a, lambda x: summarize(x, dtype)) for s, a in steps.items()},
    }
    if histograms:
        doc["histograms"] = {
            s: per_step(a, lambda x: dict(zip(("keys", "counts"), x.keys(), strict=True)))
            for s, a in steps.items()
        }
    return doc


def save_stats(
    root: Any,
    accs: Accumulators,
    bands: Sequence[str],
    dtype: Any,
    steps: Accumulators | None = None,
) -> dict[str, Any]:
    """Write ``stats.json`` (atomically) and return the manifest's ``stats`` section."""
    full = stats_document(accs, bands, dtype, histograms=True, steps=steps)
    atomic_write_text(store_path(root) / STATS_FILE, json.dumps(full, sort_keys=True) + "\n")
    return stats_document(accs, bands, dtype, histograms=False, steps=steps)


def compute_store_stats(store: ChipStore, batch_size: int = 64) -> Accumulators:
    """Recompute the accumulators of a store from its arrays (older stores; checks)."""
    return _compute(store, batch_size, per_step=False)[0]


def _compute(
    store: ChipStore, batch_size: int = 64, *, per_step: bool
) -> tuple[Accumulators, Accumulators | None]:
    """Per band and (``per_step``) per (step, band) accumulators, from the arrays."""
    reader = store.reader("image")
    if per_step and len(reader.chip_shape) != 4:
        raise InputError(
            f"{store.path} has no time axis (chips {list(reader.chip_shape)}): there are no "
            "per-step statistics; leave out --per-step"
        )
    index = store.index
    n = len(index)
    splits = [str(s) for s in index["split"]] if "split" in index else ["all"] * n
    ok = (index["status"] == "ok").tolist()
    nodata = _nodata(store.manifest["image"].get("nodata"))
    records, step_records = [], []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chips = np.stack([reader.read(i) for i in range(start, stop)])
        args = (chips, splits[start:stop], nodata, ok[start:stop])
        records.append(batch_to_json(batch_stats(*args)))
        if per_step:
            step_records.append(batch_to_json(batch_stats(*args, per_step=True)))
    nbands = reader.chip_shape[-3]
    accs = merge_batches(records, reader.dtype, nbands)
    if not per_step:
        return accs, None
    return accs, merge_batches(step_records, reader.dtype, reader.chip_shape[0] * nbands)


def _nodata(value: Any) -> float | int | None:
    if value in ("nan", "NaN"):
        return float("nan")
    return value  # type: ignore[no-any-return]


def store_stats(store: ChipStore, *, per_step: bool = False) -> dict[str, Any]:
    """The store's ``stats`` section: from its manifest, else recomputed from the arrays
    (also when ``per_step`` asks for the per-step statistics and the manifest lacks them)."""
    stats = store.manifest.get("stats")
    if stats and (not per_step or "per_step" in stats):
        return dict(stats)
    accs, steps = _compute(store, per_step=per_step)
    dtype = store.reader("image").dtype
    return stats_document(accs, store.bands, dtype, histograms=False, steps=steps)


def step_stats(store: ChipStore, split: str = "train") -> list[dict[str, dict[str, Any]]]:
    """Per time step, per band the statistics of one split (as :func:`band_stats`, without
    its check for empty bands: a step may have no valid pixel)."""
    splits = store_stats(store, per_step=True)["per_step"]["splits"]
    if split not in splits:
        raise InputError(
            f"the store has no split {split!r} in its statistics (it has {sorted(splits)}); "
            "choose one of those"
        )
    return [dict(step) for step in splits[split]]


def save_statistics(store: ChipStore, *, per_step: bool = False) -> dict[str, Any]:
    """Recompute a store's statistics from its arrays and write them into it:
    ``stats.json``, then the manifest with its ``stats`` section (each atomically);
    ``per_step``: with the per-step statistics."""
    accs, steps = _compute(store, per_step=per_step)
    section = save_stats(store.path, accs, store.bands, store.reader("image").dtype, steps)
    manifest = {**store.manifest, "stats": section}
    atomic_write_text(
        store.path / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    )
    store.manifest = manifest
    return section


def band_stats(
    store: ChipStore, split: str = "train", *, allow_empty: bool = False
) -> dict[str, dict[str, Any]]:
    """Per band (in channel order) the statistics of one split: ``count``, ``mean``,
    ``std``, ``min``, ``max``, ``p1`` ... ``p99``; what normalisation (and prediction)
    uses. Raises :class:`~geochip.errors.InputError` for a split the store does not have,
    :class:`~geochip.errors.NoValidPixelsError` when that split has no valid pixel (unless
    ``allow_empty``)."""
    stats = store_stats(store)
    splits = stats["splits"]
    if split not in splits:
        raise InputError(
            f"the store has no split {split!r} in its statistics (it has {sorted(splits)}); "
            "choose one of those"
        )
    per_band = splits[split]
    empty = [b for b in stats["bands"] if not per_band[b]["count"]]
    if empty and not allow_empty:
        raise NoValidPixelsError(
            f"split {split!r} of {store.path} has no valid pixel in bands {empty}: there are "
            "no statistics to normalise with; use another split's statistics (stats_split=...) "
            "or normalize=None"
        )
    return {b: dict(per_band[b]) for b in stats["bands"]}

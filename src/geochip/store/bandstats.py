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

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.files import atomic_write_text
from ..core.storage import store_path
from ..errors import InputError, NoValidPixelsError
from .histograms import (
    HISTOGRAM_ENCODING,
    PERCENTILES,
    Accumulators,
    BandAccumulator,
    batch_stats,
    batch_to_json,
    decode_histogram,
    encode_histogram,
    exact_bins,
    fold_steps,
    merge_batches,
    summarize,
)

if TYPE_CHECKING:
    from .reader import ChipStore

__all__ = [
    "PERCENTILES",
    "STATS_FILE",
    "STATS_VERSION",
    "BandAccumulator",
    "band_stats",
    "batch_stats",
    "batch_to_json",
    "compute_store_stats",
    "exact_bins",
    "fold_steps",
    "histograms",
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
STATS_VERSION = 2


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
    ``stats.json``). Histograms are encoded (:data:`HISTOGRAM_ENCODING`); those of ``all``
    are left out when there are splits (their sum: :func:`histograms` adds them back)."""
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
        doc["histogram_encoding"] = HISTOGRAM_ENCODING
        doc["histograms"] = {
            split: {band: encode_histogram(a) for band, a in zip(bands, bands_acc, strict=True)}
            for split, bands_acc in _stored(accs).items()
        }
    if steps is not None:
        doc["per_step"] = _steps_document(steps, bands, dtype, histograms=histograms)
    return doc


def _stored(accs: Accumulators) -> Accumulators:
    """The splits whose histograms are stored: ``all`` only when it is the only one."""
    return {s: a for s, a in accs.items() if s != "all" or len(accs) == 1}


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
        doc["histograms"] = {s: per_step(a, encode_histogram) for s, a in _stored(steps).items()}
    return doc


def histograms(root: Any, *, per_step: bool = False) -> dict[str, Any]:
    """The histograms of a store's ``stats.json`` (``root``: the store's folder), decoded:
    ``{split: {band: (keys, counts)}}`` with ``all`` (the sum of the splits), or with
    ``per_step`` ``{split: [{band: (keys, counts)} per step]}``. Keys are the values
    (exact bins) or bfloat16 bit patterns; counts are valid pixels."""
    path = store_path(root) / STATS_FILE
    if not path.exists():
        raise InputError(
            f"{path} is not there: the store was built without band statistics; write them "
            "with `geochip stats DIR --save`"
        )
    doc = json.loads(path.read_text())
    if per_step:
        if "per_step" not in doc:
            raise InputError(
                f"{path} has no per-step statistics; write them with `geochip stats DIR "
                "--per-step --save` (time stacks only)"
            )
        raw = doc["per_step"]["histograms"]
        steps: dict[str, list[dict[str, tuple[Any, ...]]]] = {
            s: [{b: decode_histogram(h) for b, h in step.items()} for step in v]
            for s, v in raw.items()
        }
        if "all" not in steps:
            steps["all"] = [
                _add([s[t] for s in steps.values()]) for t in range(doc["per_step"]["steps"])
            ]
        return steps
    out: dict[str, dict[str, tuple[Any, ...]]] = {
        s: {b: decode_histogram(h) for b, h in v.items()} for s, v in doc["histograms"].items()
    }
    if "all" not in out:
        out["all"] = _add(list(out.values()))
    return out


def _add(parts: list[dict[str, tuple[Any, ...]]]) -> dict[str, tuple[Any, ...]]:
    """The sum of histograms per band."""
    out = {}
    for band in parts[0] if parts else {}:
        keys = np.concatenate([p[band][0] for p in parts])
        counts = np.concatenate([p[band][1] for p in parts])
        unique, where = np.unique(keys, return_inverse=True)
        total = np.zeros(len(unique), np.int64)
        np.add.at(total, where, counts)
        out[band] = (unique, total)
    return out


def save_stats(
    root: Any,
    accs: Accumulators,
    bands: Sequence[str],
    dtype: Any,
    steps: Accumulators | None = None,
) -> dict[str, Any]:
    """Write ``stats.json`` (atomically) and return the manifest's ``stats`` section (the
    same, without the histograms)."""
    full = stats_document(accs, bands, dtype, histograms=True, steps=steps)
    atomic_write_text(store_path(root) / STATS_FILE, json.dumps(full, sort_keys=True) + "\n")
    section = {k: v for k, v in full.items() if k not in ("histograms", "histogram_encoding")}
    if steps is not None:
        section["per_step"] = {k: v for k, v in full["per_step"].items() if k != "histograms"}
    return section


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
        if per_step:  # one pass: the bands' statistics are the steps' merged
            steps = batch_stats(*args, per_step=True)
            step_records.append(batch_to_json(steps))
            records.append(batch_to_json(fold_steps(steps, chips.shape[-3])))
        else:
            records.append(batch_to_json(batch_stats(*args)))
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

"""Tensors ready for a model: a store's raw chips to float, normalised with the band
statistics of one split (:func:`geochip.store.bandstats.band_stats`), nodata and NaN
replaced by a fill value and reported in a valid-pixel mask.

Methods (per band, the statistics of ``stats_split``, by default ``train``):

- ``"zscore"``: ``(x - mean) / std`` (std 0 counts as 1);
- ``"percentile"``: ``(x - p2) / (p98 - p2)``, clipped to [0, 1];
- ``None``: the values as they are, only cast (and filled);
- a callable: receives the float batch ``(N, [T,] C, H, W)`` (invalid pixels already
  filled) as a torch tensor and returns one of the same shape.

A pixel is valid where no band is nodata or NaN (the band statistics' definition); the mask
is ``(N, [T,] H, W)`` booleans, the image's ``fill`` where it is False.

Example:
    >>> import numpy as np
    >>> raw = np.array([[[[0, 10], [20, 30]]]], dtype="uint16")  # (N=1, C=1, 2, 2)
    >>> norm = Normalizer({"b": {"mean": 20.0, "std": 10.0, "p2": 10, "p98": 30}},
    ...                   "zscore", "float32", nodata=0)
    >>> out = np.empty(raw.shape, "float32"); valid = norm(raw, out)
    >>> out.ravel().tolist(), valid.ravel().tolist()
    ([0.0, -1.0, 0.0, 1.0], [False, True, True, True])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ..errors import InputError

__all__ = [
    "METHODS",
    "Normalizer",
]

#: The named methods of ``normalize``.
METHODS = ("zscore", "percentile")


class Normalizer:
    """Casts a batch of raw chips to a float dtype, fills invalid pixels, normalises.

    ``stats`` is per band (channel order) what :func:`~geochip.store.bandstats.band_stats`
    returns; it may be None for ``method=None`` or a callable.
    """

    def __init__(
        self,
        stats: Mapping[str, Mapping[str, Any]] | None,
        method: str | Callable[[Any], Any] | None,
        dtype: Any,
        *,
        nodata: float | int | str | None,
        fill: float = 0.0,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise InputError(
                f"dtype must be a float dtype (float32, float16, float64) to normalise, got "
                f"{self.dtype.name}; or leave dtype=None for the store's own"
            )
        if isinstance(method, str) and method not in METHODS:
            raise InputError(
                f"normalize must be one of {', '.join(METHODS)}, None or a callable, got {method!r}"
            )
        if method is not None and not isinstance(method, str) and not callable(method):
            raise InputError(f"normalize must be a method name or a callable, got {method!r}")
        self.method = method
        # NaN nodata ("nan" in a manifest) is found by isnan below
        self.nodata: float | int | None = None
        if not isinstance(nodata, str) and not (isinstance(nodata, float) and math.isnan(nodata)):
            self.nodata = nodata
        self.fill = fill
        self.scale: npt.NDArray[Any] | None = None
        self.offset: npt.NDArray[Any] | None = None
        self.clip = method == "percentile"
        if isinstance(method, str):
            assert stats is not None
            bands = list(stats.values())
            if method == "zscore":
                mean = np.array([float(b["mean"]) for b in bands])
                std = np.array([float(b["std"]) or 1.0 for b in bands])
                scale, offset = 1.0 / std, -mean / std
            else:
                lo = np.array([float(b["p2"]) for b in bands])
                hi = np.array([float(b["p98"]) for b in bands])
                width = np.where(hi > lo, hi - lo, 1.0)
                scale, offset = 1.0 / width, -lo / width
            self.scale = scale.astype(self.dtype).reshape(-1, 1, 1)
            self.offset = offset.astype(self.dtype).reshape(-1, 1, 1)

    def __call__(
        self,
        raw: npt.NDArray[Any],
        out: npt.NDArray[Any],
        *,
        valid: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Fill ``out`` (float, the shape of ``raw``: (N, [T,] C, H, W)) and return where
        pixels are valid ((N, [T,] H, W); written into ``valid`` when given).

        Chip by chip and band by band, so that each step works on a few MiB that stay in
        the CPU's cache (one pass over memory instead of one per operation)."""
        lead = raw.shape[:-3]
        nbands = raw.shape[-3]
        bad = np.zeros((*lead, *raw.shape[-2:]), dtype=bool)
        hit = np.empty(raw.shape[-2:], dtype=bool)
        flat_raw = raw.reshape(-1, *raw.shape[-3:])
        flat_out = out.reshape(-1, *out.shape[-3:])
        flat_bad = bad.reshape(-1, *bad.shape[-2:])
        is_float = raw.dtype.kind == "f"
        for k in range(len(flat_raw)):
            chip_bad = flat_bad[k]
            for b in range(nbands):
                r, o = flat_raw[k, b], flat_out[k, b]
                if self.nodata is not None:
                    np.equal(r, self.nodata, out=hit)
                    chip_bad |= hit
                if is_float:
                    np.isnan(r, out=hit)
                    chip_bad |= hit
                if self.scale is not None and self.offset is not None:
                    np.multiply(r, self.scale[b, 0, 0], out=o, casting="unsafe")
                    o += self.offset[b, 0, 0]
                    if self.clip:
                        np.clip(o, 0.0, 1.0, out=o)
                else:
                    np.copyto(o, r, casting="unsafe")
            if chip_bad.any():
                for b in range(nbands):
                    flat_out[k, b][chip_bad] = self.fill
        if self.method is not None and not isinstance(self.method, str):
            result = self.method(torch.from_numpy(out))
            got = tuple(result.shape)
            if got != out.shape:
                raise InputError(
                    f"the normalize callable returned shape {got} for a batch of {out.shape}; "
                    "it must return the shape it is given"
                )
            out[...] = np.asarray(result)
            out[np.broadcast_to(np.expand_dims(bad, -3), out.shape)] = self.fill
        if valid is None:
            return np.asarray(~bad)
        np.logical_not(bad, out=valid)
        return valid

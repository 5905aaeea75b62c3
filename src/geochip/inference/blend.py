"""Blending window outputs into final pixels with memory set by the chip, not the raster.

Windows arrive in row-major order (:meth:`~geochip.inference.windows.WindowPlan.order`).
Every window's probabilities, times its blend weight, are added (float64) to what its
neighbours left: the window to its left hands over the columns they share (``left``), the
window row above hands over the rows they share (``carry``, the overlap rows only, across
the raster's width). Once a window is added, the part of it no later window touches is
final: those pixels become class ids and/or probabilities in the output dtype, nodata
where the input was nodata, and go to the strip they belong to. A strip (one output tile
high) is handed to ``on_strip`` as soon as its last rows are final. Contributions to each
pixel are added in the same order whatever row the run started from, so a resumed run
gives the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .windows import WindowPlan

__all__ = ["Blender", "OutputSpec"]


@dataclass(frozen=True)
class OutputSpec:
    """What the final pixels become: ``classes`` (argmax; p >= 0.5 for one channel) in
    ``class_dtype`` with ``class_nodata``, and/or probabilities in ``prob_dtype``
    (float32 with NaN, or uint8 scaled by 254 with nodata 255)."""

    classes: bool
    probabilities: bool
    class_dtype: str = "uint8"
    class_nodata: int = 255
    prob_dtype: str = "float32"


class Blender:
    """Adds window outputs, emits strips (see the module docstring)."""

    def __init__(
        self,
        plan: WindowPlan,
        channels: int,
        spec: OutputSpec,
        tile: int,
        on_strip: Callable[[int, dict[str, npt.NDArray[np.generic]]], None],
        start_row: int = 0,
    ) -> None:
        self.plan = plan
        self.k = channels
        self.spec = spec
        self.tile = tile
        self.on_strip = on_strip
        chip = plan.chip
        gaps = [plan.rows[r + 1] - plan.rows[r] for r in range(len(plan.rows) - 1)]
        band = max([chip - g for g in gaps] + [0])
        self.carry = np.zeros((channels, band, max(plan.width, chip)), dtype=np.float64)
        self.left: npt.NDArray[np.float64] | None = None
        self.strips: dict[int, dict[str, npt.NDArray[np.generic]]] = {}
        self.start_row = start_row
        self.n_strips = -(-plan.height // tile)

    def _strip(self, k: int) -> dict[str, npt.NDArray[np.generic]]:
        if k not in self.strips:
            rows = min(self.tile, self.plan.height - k * self.tile)
            width = self.plan.width
            arrays: dict[str, npt.NDArray[np.generic]] = {}
            if self.spec.classes:
                arrays["classes"] = np.full(
                    (1, rows, width), self.spec.class_nodata, dtype=self.spec.class_dtype
                )
            if self.spec.probabilities:
                fill = np.nan if self.spec.prob_dtype == "float32" else 255
                arrays["probabilities"] = np.full(
                    (self.k, rows, width), fill, dtype=self.spec.prob_dtype
                )
            self.strips[k] = arrays
        return self.strips[k]

    def _final(
        self, values: npt.NDArray[np.float64], valid: npt.NDArray[np.bool_], row: int, col: int
    ) -> None:
        """Put final pixels (K, h, w) at grid (row, col) into their strips."""
        h, w = valid.shape
        out: dict[str, npt.NDArray[np.generic]] = {}
        if self.spec.classes:
            if self.k == 1:
                ids = (values[0] >= 0.5).astype(self.spec.class_dtype)
            else:
                ids = np.argmax(values, axis=0).astype(self.spec.class_dtype)
            ids[~valid] = self.spec.class_nodata
            out["classes"] = ids[None]
        if self.spec.probabilities:
            if self.spec.prob_dtype == "float32":
                probs = values.astype(np.float32)
                probs[:, ~valid] = np.nan
            else:
                probs = np.round(np.clip(values, 0, 1) * 254).astype(np.uint8)
                probs[:, ~valid] = 255
            out["probabilities"] = probs
        r = row
        while r < row + h:
            k = r // self.tile
            stop = min((k + 1) * self.tile, row + h)
            strip = self._strip(k)
            for kind, arr in out.items():
                strip[kind][:, r - k * self.tile : stop - k * self.tile, col : col + w] = arr[
                    :, r - row : stop - row
                ]
            r = stop

    def add(
        self,
        r: int,
        c: int,
        probs: npt.NDArray[np.float32] | None,
        valid: npt.NDArray[np.bool_] | None,
    ) -> None:
        """Add window (r, c): ``probs`` (K, chip, chip) or None (nothing to add: all
        nodata, or unreadable), ``valid`` (chip, chip) or None (all nodata)."""
        plan = self.plan
        chip = plan.chip
        y0, x0 = plan.rows[r], plan.cols[c]
        # buf = w * p + what the neighbours left (IEEE addition commutes: the same bits
        # as adding w * p to the neighbours' sums)
        if probs is not None:
            buf = np.multiply(probs, plan.weight(r, c), dtype=np.float64)
        else:
            buf = np.zeros((self.k, chip, chip), dtype=np.float64)
        top = plan.rows[r - 1] + chip - y0 if r > 0 else 0
        left = self.left.shape[2] if c > 0 and self.left is not None else 0
        if top > 0:
            buf[:, :top, left:] += self.carry[:, :top, x0 + left : x0 + chip]
        if left:
            buf[:, :, :left] += self.left
        ny = plan.next_row(r) - y0
        nx = plan.next_col(c) - x0
        fh, fw = min(ny, plan.height - y0), min(nx, plan.width - x0)
        mask = valid[:fh, :fw] if valid is not None else np.zeros((fh, fw), dtype=bool)
        if r >= self.start_row:
            self._final(buf[:, :fh, :fw], mask, y0, x0)
        if r + 1 < len(plan.rows):
            self.carry[:, : chip - ny, x0 : x0 + nx] = buf[:, ny:, :nx]
        self.left = buf[:, :, nx:] if c + 1 < len(plan.cols) else None
        if c + 1 == len(plan.cols):
            self._row_done(r)

    def _row_done(self, r: int) -> None:
        final_to = self.plan.next_row(r)
        for k in sorted(self.strips):
            if min((k + 1) * self.tile, self.plan.height) <= final_to:
                self.on_strip(k, self.strips.pop(k))

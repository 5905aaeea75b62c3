"""The windows a model sees and how their outputs blend: planned from the header alone.

:func:`plan_windows` lays windows of ``chip`` pixels over a grid of ``(height, width)``
with at least ``overlap`` pixels shared by neighbours, spread evenly so that the first and
the last window of a row or column are flush with the raster's edges and the overlaps are
equal to within a pixel (a flush last window that overlaps its neighbour by most of a chip
would make the blending state as big as a chip); a raster smaller than the chip gets one
window that reaches past it, read as nodata. :class:`WindowPlan` holds the window
positions per axis and the blend weights per axis position:

* a weight ramps linearly across each overlap with a neighbour (zero within ``border``
  pixels of a window's inner edge, an optional crop), and stays 1 at the raster's outer
  edges, where no neighbour can take over;
* the weights of one axis are normalised so they sum to one at every pixel; a window's
  2-D weight is the outer product of its row and column weights, so the weights of all
  windows sum to one at every pixel too (float64; no weight-sum raster is needed).

With ``overlap=0`` and a raster a whole number of chips wide every weight is 1: plain
tiling.

Example:
    >>> plan = plan_windows((1000, 700), 256, overlap=32)
    >>> plan.rows, plan.cols
    ((0, 186, 372, 558, 744), (0, 222, 444))
    >>> len(plan), plan.window(1, 2)
    (15, Window(row=186, col=444, height=256, width=256))
    >>> import numpy as np
    >>> total = np.zeros((1000, 700))
    >>> for r, c in plan.order():
    ...     w = plan.weight(r, c)
    ...     total[plan.rows[r] : plan.rows[r] + 256, plan.cols[c] : plan.cols[c] + 256] += w
    >>> bool(np.abs(total - 1).max() < 1e-12)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..core.grid import Window
from ..errors import InputError

__all__ = ["WindowPlan", "axis_positions", "axis_weights", "plan_windows"]


def axis_positions(length: int, chip: int, overlap: int) -> tuple[int, ...]:
    """Window starts along one axis: the fewest windows that overlap by at least
    ``overlap``, spread evenly from one edge to the other (so the first and the last are
    flush with the edges and every overlap is within a pixel of the others); one window at
    0 when the axis is shorter than the chip."""
    if length <= chip:
        return (0,)
    stride = chip - overlap
    n = -(-(length - overlap) // stride)  # windows needed with at least `overlap`
    if n == 1 or ((length - chip) % (n - 1) == 0 and (length - chip) // (n - 1) == stride):
        return tuple(range(0, length - chip + 1, stride))
    return tuple(i * (length - chip) // (n - 1) for i in range(n))


def axis_weights(
    length: int, chip: int, starts: tuple[int, ...], border: int = 0
) -> npt.NDArray[np.float64]:
    """Normalised 1-D blend weights, one row of ``chip`` values per window start.

    A window's raw weight ramps from its inner edges across the overlap with the
    neighbour on that side (``(d - border + 0.5) / (overlap - 2 * border)``, clipped to
    [0, 1], ``d`` pixels from the edge); at the raster's outer edges it stays 1. The raw
    weights are then divided by their sum at each pixel, so they sum to one.
    """
    n = len(starts)
    raw = np.ones((n, chip), dtype=np.float64)
    d = np.arange(chip, dtype=np.float64)
    for i, start in enumerate(starts):
        if i > 0:
            over = starts[i - 1] + chip - start
            if over > 0:
                ramp = max(over - 2 * border, 1)
                raw[i] = np.minimum(raw[i], np.clip((d - border + 0.5) / ramp, 0, 1))
        if i < n - 1:
            over = start + chip - starts[i + 1]
            if over > 0:
                ramp = max(over - 2 * border, 1)
                raw[i] = np.minimum(raw[i], np.clip((d[::-1] - border + 0.5) / ramp, 0, 1))
    total = np.zeros(max(length, chip), dtype=np.float64)
    for i, start in enumerate(starts):
        total[start : start + chip] += raw[i]
    if (total[:length] <= 0).any():
        bad = int(np.flatnonzero(total[:length] <= 0)[0])
        raise InputError(
            f"border={border} leaves pixel {bad} with no window to take it; the overlap must "
            f"be at least 2 * border + 1"
        )
    out = np.empty_like(raw)
    for i, start in enumerate(starts):
        denom = total[start : start + chip]
        out[i] = np.divide(raw[i], denom, out=np.zeros(chip), where=denom > 0)
    return out


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a ``(height, width)`` grid: starts per axis, weights per axis start."""

    height: int
    width: int
    chip: int
    overlap: int
    border: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    row_weights: npt.NDArray[np.float64] = field(repr=False, compare=False)
    col_weights: npt.NDArray[np.float64] = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def order(self) -> Iterator[tuple[int, int]]:
        """(row index, column index) of every window, row-major: the order of the run."""
        for r in range(len(self.rows)):
            for c in range(len(self.cols)):
                yield r, c

    def window(self, r: int, c: int) -> Window:
        """The window at row index ``r`` and column index ``c``."""
        return Window(self.rows[r], self.cols[c], self.chip, self.chip)

    def weight(self, r: int, c: int) -> npt.NDArray[np.float64]:
        """The (chip, chip) blend weight of window (r, c)."""
        return np.outer(self.row_weights[r], self.col_weights[c])

    def next_row(self, r: int) -> int:
        """The first grid row no later window row touches: where row r's final rows end."""
        return self.rows[r + 1] if r + 1 < len(self.rows) else self.height

    def next_col(self, c: int) -> int:
        """The first grid column no later window of a row touches."""
        return self.cols[c + 1] if c + 1 < len(self.cols) else self.width


def plan_windows(
    shape: tuple[int, int], chip: int, *, overlap: int = 0, border: int = 0
) -> WindowPlan:
    """Plan windows of ``chip`` x ``chip`` pixels over a grid of ``shape`` (height, width)
    with ``overlap`` pixels between neighbours and ``border`` pixels cropped at inner edges
    (see the module docstring). No I/O."""
    height, width = (int(v) for v in shape)
    if chip < 1:
        raise InputError(f"chip must be at least 1 pixel, got {chip}")
    if not 0 <= overlap < chip:
        raise InputError(f"overlap must be >= 0 and smaller than the chip ({chip}), got {overlap}")
    if border < 0 or (border > 0 and overlap < 2 * border + 1):
        raise InputError(
            f"border must be >= 0 and at most (overlap - 1) / 2 = {(overlap - 1) // 2} so "
            f"that a neighbour covers what is cropped; got border={border}, overlap={overlap}"
        )
    if height < 1 or width < 1:
        raise InputError(f"cannot plan windows over an empty grid of {height}x{width} pixels")
    rows = axis_positions(height, chip, overlap)
    cols = axis_positions(width, chip, overlap)
    return WindowPlan(
        height=height,
        width=width,
        chip=chip,
        overlap=overlap,
        border=border,
        rows=rows,
        cols=cols,
        row_weights=axis_weights(height, chip, rows, border),
        col_weights=axis_weights(width, chip, cols, border),
    )

"""Batch arrays handed out again once nothing holds them (:class:`Recycler`).

Writing into memory that was written before saves the page faults (and the kernel's
zeroing) of a fresh allocation. Whether anything still holds an array is read from its
reference count (:data:`UNREFERENCED`), as numpy's own ``ndarray.resize`` does.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Recycler",
]


def _unreferenced_count() -> int | None:
    """What ``sys.getrefcount(items[k])`` says of an object that only the list ``items``
    holds, or None where reference counts cannot tell (free-threaded Python)."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():  # pragma: no cover - 3.13t
        return None
    items = [object()]
    return sys.getrefcount(items[0])


UNREFERENCED = _unreferenced_count()


class Recycler:
    """Allocates batch arrays, and hands an array out again once nothing else holds it.

    Writing into memory that was written before saves the page faults (and the kernel's
    zeroing) of a fresh allocation: about a tenth of the CPU when GDAL decodes straight
    into the batches. Whether anything still holds an array is read from its reference
    count: a view of it, a tensor from ``torch.from_numpy``, a ``memoryview`` all hold a
    reference to the array that owns the memory (numpy's own ``ndarray.resize`` relies on
    the same). So a batch's pixels stay yours for as long as you hold ``batch.image`` or
    anything made from it without a copy. At most ``keep`` arrays are kept for reuse.

    >>> alloc = Recycler(keep=2)
    >>> a, _ = alloc((2, 3), np.dtype("uint8"))
    >>> b, _ = alloc((2, 3), np.dtype("uint8"))
    >>> a is b  # ``a`` is still held, so ``b`` is new memory
    False
    >>> pointer = a.ctypes.data
    >>> del a
    >>> c, _ = alloc((1, 3), np.dtype("uint8"))  # a shorter batch: a view of a free one
    >>> c.ctypes.data == pointer
    True
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.arrays: list[npt.NDArray[Any]] = []

    def __call__(
        self, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> tuple[npt.NDArray[Any], Any]:
        """A (count, ...) array: a free one of this shape (or a leading part of one), or a
        new one."""
        if UNREFERENCED is not None:
            for k in range(len(self.arrays)):
                if sys.getrefcount(self.arrays[k]) != UNREFERENCED:
                    continue
                array = self.arrays[k]
                if (
                    array.dtype == dtype
                    and array.shape[1:] == shape[1:]
                    and array.shape[0] >= shape[0]
                ):
                    return (array if array.shape[0] == shape[0] else array[: shape[0]]), None
        array = np.empty(shape, dtype=dtype)
        if UNREFERENCED is not None:
            if len(self.arrays) < self.keep:
                self.arrays.append(array)
            else:  # replace a free array of another shape, if any
                for k in range(len(self.arrays)):
                    if sys.getrefcount(self.arrays[k]) == UNREFERENCED:
                        self.arrays[k] = array
                        break
        return array, None

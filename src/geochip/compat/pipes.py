"""torchdata's iterable DataPipes, as zen3geo users chain them: the base class, the functional
names and the generic verbs.

Every stage is a ``torch.utils.data.IterableDataset`` (so a ``DataLoader`` takes the last one
as its dataset) and reaches every registered stage by its functional name:
``dp.map(fn)`` is ``Mapper(dp, fn)``, as in torchdata 0.9. The verbs follow torchdata's
documented behaviour: ``map`` (with ``input_col``/``output_col``), ``filter``, ``flatmap``,
``zip``, ``zip_longest``, ``concat``, ``enumerate``, ``header``, ``cycle``, ``shuffle``
(buffered; ``set_seed``/``set_shuffle``), ``in_batch_shuffle``, ``batch``, ``unbatch``,
``collate``, ``sharding_filter`` and ``set_length``. ``len()`` is known where torchdata
knows it, and a stage whose length depends on the data (``filter``, ``unbatch``,
``flatmap``) raises ``TypeError``, as torchdata does.

Example:
    >>> dp = IterableWrapper(range(10))
    >>> list(dp.map(lambda x: x * 2).filter(lambda x: x % 3 == 0))
    [0, 6, 12, 18]
    >>> batches = dp.batch(4)
    >>> len(batches), list(batches)[-1], list(batches.unbatch())[:3]
    (3, [8, 9], [0, 1, 2])
    >>> list(IterableWrapper("ab").zip(IterableWrapper([1, 2, 3])).enumerate())
    [(0, ('a', 1)), (1, ('b', 2))]
"""

from __future__ import annotations

import contextlib
import copy
import functools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import IterableDataset

from ..errors import InputError

__all__ = [
    "Batcher",
    "Collator",
    "Concater",
    "Cycler",
    "Enumerator",
    "Filter",
    "FlatMapper",
    "Header",
    "InBatchShuffler",
    "IterDataPipe",
    "IterableWrapper",
    "LengthSetter",
    "Mapper",
    "ShardingFilter",
    "Shuffler",
    "UnBatcher",
    "Zipper",
    "ZipperLongest",
    "functional_datapipe",
]

#: functional name -> the stage class it builds (the first argument is the source).
FUNCTIONS: dict[str, Callable[..., Any]] = {}


def functional_datapipe(name: str) -> Callable[[type], type]:
    """Register a stage class under ``name``: ``dp.<name>(...)`` builds ``cls(dp, ...)``."""

    def register(cls: type) -> type:
        FUNCTIONS[name] = cls
        return cls

    return register


class IterDataPipe(IterableDataset[Any]):
    """A stage of a pipeline: iterable, usable as a ``DataLoader`` dataset, with the
    registered functional names as methods."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in FUNCTIONS:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{name}'; the DataPipe "
                f"verbs here are {', '.join(sorted(FUNCTIONS))} (see docs/zen3geo.md)"
            )
        return functools.partial(FUNCTIONS[name], self)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} instance doesn't have valid length")

    def __repr__(self) -> str:
        return f"{type(self).__name__}"

    def __add__(self, other: Any) -> Any:
        return NotImplemented


def _length(dp: Any) -> int:
    """``len(dp)``, with torchdata's ``TypeError`` for a source without one."""
    return len(dp)


class IterableWrapper(IterDataPipe):
    """The first stage: any iterable (paths, URLs, ``pystac.Item``s, xarray objects,
    dictionaries...). With ``deepcopy`` (the default) each pass iterates a deep copy, so
    changes made downstream never reach the source, as in torchdata."""

    def __init__(self, iterable: Iterable[Any], deepcopy: bool = True) -> None:
        self.iterable = iterable
        self.deepcopy = deepcopy

    @property
    def sources(self) -> list[Any]:
        """The wrapped items, as a list."""
        return list(self.iterable)

    def __iter__(self) -> Iterator[Any]:
        data = self.iterable
        if self.deepcopy:
            with contextlib.suppress(TypeError, copy.Error):  # else the original, as torchdata
                data = copy.deepcopy(data)
        yield from data

    def __len__(self) -> int:
        if not hasattr(self.iterable, "__len__"):
            raise TypeError(f"{type(self).__name__} instance doesn't have valid length")
        return len(self.iterable)  # type: ignore[arg-type]


def _pick(data: Any, col: Any) -> Any:
    if isinstance(col, (list, tuple)):
        return tuple(data[c] for c in col)
    return data[col]


@functional_datapipe("map")
class Mapper(IterDataPipe):
    """``fn`` applied to every item, or to ``data[input_col]`` (one key/index, or a list:
    ``fn`` gets them as arguments); the result replaces ``input_col`` or goes to
    ``output_col`` (``-1`` appends to a list or tuple)."""

    def __init__(
        self,
        datapipe: Any,
        fn: Callable[..., Any],
        input_col: Any = None,
        output_col: Any = None,
    ) -> None:
        if input_col is None and output_col is not None:
            raise InputError("map: output_col needs input_col, as in torchdata")
        if isinstance(input_col, (list, tuple)) and output_col is None and len(input_col) > 1:
            raise InputError(
                f"map: input_col={list(input_col)} has several columns; give output_col"
            )
        self.datapipe = datapipe
        self.fn = fn
        self.input_col = input_col
        self.output_col = output_col

    def _apply(self, data: Any) -> Any:
        if self.input_col is None:
            return self.fn(data)
        if isinstance(self.input_col, (list, tuple)):
            result = self.fn(*_pick(data, self.input_col))
        else:
            result = self.fn(data[self.input_col])
        is_tuple = isinstance(data, tuple)
        out = list(data) if is_tuple else copy.copy(data)
        col = self.output_col
        if col is None:
            col = self.input_col[0] if isinstance(self.input_col, (list, tuple)) else self.input_col
        if col == -1 and isinstance(out, list):
            out.append(result)
        else:
            out[col] = result
        return tuple(out) if is_tuple else out

    def __iter__(self) -> Iterator[Any]:
        for data in self.datapipe:
            yield self._apply(data)

    def __len__(self) -> int:
        return _length(self.datapipe)


@functional_datapipe("filter")
class Filter(IterDataPipe):
    """The items for which ``filter_fn`` (of the item, or of ``data[input_col]``) is true."""

    def __init__(self, datapipe: Any, filter_fn: Callable[..., bool], input_col: Any = None):
        self.datapipe = datapipe
        self.filter_fn = filter_fn
        self.input_col = input_col

    def __iter__(self) -> Iterator[Any]:
        for data in self.datapipe:
            if self.input_col is None:
                keep = self.filter_fn(data)
            elif isinstance(self.input_col, (list, tuple)):
                keep = self.filter_fn(*_pick(data, self.input_col))
            else:
                keep = self.filter_fn(data[self.input_col])
            if keep:
                yield data


@functional_datapipe("flatmap")
class FlatMapper(IterDataPipe):
    """Every element of ``fn(item)`` (of the item itself without ``fn``), one by one."""

    def __init__(
        self, datapipe: Any, fn: Callable[..., Any] | None = None, input_col: Any = None
    ) -> None:
        self.datapipe = datapipe
        self.fn = fn
        self.input_col = input_col

    def __iter__(self) -> Iterator[Any]:
        for data in self.datapipe:
            arg = data if self.input_col is None else _pick(data, self.input_col)
            yield from (arg if self.fn is None else self.fn(arg))


@functional_datapipe("zip")
class Zipper(IterDataPipe):
    """Tuples of one item from each pipe, until the shortest ends."""

    def __init__(self, *datapipes: Any) -> None:
        self.datapipes = datapipes

    def __iter__(self) -> Iterator[Any]:
        yield from zip(*self.datapipes, strict=False)

    def __len__(self) -> int:
        return min(_length(dp) for dp in self.datapipes)


@functional_datapipe("zip_longest")
class ZipperLongest(IterDataPipe):
    """Tuples of one item from each pipe, until the longest ends (``fill_value`` after)."""

    def __init__(self, *datapipes: Any, fill_value: Any = None) -> None:
        self.datapipes = datapipes
        self.fill_value = fill_value

    def __iter__(self) -> Iterator[Any]:
        iterators = [iter(dp) for dp in self.datapipes]
        done = [False] * len(iterators)
        while True:
            row = []
            for i, it in enumerate(iterators):
                try:
                    row.append(next(it) if not done[i] else self.fill_value)
                except StopIteration:
                    done[i] = True
                    row.append(self.fill_value)
            if all(done):
                return
            yield tuple(row)

    def __len__(self) -> int:
        return max(_length(dp) for dp in self.datapipes)


@functional_datapipe("concat")
class Concater(IterDataPipe):
    """The items of this pipe, then of each other one."""

    def __init__(self, *datapipes: Any) -> None:
        if not datapipes:
            raise InputError("concat needs at least one DataPipe")
        self.datapipes = datapipes

    def __iter__(self) -> Iterator[Any]:
        for dp in self.datapipes:
            yield from dp

    def __len__(self) -> int:
        return sum(_length(dp) for dp in self.datapipes)


@functional_datapipe("enumerate")
class Enumerator(IterDataPipe):
    """``(index, item)`` pairs from ``starting_index``."""

    def __init__(self, source_datapipe: Any, starting_index: int = 0) -> None:
        self.source_datapipe = source_datapipe
        self.starting_index = starting_index

    def __iter__(self) -> Iterator[Any]:
        yield from enumerate(self.source_datapipe, self.starting_index)

    def __len__(self) -> int:
        return _length(self.source_datapipe)


@functional_datapipe("header")
class Header(IterDataPipe):
    """The first ``limit`` items (all of them when ``limit`` is None)."""

    def __init__(self, source_datapipe: Any, limit: int | None = 10) -> None:
        self.source_datapipe = source_datapipe
        self.limit = limit

    def __iter__(self) -> Iterator[Any]:
        for i, data in enumerate(self.source_datapipe):
            if self.limit is not None and i >= self.limit:
                return
            yield data

    def __len__(self) -> int:
        try:
            n = _length(self.source_datapipe)
        except TypeError:
            if self.limit is None:
                raise
            return self.limit
        return n if self.limit is None else min(n, self.limit)


@functional_datapipe("cycle")
class Cycler(IterDataPipe):
    """The source ``count`` times over (for ever when ``count`` is None)."""

    def __init__(self, source_datapipe: Any, count: int | None = None) -> None:
        if count is not None and count < 0:
            raise InputError(f"cycle: count must be None or at least 0, got {count}")
        self.source_datapipe = source_datapipe
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        n = 0
        while self.count is None or n < self.count:
            yield from self.source_datapipe
            n += 1

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError(f"{type(self).__name__} instance doesn't have valid length")
        return self.count * _length(self.source_datapipe)


@functional_datapipe("shuffle")
class Shuffler(IterDataPipe):
    """The items in random order, through a buffer of ``buffer_size`` (torchdata's
    algorithm: each new item swaps with a random one of a full buffer, which leaves).
    ``set_seed`` makes the order repeatable; ``set_shuffle(False)`` turns it off."""

    def __init__(self, datapipe: Any, *, buffer_size: int = 10000, unbatch_level: int = 0) -> None:
        if buffer_size <= 0:
            raise InputError(f"shuffle: buffer_size must be at least 1, got {buffer_size}")
        self.datapipe = datapipe if unbatch_level == 0 else UnBatcher(datapipe, unbatch_level)
        self.buffer_size = buffer_size
        self._enabled = True
        self._seed: int | None = None

    def set_shuffle(self, shuffle: bool = True) -> Shuffler:
        self._enabled = shuffle
        return self

    def set_seed(self, seed: int) -> Shuffler:
        self._seed = seed
        return self

    def __iter__(self) -> Iterator[Any]:
        if not self._enabled:
            yield from self.datapipe
            return
        rng = random.Random(self._seed)
        buffer: list[Any] = []
        for data in self.datapipe:
            if len(buffer) == self.buffer_size:
                idx = rng.randint(0, len(buffer) - 1)
                leaving = buffer[idx]
                buffer[idx] = data
                yield leaving
            else:
                buffer.append(data)
        rng.shuffle(buffer)
        yield from buffer

    def __len__(self) -> int:
        return _length(self.datapipe)


@functional_datapipe("in_batch_shuffle")
class InBatchShuffler(IterDataPipe):
    """Every batch (list) with its items shuffled."""

    def __init__(self, datapipe: Any) -> None:
        self.datapipe = datapipe
        self._seed: int | None = None

    def set_seed(self, seed: int) -> InBatchShuffler:
        self._seed = seed
        return self

    def __iter__(self) -> Iterator[Any]:
        rng = random.Random(self._seed)
        for batch in self.datapipe:
            items = list(batch)
            rng.shuffle(items)
            yield items

    def __len__(self) -> int:
        return _length(self.datapipe)


@functional_datapipe("batch")
class Batcher(IterDataPipe):
    """Lists (``wrapper_class``) of ``batch_size`` items; the last may be shorter unless
    ``drop_last``."""

    def __init__(
        self,
        datapipe: Any,
        batch_size: int,
        drop_last: bool = False,
        wrapper_class: Callable[[list[Any]], Any] = list,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.datapipe = datapipe
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.wrapper_class = wrapper_class

    def __iter__(self) -> Iterator[Any]:
        batch: list[Any] = []
        for data in self.datapipe:
            batch.append(data)
            if len(batch) == self.batch_size:
                yield self.wrapper_class(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.wrapper_class(batch)

    def __len__(self) -> int:
        n = _length(self.datapipe)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


@functional_datapipe("unbatch")
class UnBatcher(IterDataPipe):
    """The items of every batch, ``unbatch_level`` levels down (``-1``: all levels)."""

    def __init__(self, datapipe: Any, unbatch_level: int = 1) -> None:
        if unbatch_level < -1:
            raise InputError(f"unbatch_level must be -1 or more, got {unbatch_level}")
        self.datapipe = datapipe
        self.unbatch_level = unbatch_level

    def _dive(self, element: Any, level: int) -> Iterator[Any]:
        if level == -1:
            if isinstance(element, (list, tuple)):
                for item in element:
                    yield from self._dive(item, -1)
            else:
                yield element
        elif level == 0:
            yield element
        else:
            if not isinstance(element, (list, tuple)):
                raise InputError(
                    f"unbatch_level {self.unbatch_level} is deeper than the data "
                    f"(a {type(element).__name__} is not a batch)"
                )
            for item in element:
                yield from self._dive(item, level - 1)

    def __iter__(self) -> Iterator[Any]:
        for element in self.datapipe:
            yield from self._dive(element, self.unbatch_level)


def default_collate(batch: Any) -> Any:
    """torch's ``default_collate`` (numbers, arrays and mappings to tensors)."""
    from torch.utils.data import default_collate as collate  # lazy: torch's own

    return collate(batch)


@functional_datapipe("collate")
class Collator(IterDataPipe):
    """Every item (a batch) through ``collate_fn``, or ``conversion`` (torch's
    ``default_collate`` unless given)."""

    def __init__(
        self,
        datapipe: Any,
        conversion: Callable[[Any], Any] | None = default_collate,
        collate_fn: Callable[[Any], Any] | None = None,
    ) -> None:
        self.datapipe = datapipe
        self.fn = collate_fn if collate_fn is not None else (conversion or default_collate)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.datapipe:
            yield self.fn(batch)

    def __len__(self) -> int:
        return _length(self.datapipe)


@functional_datapipe("sharding_filter")
class ShardingFilter(IterDataPipe):
    """In DataLoader worker ``i`` of ``n``, the items ``i, i + n, i + 2n...``; outside a
    worker, all of them. Put it after the stages every worker should run in full."""

    def __init__(self, source_datapipe: Any) -> None:
        self.source_datapipe = source_datapipe

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import get_worker_info  # lazy: torch's worker state

        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if shards_itself(self.source_datapipe):
            worker, workers = 0, 1  # a geochip chip stream upstream splits the work already
        for i, data in enumerate(self.source_datapipe):
            if i % workers == worker:
                yield data

    def __len__(self) -> int:
        return _length(self.source_datapipe)


@functional_datapipe("set_length")
class LengthSetter(IterDataPipe):
    """The source, unchanged, with ``len()`` set to ``length`` (as torchdata: the items are
    not cut to it)."""

    def __init__(self, source_datapipe: Any, length: int) -> None:
        if length < 0:
            raise InputError(f"set_length: length must be at least 0, got {length}")
        self.source_datapipe = source_datapipe
        self.length = length

    def __iter__(self) -> Iterator[Any]:
        yield from self.source_datapipe

    def __len__(self) -> int:
        return self.length


def shards_itself(datapipe: Any) -> bool:
    """Whether a stage upstream splits its work across DataLoader workers by itself (the
    chip streams planned from headers do), so that sharding again would lose items."""
    seen = 0
    stack = [datapipe]
    while stack and seen < 1000:
        dp = stack.pop()
        seen += 1
        if getattr(dp, "shards_itself", False):
            return True
        for name in ("datapipe", "source_datapipe", "source"):
            if isinstance(getattr(dp, name, None), IterDataPipe):
                stack.append(getattr(dp, name))
        stack.extend(d for d in getattr(dp, "datapipes", ()) if isinstance(d, IterDataPipe))
    return False


def sources_of(datapipe: Any) -> Sequence[Any]:
    """The items of a pipe, as a list (the wrapped list itself for an IterableWrapper)."""
    if isinstance(datapipe, IterableWrapper):
        return datapipe.sources
    return list(datapipe)

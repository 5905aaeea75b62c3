"""Reading a store: :func:`open_store` (a :class:`ChipStore`: the index, the manifest, the
arrays) and :class:`ArrayReader`, which decodes chunk files straight into a buffer (no
Zarr call per chip) for the layouts geochip writes.

zarr (~0.6 s to import) is imported only for layouts the reader does not decode itself:
DataLoader workers read chips without it.

A store in object storage (``s3://...``, an :class:`~geochip.core.storage.ObjectPath`) is
read the same way through byte ranges: a shard's index once (one suffix-range request,
cached per process), then one range request per chip; :meth:`ArrayReader.prefetch` fetches
the chips of a whole batch concurrently (fsspec ``cat_ranges``).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import google_crc32c
import numcodecs
import numpy as np
import numpy.typing as npt

from ..core.storage import ObjectPath, store_path
from ..errors import StoreError
from .format import FORMAT, FORMAT_VERSION
from .remote import zarr_store

__all__ = [
    "ArrayReader",
    "ChipStore",
    "open_store",
]

_MAX_U64 = 2**64 - 1


class ArrayReader:
    """Reads chip ``i`` of a Zarr v3 array written by geochip straight from its chunk file.

    Zarr's per-call machinery costs more than decoding a chip; for the layouts geochip
    writes (one chip per chunk or per inner chunk of a shard; ``bytes`` + optional Blosc or
    Zstd) this reader opens the file, reads the bytes and decodes them into the caller's
    buffer. Other layouts fall back to Zarr. Safe to use after ``fork`` (it holds no open
    files; shard indexes are cached per process).
    """

    def __init__(self, path: str | Path | ObjectPath) -> None:
        self.path = store_path(path)
        self.remote = isinstance(self.path, ObjectPath)
        meta = json.loads((self.path / "zarr.json").read_text())
        self.shape = tuple(int(s) for s in meta["shape"])
        self.dtype = np.dtype(meta["data_type"])
        fill = meta["fill_value"]
        self.fill = float("nan") if fill in ("NaN", "nan") else fill
        self.chip_shape = self.shape[1:]
        self.nbytes = int(np.prod(self.chip_shape)) * self.dtype.itemsize
        self.per_file = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        encoding = meta.get("chunk_key_encoding", {})
        sep = encoding.get("configuration", {}).get("separator", "/")
        self._fast = encoding.get("name") == "default" and sep == "/"
        self._sep = sep
        codecs = meta["codecs"]
        self.sharded = codecs[0]["name"] == "sharding_indexed"
        inner = codecs[0]["configuration"]["codecs"] if self.sharded else codecs
        if self.sharded:
            conf = codecs[0]["configuration"]
            inner_shape = tuple(conf["chunk_shape"])
            self._fast &= (
                inner_shape == (1, *self.chip_shape) and conf.get("index_location", "end") == "end"
            )
            names = [c["name"] for c in conf["index_codecs"]]
            self._fast &= names in (["bytes", "crc32c"], ["bytes"])
            self._index_crc = "crc32c" in names
        else:
            self._fast &= (
                self.per_file == 1
                and tuple(meta["chunk_grid"]["configuration"]["chunk_shape"][1:]) == self.chip_shape
            )
        self.codec = "none"
        for codec in inner:
            name = codec["name"]
            if name == "bytes":
                endian = codec.get("configuration", {}).get("endian", "little")
                self._fast &= endian == "little" or self.dtype.itemsize == 1
            elif name in ("blosc", "zstd") and self.codec == "none":
                self.codec = name
            else:
                self._fast = False
        self._ndim = len(self.shape)
        self._shard_index: dict[int, npt.NDArray[np.uint64]] = {}
        self._zarr: Any = None
        self._decoder: Any = None
        self._buffer: npt.NDArray[np.uint8] | None = None
        self._prefetched: dict[int, bytes | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zarr"] = None
        state["_decoder"] = None
        state["_shard_index"] = {}
        state["_buffer"] = None
        state["_prefetched"] = {}
        return state

    def _key(self, c: int) -> Any:
        return self.path.joinpath("c", str(c), *(["0"] * (self._ndim - 1)))

    def _decode(self, data: bytes | memoryview, out: npt.NDArray[Any]) -> None:
        if self.codec == "none":
            if len(data) != self.nbytes:
                raise StoreError(
                    f"{self.path}: a chunk holds {len(data)} bytes, expected {self.nbytes}"
                )
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
            return
        if self._decoder is None:
            self._decoder = numcodecs.Blosc() if self.codec == "blosc" else numcodecs.Zstd()
        self._decoder.decode(data, out=out.reshape(-1).view(np.uint8))

    def _shard(self, s: int) -> npt.NDArray[np.uint64] | None:
        index = self._shard_index.get(s)
        if index is not None:
            return index
        path = self._key(s)
        try:
            if isinstance(path, ObjectPath):
                raw = path.read_range(-self._index_size)
            else:
                with open(path, "rb", buffering=0) as f:
                    f.seek(-self._index_size, os.SEEK_END)
                    raw = f.read(self._index_size)
        except FileNotFoundError:
            return None
        return self._set_index(s, raw)

    @property
    def _index_size(self) -> int:
        return self.per_file * 16 + (4 if self._index_crc else 0)

    def _set_index(self, s: int, raw: bytes) -> npt.NDArray[np.uint64]:
        path = self._key(s)
        if self._index_crc:
            if int.from_bytes(raw[-4:], "little") != google_crc32c.value(raw[:-4]):
                raise StoreError(f"{path}: the shard index fails its crc32c check")
            raw = raw[:-4]
        index = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        self._shard_index[s] = index
        return index

    def prefetch(self, positions: Any) -> None:
        """Fetch the encoded bytes of chips ``positions`` of a remote store concurrently
        (the shard indexes not cached yet in one round, then one range per chip, or per run
        of chips stored one after another); the next :meth:`read_into` of each uses them.
        Nothing for a local store."""
        if not self.remote or not self._fast:
            return
        assert isinstance(self.path, ObjectPath)
        wanted = sorted({int(i) for i in positions} - set(self._prefetched))
        if self.sharded:
            shards = sorted({i // self.per_file for i in wanted} - set(self._shard_index))
            size = self._index_size
            keys = [self._key(s) for s in shards]
            got = self.path.read_ranges(keys, [-size] * len(shards), [None] * len(shards))
            for s, raw in zip(shards, got, strict=True):
                if isinstance(raw, FileNotFoundError):
                    continue
                if isinstance(raw, BaseException):
                    raise raw
                self._set_index(s, raw)
        spans = []
        for i in wanted:
            if self.sharded and i // self.per_file not in self._shard_index:
                self._prefetched[i] = None  # the shard is not stored: all fill
                continue
            where = self.locate(i)
            if where is None:
                self._prefetched[i] = None
            else:
                spans.append((i, where))
        # chips stored one after another in a shard (an epoch in order, a validation pass)
        # come in one range: [key, start, end, [(chip, offset), ...]]
        runs: list[list[Any]] = []
        for i, (key, offset, nbytes) in sorted(spans, key=lambda s: (s[1][0].url, s[1][1])):
            if nbytes >= 0 and runs and runs[-1][0] == key and runs[-1][2] == offset:
                runs[-1][2] = offset + nbytes
                runs[-1][3].append((i, offset))
            else:
                runs.append([key, offset, offset + nbytes if nbytes >= 0 else None, [(i, offset)]])
        keys, starts, ends = ([r[k] for r in runs] for k in range(3))
        got = self.path.read_ranges(keys, starts, ends)
        for (_, start, _, chips), data in zip(runs, got, strict=True):
            if isinstance(data, FileNotFoundError):
                self._prefetched.update((i, None) for i, _ in chips)
                continue
            if isinstance(data, BaseException):
                raise data
            stops = [offset - start for _, offset in chips[1:]] + [len(data)]
            for (i, offset), stop in zip(chips, stops, strict=True):
                self._prefetched[i] = data[offset - start : stop]

    def locate(self, i: int) -> tuple[Any, int, int] | None:
        """(file, offset, nbytes) of chip ``i``'s encoded bytes; None when not stored
        (nbytes -1: the whole object of a remote store, size not asked for)."""
        if self.sharded:
            s, j = divmod(i, self.per_file)
            index = self._shard(s)
            if index is None:
                return None
            offset, nbytes = (int(v) for v in index[j])
            if offset == _MAX_U64 and nbytes == _MAX_U64:
                return None
            return self._key(s), offset, nbytes
        path = self._key(i)
        if isinstance(path, ObjectPath):
            return path, 0, -1
        try:
            return path, 0, os.stat(path).st_size
        except FileNotFoundError:
            return None

    def read_into(self, i: int, out: npt.NDArray[Any]) -> None:
        """Decode chip ``i`` into ``out`` (shape ``shape[1:]``, this dtype, C-contiguous)."""
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"chip {i} out of range for {self.shape[0]} chips")
        if not self._fast:
            if self._zarr is None:
                import zarr  # lazy: ~0.6 s; DataLoader workers read chunk files without it

                self._zarr = zarr.open_array(zarr_store(self.path, read_only=True), mode="r")
            out[...] = self._zarr[i]
            return
        if self.remote:
            self._read_remote(i, out)
            return
        where = self.locate(i)
        if where is None:
            out.fill(self.fill)
            return
        path, offset, nbytes = where
        if self.codec == "none" and out.flags.c_contiguous:
            with open(path, "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
            if got != self.nbytes:
                raise StoreError(f"{path}: chip {i} has {got} bytes, expected {self.nbytes}")
            return
        # a reused read buffer: a fresh bytes object per chip costs page faults
        if self._buffer is None or len(self._buffer) < nbytes:
            self._buffer = np.empty(max(nbytes, self.nbytes + 1024), dtype=np.uint8)
        view = memoryview(self._buffer)[:nbytes]  # type: ignore[arg-type]
        with open(path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            got = f.readinto(view)
        if got != nbytes:
            raise StoreError(f"{path}: chip {i} is cut short ({got} of {nbytes} bytes)")
        self._decode(view, out)

    def _read_remote(self, i: int, out: npt.NDArray[Any]) -> None:
        if i not in self._prefetched:
            self.prefetch([i])
        data = self._prefetched.pop(i)
        if data is None:
            out.fill(self.fill)
            return
        if self.codec == "none" and len(data) != self.nbytes:
            raise StoreError(f"{self.path}: chip {i} has {len(data)} bytes, expected {self.nbytes}")
        self._decode(data, out)

    def read(self, i: int) -> npt.NDArray[Any]:
        """Chip ``i`` as a new array."""
        out = np.empty(self.chip_shape, dtype=self.dtype)
        self.read_into(i, out)
        return out


@dataclass
class ChipStore:
    """An opened store: the index, the manifest, and lazily opened arrays."""

    path: Path | ObjectPath
    index: gpd.GeoDataFrame
    manifest: dict[str, Any]
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    _readers: dict[str, ArrayReader] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr  # lazy: ~0.6 s; DataLoader workers read chunk files without it

            location = self.path / "chips.zarr" / name
            self._arrays[name] = zarr.open_array(zarr_store(location, read_only=True), mode="r")
        return self._arrays[name]

    def reader(self, name: str) -> ArrayReader:
        """The direct chunk reader of ``image`` or ``mask``."""
        if name not in self._readers:
            self._readers[name] = ArrayReader(self.path / "chips.zarr" / name)
        return self._readers[name]

    @property
    def image(self) -> Any:
        """The (N, [T,] C, H, W) image array (Zarr)."""
        return self._array("image")

    @property
    def mask(self) -> Any:
        """The (N, H, W) mask array (Zarr), or None when the store has no labels."""
        return self._array("mask") if self.manifest.get("mask") else None

    @property
    def has_mask(self) -> bool:
        """Whether the store has a mask array."""
        return bool(self.manifest.get("mask"))

    @property
    def bands(self) -> list[str]:
        """Band names, in channel order."""
        return list(self.manifest["image"]["bands"])

    def read(self, i: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """(image, mask) of chip ``i`` (position in the arrays and the index)."""
        image = self.reader("image").read(i)
        return image, (self.reader("mask").read(i) if self.has_mask else None)

    def ok(self) -> gpd.GeoDataFrame:
        """The index rows of chips usable for training (status ``ok``)."""
        return self.index[self.index["status"] == "ok"]

    def __getstate__(self) -> dict[str, Any]:
        # Zarr handles stay in the process that opened them (DataLoader workers fork).
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_readers"] = {}
        return state


def open_store(path: str | Path | ObjectPath) -> ChipStore:
    """Open a complete store (a folder or a URL: ``s3://bucket/ds``, ...); raise
    :class:`~geochip.errors.StoreError` if it is not one."""
    path = store_path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        partial = path.with_name(f"{path.name}.partial")
        hint = (
            "; give the folder a build or `geochip chips --out` wrote"
            if not path.exists()
            else "; give the folder that holds manifest.json"
        )
        if isinstance(path, Path) and partial.exists():
            hint = f" (an unfinished build is in {partial})"
        elif (path / ".geochip").exists():
            hint = " (an unfinished `geochip build`: run it again to resume)"
        raise StoreError(f"{path} is not a complete geochip store: no manifest.json{hint}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: manifest format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {manifest['format_version']} is newer than this "
            f"geochip reads ({FORMAT_VERSION}); upgrade geochip"
        )
    index = gpd.read_parquet(io.BytesIO((path / "index.parquet").read_bytes()))
    if "error" not in index.columns:
        index["error"] = ""
    return ChipStore(path, index, manifest)

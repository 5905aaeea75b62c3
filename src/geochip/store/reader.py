"""Reading a store: :func:`open_store` (a :class:`ChipStore`: the index, the manifest, the
arrays) and :class:`ArrayReader`, which decodes chunk files straight into a buffer (no
Zarr call per chip) for the layouts geochip writes.

zarr (~0.6 s to import) is imported only for layouts the reader does not decode itself:
DataLoader workers read chips without it.
"""

from __future__ import annotations

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

from ..errors import StoreError
from .format import FORMAT, FORMAT_VERSION

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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zarr"] = None
        state["_decoder"] = None
        state["_shard_index"] = {}
        state["_buffer"] = None
        return state

    def _key(self, c: int) -> Path:
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
        size = self.per_file * 16 + (4 if self._index_crc else 0)
        try:
            with open(path, "rb", buffering=0) as f:
                f.seek(-size, os.SEEK_END)
                raw = f.read(size)
        except FileNotFoundError:
            return None
        if self._index_crc:
            if int.from_bytes(raw[-4:], "little") != google_crc32c.value(raw[:-4]):
                raise StoreError(f"{path}: the shard index fails its crc32c check")
            raw = raw[:-4]
        index = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        self._shard_index[s] = index
        return index

    def locate(self, i: int) -> tuple[Path, int, int] | None:
        """(file, offset, nbytes) of chip ``i``'s encoded bytes; None when not stored."""
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

                self._zarr = zarr.open_array(self.path, mode="r")
            out[...] = self._zarr[i]
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

    def read(self, i: int) -> npt.NDArray[Any]:
        """Chip ``i`` as a new array."""
        out = np.empty(self.chip_shape, dtype=self.dtype)
        self.read_into(i, out)
        return out


@dataclass
class ChipStore:
    """An opened store: the index, the manifest, and lazily opened arrays."""

    path: Path
    index: gpd.GeoDataFrame
    manifest: dict[str, Any]
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    _readers: dict[str, ArrayReader] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.index)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr  # lazy: ~0.6 s; DataLoader workers read chunk files without it

            self._arrays[name] = zarr.open_array(self.path / "chips.zarr" / name, mode="r")
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


def open_store(path: str | Path) -> ChipStore:
    """Open a complete store; raise :class:`~geochip.errors.StoreError` if it is not one."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        partial = path.with_name(f"{path.name}.partial")
        hint = (
            "; give the folder a build or `geochip chips --out` wrote"
            if not path.exists()
            else "; give the folder that holds manifest.json"
        )
        if partial.exists():
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
    index = gpd.read_parquet(path / "index.parquet")
    if "error" not in index.columns:
        index["error"] = ""
    return ChipStore(path, index, manifest)

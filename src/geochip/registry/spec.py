"""The registry file format (YAML or JSON, ``version: 1``, ``datasets: {tag: spec}``):
:class:`DatasetSpec` and its masks, validated by pydantic; a bad file is refused naming the
field, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.imports import check_import_path
from ..core.validation import error_lines
from ..errors import ConfigError

__all__ = [
    "DatasetSpec",
    "Masks",
    "RasterMasks",
    "Resampling",
    "VectorMasks",
]

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Resampling = Literal[
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max",
    "med",
]  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RasterMasks(_Model):
    """Mask rasters, one per image (paired with the images in sorted order) or one for all."""

    kind: Literal["raster"] = Field(description="'raster': mask rasters (GeoTIFF, JP2).")
    paths: list[str] = Field(
        min_length=1,
        description="Paths or globs of the mask rasters (relative: from the dataset's root).",
    )
    band: int = Field(1, ge=1, description="Band of the mask rasters that holds the classes.")
    on_mismatch: Literal["raise", "reproject"] = Field(
        "raise",
        description="A mask whose grid is not on the image's pixel lattice at the dataset's "
        "resolution: 'raise' (GridMismatchError with the offset) or 'reproject' (nearest).",
    )


class VectorMasks(_Model):
    """Vector labels rasterised on each image's grid at the dataset's resolution."""

    kind: Literal["vector"] = Field(description="'vector': vector label files.")
    paths: list[str] = Field(
        min_length=1,
        description="Vector files (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet); "
        "relative: from the dataset's root. Several files are burned in order.",
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    attribute: str = Field("class", description="Column holding each shape's class.")
    classes: dict[str, int] = Field(
        min_length=1,
        description="Class map: attribute value -> class id (1..254; 0 is background, "
        "255 is ignore).",
    )
    background: int = Field(0, ge=0, le=254, description="Class id of unlabelled pixels.")
    all_touched: bool = Field(
        False, description="Burn every pixel a shape touches (not only pixel centres)."
    )
    skip_invalid: bool = Field(
        False, description="Skip invalid geometries instead of refusing them."
    )

    @field_validator("classes")
    @classmethod
    def _ids(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not 1 <= v <= 254}
        if bad:
            raise ValueError(f"class ids must be 1..254 (0 background, 255 ignore), got {bad}")
        return value


Masks = Annotated[RasterMasks | VectorMasks, Field(discriminator="kind")]


class DatasetSpec(_Model):
    """One dataset of a registry file (the value under its tag)."""

    description: str = Field("", description="What the dataset is, in one line.")
    images: list[str] = Field(
        min_length=1,
        description="Paths or globs of the image rasters (GeoTIFF, JP2); relative paths "
        "are resolved from the dataset's root.",
    )
    group: str | None = Field(
        None,
        description="Regex with named groups 'scene' and 'band' matched on file names: the "
        "band files of one scene make one image (e.g. '(?P<scene>.*)_(?P<band>B\\d+)\\.tif').",
    )
    bands: list[str] | None = Field(
        None,
        description="Bands in channel order (asset keys; '<asset>.<n>' for band n of a "
        "multi-band file, e.g. 'data.1'); None: every band.",
    )
    reference_band: str | None = Field(
        None,
        description="Band whose extent defines each image's grid; None: the first of the "
        "finest bands.",
    )
    resolution: float = Field(
        gt=0, description="The dataset's pixel size, in units of each image's CRS."
    )
    resampling: Resampling = Field(
        "nearest",
        description="Resampling of continuous bands onto the dataset's grid (quality and "
        "class bands always use nearest).",
    )
    masks: Masks | None = Field(None, description="Masks: kind raster or kind vector.")
    download: str | None = Field(
        None,
        description="'package.module:function' called with a folder to write the dataset's "
        "files into (it only runs when asked: download=True or `geochip datasets download`).",
    )
    root: str | None = Field(
        None,
        description="Folder the relative paths are resolved from and downloads are written "
        "to; relative: from the registry file's folder. Default: the registry file's folder, "
        "or <geochip cache>/datasets/<tag> for a dataset with a download function.",
    )
    license: str | None = Field(None, description="Licence of the data (SPDX id or text).")
    url: str | None = Field(None, description="Where the data comes from.")

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        if not {"scene", "band"} <= set(pattern.groupindex):
            raise ValueError("needs the named groups 'scene' and 'band'")
        return value

    @field_validator("bands")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one band, or leave bands out for all")
            dupes = sorted({b for b in value if value.count(b) > 1})
            if dupes:
                raise ValueError(f"bands repeat {dupes}")
        return value

    @field_validator("download")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        return None if value is None else check_import_path(value)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.bands and self.reference_band and self.reference_band not in self.bands:
            raise ValueError(
                f"reference_band {self.reference_band!r} is not one of bands {self.bands}"
            )
        if self.download:
            paths = [*self.images, *(self.masks.paths if self.masks else [])]
            absolute = [p for p in paths if Path(p).expanduser().is_absolute()]
            if absolute:
                raise ValueError(
                    f"a dataset with a download function needs paths relative to its root "
                    f"(the download folder); these are absolute: {absolute}"
                )
        return self


class RegistryFile(_Model):
    """A registry file: its version and its datasets by tag."""

    version: Literal[1] = Field(1, description="Version of the registry file format.")
    datasets: dict[str, DatasetSpec] = Field(description="Datasets by tag.")

    @field_validator("datasets")
    @classmethod
    def _tags(cls, value: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        bad = [t for t in value if not TAG_PATTERN.match(t)]
        if bad:
            raise ValueError(
                f"tags {bad} are not allowed; a tag is 1-64 of a-z, 0-9, '.', '_', '-' and "
                "starts with a letter or digit"
            )
        return value


def validate(model: type[_Model], data: Any, source: str) -> Any:
    """``data`` as ``model``, or a ConfigError naming every bad field of ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = error_lines(err, model)
        raise ConfigError(f"{source} is not a valid registry:\n  " + "\n  ".join(lines)) from None

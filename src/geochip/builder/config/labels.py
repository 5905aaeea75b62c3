"""``masks`` (cloud masks from a quality band) and ``labels`` (a vector file burned with a
class map, or a label raster aligned to the grid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ...core.masks import QA_LAYOUTS
from .base import Section

__all__ = [
    "LabelsConfig",
    "LandsatQaMask",
    "Mask",
    "ProbabilityMask",
    "SclMask",
]


class LandsatQaMask(Section):
    """Mask pixels flagged in a Landsat QA band (see ``geochip.core.masks.QA_LAYOUTS``)."""

    kind: Literal["landsat_qa"] = Field(description="'landsat_qa': bits of a Landsat QA band.")
    band: str = Field(description="Asset key of the QA band (e.g. 'qa', 'qa_pixel').")
    layout: Literal["landsat8_pre", "landsat_c1", "landsat_c2"] = Field(
        description="Bit layout of the QA band."
    )
    flags: list[str] = Field(
        default_factory=lambda: ["cloud"],
        min_length=1,
        description="Flags of the layout that mask a pixel (e.g. cloud, cloud_shadow, cirrus).",
    )

    @model_validator(mode="after")
    def _known_flags(self) -> LandsatQaMask:
        table = QA_LAYOUTS[self.layout]
        unknown = [f for f in self.flags if f not in table or f == "fill"]
        if unknown:
            allowed = ", ".join(sorted(f for f in table if f != "fill"))
            raise ValueError(
                f"flags {unknown} are not in layout {self.layout!r}; allowed: {allowed}"
            )
        return self


class SclMask(Section):
    """Mask pixels of chosen Sentinel-2 scene classification (SCL) classes."""

    kind: Literal["scl"] = Field(description="'scl': classes of a Sentinel-2 SCL band.")
    band: str = Field(description="Asset key of the SCL band.")
    classes: list[int] = Field(
        default_factory=lambda: [0, 1, 3, 8, 9, 10],
        min_length=1,
        description="SCL classes to mask (0..11); default: no data, defective, shadow, "
        "cloud medium/high, cirrus.",
    )

    @field_validator("classes")
    @classmethod
    def _range(cls, value: list[int]) -> list[int]:
        bad = [c for c in value if not 0 <= c <= 11]
        if bad:
            raise ValueError(f"SCL classes must be 0..11, got {bad}")
        return value


class ProbabilityMask(Section):
    """Mask pixels whose cloud probability band is at least a threshold."""

    kind: Literal["probability"] = Field(description="'probability': a cloud probability band.")
    band: str = Field(description="Asset key of the probability band.")
    threshold: float = Field(description="Mask where band >= threshold (the band's units).")


Mask = Annotated[LandsatQaMask | SclMask | ProbabilityMask, Field(discriminator="kind")]


class LabelsConfig(Section):
    """Labels -> the mask array (0 background, 1..254 classes, 255 ignore). kind vector:
    shapes rasterised on every chip's grid (``geochip.read.labels.rasterize_labels``); kind
    raster: a label raster aligned to every grid (``geochip.read.labels.align_label``)."""

    kind: Literal["vector", "raster"] = Field(
        "vector", description="vector: a vector file rasterised; raster: a label raster."
    )
    path: str | None = Field(
        None,
        description="Vector file (GeoJSON, GeoPackage, Shapefile, GeoParquet; 'sample': the "
        "packaged demo labels) or, for kind raster, one label raster for every grid. "
        "Relative paths: from the config file's folder.",
    )
    asset: str | None = Field(
        None,
        description="kind raster: the label raster is this asset of each grid's item (or of "
        "each STAC label item with selection) instead of one path.",
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    attribute: str = Field("class", description="kind vector: column holding each shape's class.")
    classes: dict[str, int] | None = Field(
        None,
        description="Class map. vector (required): attribute value -> class id 1..254. "
        "raster (optional): raster value -> class id 0..254; values not in the map become "
        "255 (ignore); None keeps the raster's values (they must fit 0..255).",
    )
    background: int = Field(
        0, ge=0, le=254, description="kind vector: class id of unlabelled pixels."
    )
    all_touched: bool = Field(
        False, description="kind vector: burn every pixel a shape touches (not only centres)."
    )
    skip_invalid: bool = Field(
        False, description="kind vector: skip invalid geometries (counted) instead of refusing."
    )
    on_mismatch: Literal["raise", "reproject"] = Field(
        "raise",
        description="kind raster: when the label grid differs from the chips' grid, raise "
        "GridMismatchError (with the offset in pixels) or reproject it with nearest.",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _kind(self) -> LabelsConfig:
        raster_only = {"asset", "on_mismatch"}
        vector_only = {"layer", "attribute", "background", "all_touched", "skip_invalid"}
        fields = type(self).model_fields
        given = {name for name in fields if getattr(self, name) != fields[name].default}
        if self.kind == "vector":
            if self.path is None:
                raise ValueError("kind vector needs path (a vector file, or 'sample')")
            if not self.classes:
                raise ValueError("kind vector needs classes (attribute value -> class id)")
            bad = {k: v for k, v in self.classes.items() if not 1 <= v <= 254}
            if bad:
                raise ValueError(f"class ids must be 1..254 (0 background, 255 ignore), got {bad}")
            extra = sorted(raster_only & given)
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for kind raster (this is vector)")
            return self
        if (self.path is None) == (self.asset is None):
            raise ValueError("kind raster needs path (one raster) or asset (per item), not both")
        extra = sorted(vector_only & given)
        if extra:
            raise ValueError(f"{', '.join(extra)}: only for kind vector (this is raster)")
        for key, class_id in (self.classes or {}).items():
            try:
                int(key)
            except ValueError:
                raise ValueError(
                    f"raster class map keys are raster values (integers), got {key!r}"
                ) from None
            if not 0 <= class_id <= 254:
                raise ValueError(f"class ids must be 0..254 (255 is ignore), got {class_id}")
        return self

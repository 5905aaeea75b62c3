"""``selection``, ``time`` and ``scale``: label-driven scene selection, the image's time axis
(periods, composites, gap-filling) and scaling to physical values.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from ...errors import GeochipError
from ...select.cloud import CloudBand
from ...select.periods import make_periods
from ...select.ranking import thresholds
from .base import Section

__all__ = [
    "GapfillConfig",
    "PeriodsValue",
    "ScaleConfig",
    "SelectionConfig",
    "TimeConfig",
]


class SelectionConfig(Section):
    """Label-driven scene selection (LandCoverNet, ``geochip.select.search.select_scenes``): for
    every label footprint, the least cloudy scene(s) of each period of ``time``, relaxing
    the cloud threshold step by step up to a limit. Each label becomes a grid; its chosen
    scenes are stacked per period into the image's time axis (an empty period is a nodata
    time step). The selection table and its items are saved in the store."""

    labels: str = Field(
        description="Label footprints: a vector file (GeoJSON, GeoPackage, GeoParquet...) or "
        "a STAC label collection (catalog/collection path or URL; items with the label "
        "extension). Relative paths: from the config file's folder."
    )
    id_column: str | None = Field(
        None, description="Column of label ids; None: 'label_id' or 'id', else the row number."
    )
    max_cloud: float = Field(10.0, ge=0, le=100, description="First cloud threshold, percent.")
    relax_step: float = Field(
        5.0, ge=0, description="Raise the threshold by this when a period has no scene under it."
    )
    cloud_limit: float = Field(
        50.0,
        ge=0,
        le=100,
        description="Highest threshold; a period with nothing under it "
        "is empty (or an error with strict).",
    )
    k: int = Field(1, ge=1, le=100, description="Scenes kept per period, best first.")
    cloud_band: str | None = Field(
        "auto",
        description="Where clouds are counted when eo:cloud_cover is missing or cloud_over is "
        "footprint: 'asset:kind[:detail]' (qa:landsat_qa:landsat8_pre, SCL:scl, "
        "CLD:probability:40), 'auto' (recognised from asset names) or null (never count).",
    )
    cloud_over: Literal["scene", "footprint"] = Field(
        "scene",
        description="scene: eo:cloud_cover (counted over the scene when missing); footprint: "
        "counted over each label's footprint from cloud_band.",
    )
    missing_cloud: Literal["raise", "skip"] = Field(
        "raise", description="A scene without any cloud information: stop, or leave it out."
    )
    strict: bool = Field(
        False, description="Raise on an empty period instead of recording it as empty."
    )
    workers: int = Field(4, ge=1, le=64, description="Labels searched at once.")

    @field_validator("cloud_band")
    @classmethod
    def _band(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value

        try:
            CloudBand.parse(value)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _ladder(self) -> SelectionConfig:
        try:
            thresholds(self.max_cloud, self.relax_step, self.cloud_limit)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return self


PeriodsValue = int | Literal["monthly", "seasonal"] | list[tuple[str, str]]


class GapfillConfig(Section):
    """Gap-filling along the time axis (``geochip.read.cube.gapfill``): pixels masked or empty in
    a time step take values from their neighbours in time; what cannot be filled stays
    nodata (NaN) and is counted, never zero."""

    method: Literal["linear", "nearest"] = Field(
        description="linear: interpolate between the previous and next valid steps, weighted "
        "by their dates (float32, NaN); nearest: copy the nearest valid step (dtype kept)."
    )
    max_gap: int | str | None = Field(
        None,
        description="Longest gap filled: a number of time steps, or a duration ('60D') "
        "between the two valid neighbours; None: any interior gap.",
    )

    @field_validator("max_gap")
    @classmethod
    def _gap(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, bool):
            raise ValueError("max_gap is a number of steps or a duration like '60D'")
        if isinstance(value, int) and value < 0:
            raise ValueError("max_gap must be >= 0 steps")
        if isinstance(value, str):
            try:
                pd.Timedelta(value)
            except ValueError:
                raise ValueError(
                    "max_gap must be a number of steps or a duration like '60D'"
                ) from None
        return value


class TimeConfig(Section):
    """The time axis of the image, (T, C, H, W) per chip. Each time step is a period; its
    scenes are combined into one image by ``composite``; then ``gapfill``. Used by
    selection (periods of the selection), geometries, and items that share a grid."""

    start: str | None = Field(
        None, description="Start of the time range (inclusive): '2024-01-01', '2024-05'."
    )
    end: str | None = Field(
        None, description="End of the time range (an end date covers its whole day)."
    )
    periods: PeriodsValue | None = Field(
        None,
        description="Time steps: N (equal periods of start..end), 'monthly', 'seasonal' "
        "(DJF, MAM, JJA, SON), or explicit [[start, end], ...] pairs. None: one step "
        "holding every scene.",
    )
    composite: Literal["first", "best", "median"] = Field(
        "first",
        description="How several scenes of one period become one step: first (per pixel, "
        "the first scene in ranking order - least cloudy first - valid in every band; dtype "
        "kept), best (per pixel, the valid scene least masked by clouds over the chip; needs "
        "masks), median (per pixel and band, float32).",
    )
    gapfill: GapfillConfig | None = Field(
        None, description="Fill masked or empty steps from their neighbours in time."
    )

    @model_validator(mode="after")
    def _periods(self) -> TimeConfig:
        spec: Any = self.periods
        if spec is None:
            if (self.start is None) != (self.end is None):
                raise ValueError("give both start and end, or neither")
            if self.start is not None:
                spec = 1
            else:
                return self
        try:
            make_periods(spec, self.start, self.end)
        except GeochipError as err:
            raise ValueError(str(err)) from None
        return self

    def make_periods(self) -> list[Any]:
        """The periods (:class:`geochip.select.periods.Period`); empty when ``periods`` is None and
        no range is given."""
        if self.periods is None:
            if self.start is None:
                return []
            return make_periods(1, self.start, self.end)
        return make_periods(self.periods, self.start, self.end)


class ScaleConfig(Section):
    """Physical values (``geochip.read.cube.scale_cube``): value * scale + offset, then clip,
    as floating point; nodata becomes NaN before scaling, clip leaves NaN as NaN. The
    store's dtype becomes ``dtype`` and its nodata NaN."""

    scale: float | dict[str, float] | None = Field(
        None,
        description="One number or band -> number; None: each band's raster:scale from its "
        "items (a band with neither raster:scale nor raster:offset is refused).",
    )
    offset: float | dict[str, float] | None = Field(
        None, description="One number or band -> number; None: each band's raster:offset."
    )
    clip: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] bounds of the scaled values (null: unbounded side)."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Output dtype.")

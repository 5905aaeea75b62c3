"""The whole build config (:class:`BuildConfig`): its sections, the checks across them, and
what of it decides the dataset's bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ...core.storage import is_url, local_path
from ...core.validation import error_lines
from ...errors import ConfigError
from .base import Section
from .chips import ChipsConfig, SplitConfig
from .grid import BandsConfig, GridConfig
from .labels import LabelsConfig, Mask
from .output import EngineConfig, OutputConfig, StatsConfig
from .sources import Source
from .time import ScaleConfig, SelectionConfig, TimeConfig

__all__ = [
    "BuildConfig",
    "diff_fields",
    "validate_config",
]


class BuildConfig(Section):
    """A chip dataset, described once."""

    sources: Source = Field(
        description="Where the scenes come from (kind: sample | catalog | files)."
    )
    bands: BandsConfig = Field(description="Image channels (asset keys).")
    selection: SelectionConfig | None = Field(
        None,
        description="Label-driven scene selection (LandCoverNet): one grid per label, its "
        "least cloudy scene(s) per period of time.periods stacked in time.",
    )
    grid: GridConfig = Field(default_factory=GridConfig, description="The grid of each scene.")
    time: TimeConfig | None = Field(
        None,
        description="The image's time axis: periods, how scenes of a period are combined, "
        "gap-filling. Chips become (T, C, H, W).",
    )
    masks: Mask | None = Field(
        None,
        description="Cloud mask from a quality band (kind: landsat_qa | scl | probability): "
        "masked pixels become nodata in the image (per time step) and, where no valid value "
        "is left, 255 in the mask.",
    )
    scale: ScaleConfig | None = Field(
        None, description="Scale/offset to physical values, clip; the store becomes float."
    )
    labels: LabelsConfig | None = Field(
        None, description="Labels -> the mask array (kind: vector | raster)."
    )
    chips: ChipsConfig = Field(description="Chip size, stride, edge policy, nodata filter.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    output: OutputConfig = Field(description="Output folder and format.")
    stats: StatsConfig = Field(
        default_factory=StatsConfig, description="Band statistics (per time step too)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Execution.")

    @model_validator(mode="after")
    def _cross_checks(self) -> BuildConfig:
        if self.masks is not None and self.masks.band in self.bands.names:
            raise ValueError(
                f"masks.band: {self.masks.band!r} is also in bands.names; a quality band is "
                "not an image channel"
            )
        if (
            self.split.method == "random"
            and self.chips.overlapping()
            and not self.split.allow_leakage
        ):
            raise ValueError(
                f"split.method: 'random' with overlapping chips (size {self.chips.size}, stride "
                f"{list(self.chips.step())}) puts the same pixels in several splits; use "
                "split.method 'blocks' or 'regions', or set split.allow_leakage: true to insist"
            )
        if self.selection is not None:
            if self.time is None or not self.time.make_periods():
                raise ValueError(
                    "selection: needs time.start, time.end and time.periods (each label is "
                    "filled with scenes period by period)"
                )
            src = self.sources
            for name in ("ids", "bbox", "datetime", "max_cloud", "max_items"):
                if getattr(src, name) is not None:
                    raise ValueError(
                        f"sources.{name}: {getattr(src, name)!r} is not used with selection (it "
                        "searches each label's footprint over time.start..time.end with its "
                        "own cloud thresholds); remove it"
                    )
            if self.grid.geometries is not None:
                raise ValueError(
                    "grid.geometries: with selection the grids are the labels; give one or "
                    "the other"
                )
        if self.stats.per_step and not self.stacked:
            raise ValueError(
                "stats.per_step: needs chips with a time axis (time, selection or "
                "grid.geometries); leave it out for single-date chips"
            )
        if self.grid.crs is not None and self.grid.resolution is None:
            raise ValueError(
                f"grid.crs: {self.grid.crs!r} needs grid.resolution (the pixel size in it)"
            )
        if self.time is not None and self.time.composite == "best" and self.masks is None:
            raise ValueError(
                "time.composite: 'best' picks the least cloudy scene per pixel and needs masks "
                "(a cloud mask records how much of each scene is masked); use 'first' or "
                "'median', or add masks"
            )
        labels = self.labels
        if labels is not None and labels.asset is not None:
            if self.grid.geometries is not None:
                raise ValueError(
                    "labels.asset: geometry grids have no item of their own; give labels.path"
                )
            if self.time is not None and self.selection is None:
                raise ValueError(
                    "labels.asset: items stacked in time share a grid but not one label "
                    "asset; give labels.path, or leave out time"
                )
        if self.scale is not None:
            for name in ("scale", "offset"):
                value = getattr(self.scale, name)
                if isinstance(value, dict):
                    unknown = sorted(set(value) - set(self.bands.names))
                    if unknown:
                        raise ValueError(
                            f"scale.{name}: bands {unknown} are not in bands.names "
                            f"{self.bands.names}"
                        )
        return self

    @property
    def stacked(self) -> bool:
        """Whether chips have a time axis, (T, C, H, W): with selection, geometries or
        a time section."""
        return (
            self.selection is not None or self.grid.geometries is not None or self.time is not None
        )

    def dataset_fields(self) -> dict[str, Any]:
        """The fields that decide the dataset's bytes: everything but ``engine`` and
        ``output.path`` (compared for resume, written into the manifest)."""
        data = self.model_dump(mode="json")
        data.pop("engine")
        data["output"].pop("path")
        if self.stats == StatsConfig():  # left out: older stores keep their fingerprint
            data.pop("stats")
        return data

    def fingerprint(self) -> str:
        """A stable hash of :meth:`dataset_fields`."""
        text = json.dumps(self.dataset_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_overrides(
        self,
        *,
        out: str | Path | None = None,
        workers: int | None = None,
        scheduler: str | None = None,
    ) -> BuildConfig:
        """A copy with the command line's overrides applied (validated again)."""
        data = self.model_dump(mode="json")
        if out is not None:
            # a URL stays a URL (Path("s3://b/ds") would be the local folder "s3:")
            data["output"]["path"] = str(out) if is_url(out) else str(local_path(out).resolve())
            if "chips_per_shard" not in self.output.model_fields_set:
                del data["output"]["chips_per_shard"]  # the default of the new place
        if workers is not None:
            data["engine"]["workers"] = workers
            data["engine"]["scheduler"] = None
        if scheduler is not None:
            data["engine"]["scheduler"] = scheduler
            data["engine"]["workers"] = None
        return validate_config(data)


def diff_fields(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two config dicts.

    >>> diff_fields({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
    ['a.c', 'd']
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff_fields(a, b, f"{name}.")
        elif a != b:
            out.append(name)
    return out


def validate_config(data: Mapping[str, Any]) -> BuildConfig:
    """``data`` (paths already resolved) as a :class:`BuildConfig`, or a
    :class:`~geochip.errors.ConfigError` naming every bad field."""
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            "the config is not valid:\n  "
            + "\n  ".join(error_lines(err, BuildConfig))
            + "\n(`geochip build --help-config` lists every field)"
        ) from None

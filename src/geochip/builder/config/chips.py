"""``chips`` and ``split``: chip size, stride and edges; the train/val/test split (blocks,
regions, random) and its buffer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Section, SizeValue, check_size, default_ratios, size_yx

__all__ = [
    "ChipsConfig",
    "RegionsConfig",
    "SplitConfig",
]


class ChipsConfig(Section):
    """How each grid is cut into chips."""

    size: SizeValue = Field(description="Chip size in pixels: an int or {y: int, x: int}.")
    stride: SizeValue | None = Field(
        None, description="Step between chips in pixels; None: the size (no overlap)."
    )
    overlap: SizeValue | None = Field(
        None, description="Overlap between chips in pixels (stride = size - overlap)."
    )
    edge: Literal["drop", "shift", "pad"] = Field(
        "drop",
        description="At the grid's edge: drop chips that do not fit, shift the last one "
        "inward, or pad past the edge with nodata (mask 255).",
    )
    max_nodata_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Chips with a larger share of nodata pixels (any band nodata, cloud or "
        "padding) are kept in the index with status 'nodata' and left out of training.",
    )

    @field_validator("size", "stride", "overlap")
    @classmethod
    def _sizes(cls, value: Any, info: Any) -> Any:
        if info.field_name == "overlap" and value == 0 and not isinstance(value, bool):
            return None  # no overlap
        return value if value is None else check_size(value, info.field_name)

    @model_validator(mode="after")
    def _exclusive(self) -> ChipsConfig:
        if self.stride is not None and self.overlap is not None:
            raise ValueError("give stride or overlap, not both")
        if self.overlap is not None:
            size, over = size_yx(self.size), size_yx(self.overlap)
            if over[0] >= size[0] or over[1] >= size[1]:
                raise ValueError(f"overlap {self.overlap} must be smaller than size {self.size}")
        return self

    def step(self) -> tuple[int, int]:
        """The (y, x) stride in pixels."""
        size = size_yx(self.size)
        if self.stride is not None:
            return size_yx(self.stride)
        if self.overlap is not None:
            over = size_yx(self.overlap)
            return size[0] - over[0], size[1] - over[1]
        return size

    def overlapping(self) -> bool:
        """Whether neighbouring chips share pixels."""
        size, step = size_yx(self.size), self.step()
        return step[0] < size[0] or step[1] < size[1]


class RegionsConfig(Section):
    """Regions (polygons) that decide splits: by split name, or grouped and dealt by ratios."""

    path: str = Field(
        description="Vector file of region polygons (relative paths: from the config file)."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file.")
    column: str = Field(
        "split",
        description="Column naming each polygon's region. Values train/val/test are used as "
        "they are; any other values are region ids dealt to splits by ratios and seed.",
    )


class SplitConfig(Section):
    """How chips are assigned to train / val / test, decided in the plan before any read."""

    method: Literal["blocks", "regions", "random", "none"] = Field(
        "blocks",
        description="blocks: square blocks dealt to splits; regions: by polygons; random: "
        "chip by chip (leaks with overlapping chips); none: every chip in 'train'.",
    )
    block_size: float = Field(
        8,
        gt=0,
        description="Side of a split block, in block_units.",
    )
    block_units: Literal["chips", "px", "m"] = Field(
        "chips",
        description="chips / px: blocks anchored at each grid's top-left corner; m: CRS "
        "units, blocks anchored at a common origin per CRS so that overlapping grids "
        "share blocks.",
    )
    ratios: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=default_ratios,
        description="Share of blocks (or regions, or chips) per split.",
    )
    seed: int = Field(0, description="Seed of the shuffle that deals blocks to splits.")
    buffer: float = Field(
        0.0,
        ge=0,
        description="Chips closer than this (CRS units, metres for UTM) to a chip of another "
        "split are dropped (the held-out split keeps its chip: test > val > train).",
    )
    regions: RegionsConfig | None = Field(None, description="Region polygons (method regions).")
    allow_leakage: bool = Field(
        False,
        description="Insist on a random split of overlapping chips (they leak between "
        "splits); refused otherwise.",
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("ratios must be non-negative with a positive sum")
        # canonical order (train, val, test): the deal follows it, whatever order was written
        return {s: value[s] for s in ("train", "val", "test") if s in value}

    @model_validator(mode="after")
    def _regions(self) -> SplitConfig:
        if self.method == "regions" and self.regions is None:
            raise ValueError("method 'regions' needs split.regions (path and column)")
        if self.method != "regions" and self.regions is not None:
            raise ValueError(
                f"split.regions is only used with method 'regions', not {self.method!r}"
            )
        if self.block_units in {"chips", "px"} and not float(self.block_size).is_integer():
            raise ValueError(f"block_size in {self.block_units} must be a whole number")
        return self

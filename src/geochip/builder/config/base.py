"""What every section of a build config shares: frozen models that refuse unknown fields, and
the ``{y, x}`` size fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

SizeValue = int | dict[str, int]


def default_ratios() -> dict[Literal["train", "val", "test"], float]:
    """The default split ratios: 70 % train, 15 % val, 15 % test."""
    return {"train": 0.7, "val": 0.15, "test": 0.15}


class Section(BaseModel):
    """A config section: frozen, and unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_size(value: Any, name: str) -> Any:
    """``value`` when it is a positive int or ``{y: int, x: int}``, else a ValueError naming
    ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int or {{y: int, x: int}}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{name} must be positive")
        return value
    if isinstance(value, dict):
        if set(value) != {"y", "x"}:
            raise ValueError(f"{name} must have exactly the keys y and x")
        if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in value.values()):
            raise ValueError(f"{name} values must be positive ints")
        return value
    raise ValueError(f"{name} must be a positive int or {{y: int, x: int}}")


def size_yx(value: SizeValue) -> tuple[int, int]:
    """(y, x) of a size given as an int or ``{y, x}``."""
    return (value, value) if isinstance(value, int) else (value["y"], value["x"])

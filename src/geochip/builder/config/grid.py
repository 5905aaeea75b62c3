"""``bands`` and ``grid``: the image channels, and the grid of each scene (native, another
resolution or CRS, or one grid per point or polygon).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from ...core.geometry import check_buffer
from ...errors import InputError
from .base import Section, SizeValue, check_size

__all__ = [
    "BandsConfig",
    "GeometriesConfig",
    "GridConfig",
    "Resampling",
]


class BandsConfig(Section):
    """Which assets become image channels (a plain list is accepted as ``names``)."""

    names: list[str] = Field(
        min_length=1,
        description="Channels in order: asset keys (an asset of N bands gives N channels "
        "<asset>.1..<asset>.N), <asset>.<n>, band names or common names (blue, SR_B4).",
    )
    nodata: float | None = Field(
        None,
        description="Nodata value of the image; None: the bands' own nodata (they must "
        "agree), else 0 for integers and NaN for floats.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"names": value} if isinstance(value, list) else value

    @field_validator("names")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({b for b in value if value.count(b) > 1})
        if dupes:
            raise ValueError(f"bands must be unique; repeated: {dupes}")
        return value


Resampling = Literal[
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max"
]


class GeometriesConfig(Section):
    """Grids from points or polygons (the SITS shape): one grid per geometry, a fixed-size
    patch centred on it or its buffered box, in ``grid.crs`` at ``grid.resolution``. Each
    grid's scenes are searched over its own footprint (in EPSG:4326)."""

    path: str = Field(
        description="Vector file of points or polygons (GeoJSON, GeoPackage, Shapefile, "
        "GeoParquet; relative paths: from the config file's folder)."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file.")
    id_column: str | None = Field(
        None,
        description="Column naming each geometry (the grid id, in chip ids); None: a column "
        "'id' if there is one, else g0, g1, ...",
    )
    mode: Literal["patch", "box"] = Field(
        "patch",
        description="patch: size pixels centred on the geometry's centroid "
        "(geochip.core.grid.point_geobox); box: the buffered geometry's bounding box with pixel "
        "edges on multiples of the resolution (geochip.core.grid.geometry_geobox).",
    )
    size: SizeValue | None = Field(
        None, description="Patch size in pixels, an int or {y: int, x: int} (mode patch)."
    )
    buffer: float = Field(0.0, ge=0, description="Buffer around each geometry (mode box).")
    buffer_unit: Literal["m", "deg"] = Field(
        "m", description="Unit of buffer: m (metres on the ground) or deg (EPSG:4326 degrees)."
    )
    snap: bool = Field(
        False,
        description="Patches: put pixel edges on multiples of the resolution (the centre is "
        "then within half a pixel of the point) instead of centring exactly.",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return value if value is None else check_size(value, "size")

    @model_validator(mode="after")
    def _mode(self) -> GeometriesConfig:
        if self.mode == "patch" and self.size is None:
            raise ValueError("mode 'patch' needs size (pixels)")
        if self.mode == "box" and self.size is not None:
            raise ValueError("size is for mode 'patch'; mode 'box' takes buffer instead")
        if self.mode == "patch" and self.buffer:
            raise ValueError("buffer is for mode 'box'; a patch has a fixed size")
        try:  # a buffer absurd for its unit (degrees written as metres, or the reverse)
            check_buffer(self.buffer, self.buffer_unit)
        except InputError as err:
            raise ValueError(f"{err} (buffer_unit: m|deg)") from None
        return self


class GridConfig(Section):
    """The grid chips are cut from. Without ``selection`` or ``geometries``: each item's
    native asset grid (or the same extent at another resolution / in another CRS); items
    that share a grid are stacked in time when the config has a ``time`` section. With
    ``selection``: one grid per label (see the README's rule). With ``geometries``: one
    grid per point or polygon."""

    reference_band: str | None = Field(
        None, description="Asset whose grid is used; None: the first of bands.names."
    )
    resolution: float | None = Field(
        None,
        gt=0,
        description="Pixel size in the grid's CRS units (metres for UTM); None: native.",
    )
    crs: str | None = Field(
        None,
        description="Target CRS (e.g. EPSG:3035); grids are then made in it at resolution, "
        "pixel edges on multiples of the resolution. None: the scenes' own CRS.",
    )
    resampling: Resampling = Field(
        "nearest",
        description="Resampling of continuous bands when the grid is not the scene's own; "
        "quality and class bands always use nearest.",
    )
    geometries: GeometriesConfig | None = Field(
        None, description="One grid per point or polygon of a vector file (needs crs, resolution)."
    )

    @field_validator("crs")
    @classmethod
    def _crs(cls, value: str | None) -> str | None:
        if value is None:
            return value

        try:
            CRS.from_user_input(value)
        except CRSError:
            raise ValueError("not a CRS pyproj knows (give e.g. EPSG:32633 or WKT)") from None
        return value

    @model_validator(mode="after")
    def _needs(self) -> GridConfig:
        if self.geometries is not None and (self.crs is None or self.resolution is None):
            raise ValueError("geometries need crs and resolution (the grids' CRS and pixel size)")
        return self

"""zen3geo's ``RioXarrayReader`` (``read_from_rioxarray``) on geochip's scene reader.

Each source (a path, an http(s) URL or a ``pystac.Item``) is opened from its headers at
``overview_level``; iterating yields each scene as a lazy ``xarray.DataArray`` (band, y, x)
with x/y coordinates, CRS and nodata, as ``rioxarray.open_rasterio`` gives. Pixels are read
only when a chip is cut, by geochip's reader (see :mod:`geochip.compat.slicing`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..core.env import GdalEnv
from ..errors import InputError
from ..read.open import open_scenes
from ..read.scene import Scene
from .pipes import IterDataPipe, functional_datapipe, sources_of

__all__ = [
    "RioXarrayReader",
]


@functional_datapipe("read_from_rioxarray")
class RioXarrayReader(IterDataPipe):
    """Scenes opened from their headers; iterating yields each as a lazy DataArray.

    zen3geo passed its keyword arguments to ``rioxarray.open_rasterio``; here
    ``overview_level`` is taken, with geochip's ``bands`` (names or 1-based indices),
    ``asset`` (for STAC items) and ``env`` (GDAL options). rioxarray's other options
    (``chunks``, ``masked``...) are refused by name: chips are read by geochip, in the
    source dtype, with nodata in ``attrs["_FillValue"]``.
    """

    def __init__(
        self,
        source_datapipe: Any,
        overview_level: int | None = None,
        *,
        bands: Sequence[str | int] | None = None,
        asset: str | Sequence[str] | None = None,
        env: GdalEnv | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise InputError(
                f"read_from_rioxarray does not take {', '.join(sorted(kwargs))}; geochip "
                "supports overview_level, bands, asset and env"
            )
        self.source_datapipe = source_datapipe
        self.overview_level = overview_level
        self.bands = bands
        self.asset = asset
        self.env = env
        self._scenes: list[Scene] | None = None

    @property
    def scenes(self) -> list[Scene]:
        """The opened scenes (headers are read on first use)."""
        if self._scenes is None:
            self._scenes = open_scenes(
                sources_of(self.source_datapipe),
                overview_level=self.overview_level,
                bands=self.bands,
                asset=self.asset,
                env=self.env,
            )
        return self._scenes

    def __len__(self) -> int:
        return len(self.source_datapipe)

    def __iter__(self) -> Iterator[Any]:
        for scene in self.scenes:
            yield scene.to_dataarray(self.env)

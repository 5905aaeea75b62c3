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

from ._version import __version__

# name -> module that defines it
_LAZY = {
    "BuildConfig": "geochip.builder.config.model",
    "ChipDataModule": "geochip.ml.lightning",
    "ChipDataset": "geochip.ml.torch",
    "ChipSource": "geochip.store.writer",
    "ChipStore": "geochip.store.reader",
    "ChipStream": "geochip.read.stream",
    "StreamDataset": "geochip.ml.stream",
    "TimeseriesConfig": "geochip.workflows.timeseries",
    "assign_splits": "geochip.plan.splits",
    "build": "geochip.builder.run",
    "check_store": "geochip.store.check",
    "collate_chips": "geochip.ml.torch",
    "composite": "geochip.read.cube",
    "find_leaks": "geochip.plan.splits",
    "gapfill": "geochip.read.cube",
    "geometry_geobox": "geochip.core.grid",
    "get_dataset": "geochip.registry.catalog",
    "label_geobox": "geochip.core.grid",
    "load_config": "geochip.builder.config.parse",
    "load_cube": "geochip.read.load",
    "load_inference_data": "geochip.registry.samples",
    "load_selection": "geochip.select.table",
    "load_stack": "geochip.read.load",
    "load_training_data": "geochip.registry.samples",
    "make_pair": "geochip.workflows.pairs",
    "mask_cube": "geochip.read.cube",
    "open_catalog": "geochip.sources.open",
    "open_cube": "geochip.store.cubes",
    "open_registry": "geochip.registry.catalog",
    "open_scene": "geochip.read.open",
    "open_scenes": "geochip.read.open",
    "open_store": "geochip.store.reader",
    "plan_chips": "geochip.plan.chips",
    "plan_scenes": "geochip.plan.scenes",
    "predict": "geochip.inference.run",
    "point_geobox": "geochip.core.grid",
    "rasterize_labels": "geochip.read.labels",
    "retile": "geochip.inference.retile",
    "run_timeseries": "geochip.workflows.timeseries",
    "sample_catalog": "geochip.sources.sample",
    "scale_cube": "geochip.read.cube",
    "select_scenes": "geochip.select.search",
    "show_versions": "geochip.core.versions",
    "write_cube": "geochip.store.cubes",
    "write_store": "geochip.store.writer",
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
    "predict",
    "rasterize_labels",
    "retile",
    "run_timeseries",
    "sample_catalog",
    "scale_cube",
    "select_scenes",
    "show_versions",
    "write_cube",
    "write_store",
]

if TYPE_CHECKING:
    from .builder.config.model import BuildConfig
    from .builder.config.parse import load_config
    from .builder.run import build
    from .core.grid import geometry_geobox, label_geobox, point_geobox
    from .core.versions import show_versions
    from .inference.retile import retile
    from .inference.run import predict
    from .ml.lightning import ChipDataModule
    from .ml.stream import StreamDataset
    from .ml.torch import ChipDataset, collate_chips
    from .plan.chips import plan_chips
    from .plan.scenes import plan_scenes
    from .plan.splits import assign_splits, find_leaks
    from .read.cube import composite, gapfill, mask_cube, scale_cube
    from .read.labels import rasterize_labels
    from .read.load import load_cube, load_stack
    from .read.open import open_scene, open_scenes
    from .read.stream import ChipStream
    from .registry.catalog import get_dataset, open_registry
    from .registry.samples import load_inference_data, load_training_data
    from .select.search import select_scenes
    from .select.table import load_selection
    from .sources.open import open_catalog
    from .sources.sample import sample_catalog
    from .store.check import check_store
    from .store.cubes import open_cube, write_cube
    from .store.reader import ChipStore, open_store
    from .store.writer import ChipSource, write_store
    from .workflows.pairs import make_pair
    from .workflows.timeseries import TimeseriesConfig, run_timeseries


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geochip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""geochip: Earth-observation rasters to deep-learning training data.

The top-level namespace is small and imports nothing heavy: names are loaded on first use.

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
    "assign_splits": "geochip.plan",
    "build": "geochip.build",
    "check_store": "geochip.check",
    "find_leaks": "geochip.plan",
    "load_config": "geochip.config",
    "load_cube": "geochip.read",
    "open_catalog": "geochip.sources.stac",
    "open_store": "geochip.store",
    "plan_chips": "geochip.plan",
    "rasterize_labels": "geochip.labels",
    "sample_catalog": "geochip.sources.sample",
    "show_versions": "geochip._versions",
    "write_store": "geochip.store",
}

__all__ = [
    "BuildConfig",
    "ChipDataModule",
    "ChipDataset",
    "ChipSource",
    "ChipStore",
    "__version__",
    "assign_splits",
    "build",
    "check_store",
    "find_leaks",
    "load_config",
    "load_cube",
    "open_catalog",
    "open_store",
    "plan_chips",
    "rasterize_labels",
    "sample_catalog",
    "show_versions",
    "write_store",
]

if TYPE_CHECKING:
    from ._versions import show_versions
    from .build import build
    from .check import check_store
    from .config import BuildConfig, load_config
    from .labels import rasterize_labels
    from .lightning import ChipDataModule
    from .plan import assign_splits, find_leaks, plan_chips
    from .read import load_cube
    from .sources.sample import sample_catalog
    from .sources.stac import open_catalog
    from .store import ChipSource, ChipStore, open_store, write_store
    from .torch import ChipDataset


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geochip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

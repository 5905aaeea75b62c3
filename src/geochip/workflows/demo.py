"""The demo: the whole pipeline on the embedded sample catalog (``geochip demo``).

The demo is a ``geochip build`` of :data:`DEMO` (the same dataset as
``examples/landsat-clouds-labels.yaml``), then a read through a DataLoader:

1. open the sample catalog and search it (bbox + datetime + cloud filter): the Landsat 8
   scene (the Sentinel-2 scene lies elsewhere);
2. build a 15 m grid over the scene (the resolution of Landsat's pan band); six reflectance
   bands are read onto it with odc-stac (nearest: every 30 m pixel becomes 2x2);
3. mask clouds with the QA band (cloud confidence high): image pixels become nodata (0),
   mask pixels become 255 (ignore);
4. rasterise the demo labels (land / water / vegetation) on every chip's grid;
5. plan 256x256 chips and split them into train/val/test by 512 px blocks;
6. write the store (``chips.zarr``, ``index.parquet``, ``manifest.json``);
7. read it back through a torch DataLoader with 2 workers (without torch, the extra, the
   store's own reader gives the same batches as numpy arrays), and save a PNG of sample chips
   and the report page (``report.html``: :mod:`geochip.store.report`).

Example:
    >>> import tempfile, pathlib
    >>> result = run_demo(pathlib.Path(tempfile.mkdtemp()) / "demo", progress=False)
    >>> sorted(p.name for p in result.out.iterdir())
    ['chips.png', 'chips.zarr', 'index.parquet', 'manifest.json', 'report.html', 'stats.json']
    >>> result.splits
    {'train': 8, 'val': 4, 'test': 4}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..builder.config.parse import parse_config
from ..builder.run import build
from ..core.progress import Stages
from ..core.storage import ObjectPath, join, store_path
from ..sources.items import eo_cloud_cover
from ..sources.open import open_catalog
from ..sources.sample import sample_catalog
from ..store.format import name_class_counts
from ..store.reader import open_store
from ..store.report import write_report
from ..store.viz import save_chip_grid

try:  # torch is an extra: without it the demo reads its batches with numpy
    from torch.utils.data import DataLoader

    from ..ml.torch import ChipDataset, collate_chips

    HAS_TORCH = True
except ImportError:
    HAS_TORCH = False

__all__ = [
    "DEMO",
    "DemoResult",
    "run_demo",
]

#: The demo's build config (the store's manifest records it).
DEMO: Mapping[str, Any] = {
    "sources": {
        "kind": "sample",
        "bbox": [-87.6, 30.6, -87.2, 30.9],
        "datetime": "2016-01-01/2016-12-31",
        "max_cloud": 20.0,
        "max_items": 1,
    },
    "bands": ["blue", "green", "red", "nir08", "swir16", "swir22"],
    "grid": {"reference_band": "red", "resolution": 15.0, "resampling": "nearest"},
    "masks": {"kind": "landsat_qa", "band": "qa", "layout": "landsat8_pre", "flags": ["cloud"]},
    "labels": {
        "path": "sample",
        "attribute": "class",
        "classes": {"water": 1, "vegetation": 2, "land": 3},
        "all_touched": False,
    },
    "chips": {"size": 256, "stride": 256, "edge": "drop"},
    "split": {
        "method": "blocks",
        "block_size": 512,
        "block_units": "px",
        "ratios": {"train": 0.5, "val": 0.25, "test": 0.25},
        "seed": 0,
    },
    "output": {"path": "demo-output"},
}


@dataclass
class DemoResult:
    """What the demo made and measured."""

    out: Path | ObjectPath
    item_id: str
    cloud_cover: float
    splits: dict[str, int]
    pixels_per_class: dict[str, dict[str, int]]
    batch_shapes: dict[str, list[tuple[int, ...]]]
    reader: str = "DataLoader"
    timings: dict[str, float] = field(default_factory=dict)
    masked_fraction: float = 0.0


def run_demo(
    out: str | Path = "demo-output",
    *,
    progress: bool = True,
    workers: int = 2,
    console: Any = None,
) -> DemoResult:
    """Run the demo into ``out`` (replacing an earlier demo there) and return its figures.
    ``out`` is a local folder or a URL (``s3://bucket/demo``): the store, its preview
    picture and its report page go there."""
    root = store_path(out)
    where = str(root) if isinstance(root, ObjectPath) else str(root.resolve())
    stages = Stages(enabled=progress, console=console)
    config = parse_config({**DEMO, "output": {"path": where}, "engine": {"threads": workers}})
    result = build(config, overwrite=True, progress=progress, console=console)
    stages.timings.update(result.timings)  # plan, verify, read + write chips, index
    store = open_store(root)
    item_id = store.manifest["items"][0]
    item = next(iter(open_catalog(sample_catalog()).search(ids=[item_id])))
    batch_shapes: dict[str, list[tuple[int, ...]]] = {}
    reader = "DataLoader (2 workers)" if HAS_TORCH else "numpy batches"
    with stages.stage(reader, total=len(store)) as advance:
        seen = 0
        for name in ("train", "val", "test"):
            for shape in _batch_shapes(store, root, name, batch_size=4):
                batch_shapes.setdefault(name, []).append(shape)
                seen += shape[0]
                advance(seen)
    with stages.stage("preview PNG"):
        save_chip_grid(store, join(str(root), "chips.png"))
    with stages.stage("report page"):
        write_report(store, join(str(root), "report.html"))
    classes = dict(config.labels.classes or {}) if config.labels else {}
    per_class: dict[str, dict[str, int]] = {}
    for name, rows in store.ok().groupby("split"):
        totals: dict[str, int] = {}
        for text in rows["class_counts"]:
            for label, value in name_class_counts(json.loads(text), classes).items():
                totals[label] = totals.get(label, 0) + value
        per_class[str(name)] = totals
    splits = result.counts["splits"]
    return DemoResult(
        out=root,
        item_id=item_id,
        cloud_cover=eo_cloud_cover(item) or 0.0,
        splits={s: int(splits.get(s, 0)) for s in ("train", "val", "test")},
        pixels_per_class=per_class,
        batch_shapes=batch_shapes,
        reader="DataLoader" if HAS_TORCH else "numpy",
        timings=dict(stages.timings),
        masked_fraction=float(store.index["nodata_fraction"].mean()),
    )


def _batch_shapes(
    store: Any, out: Path | ObjectPath, split: str, batch_size: int
) -> list[tuple[int, ...]]:
    """Shapes of the image batches of ``split``: through a torch DataLoader with 2 workers,
    or (torch not installed) stacked from the store's reader."""
    if HAS_TORCH:
        loader = DataLoader(
            ChipDataset(out, split=split),
            batch_size=batch_size,
            num_workers=2,
            collate_fn=collate_chips,
            shuffle=False,
        )
        return [tuple(batch["image"].shape) for batch in loader]
    ok = store.ok()
    rows = [int(i) for i in ok.loc[ok["split"] == split, "index"]]
    shapes: list[tuple[int, ...]] = []
    for start in range(0, len(rows), batch_size):
        images = [store.read(i)[0] for i in rows[start : start + batch_size]]
        shapes.append(tuple(np.stack(images).shape))
    return shapes

"""The demo: the whole pipeline on the embedded sample catalog (``geochip demo``).

1. open the sample catalog and search it (bbox + datetime + cloud filter), keep the least
   cloudy scene (the Landsat 8 one; the Sentinel-2 scene lies elsewhere);
2. build a 15 m grid over the scene (the resolution of Landsat's pan band) and load six
   reflectance bands onto it lazily with odc-stac (nearest: every 30 m pixel becomes 2x2);
3. read the QA band on the grid and mask clouds (cloud confidence high): image pixels
   become nodata (0), mask pixels become 255 (ignore);
4. rasterise the demo labels (land / water / vegetation) on the grid;
5. plan 256x256 chips and split them into train/val/test by 512 px blocks;
6. write the store (``chips.zarr``, ``index.parquet``, ``manifest.json``);
7. read it back through a torch DataLoader with 2 workers, and save a PNG of sample chips.

Example:
    >>> import tempfile, pathlib
    >>> result = run_demo(pathlib.Path(tempfile.mkdtemp()) / "demo", progress=False)
    >>> sorted(p.name for p in result.out.iterdir())
    ['chips.png', 'chips.zarr', 'index.parquet', 'manifest.json']
    >>> result.splits
    {'train': 8, 'val': 4, 'test': 4}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .progress import Stages

__all__ = ["DEMO", "DemoResult", "run_demo"]

#: The demo's parameters (they go into the store's manifest as its config).
DEMO: Mapping[str, Any] = {
    "catalog": "sample",
    "search": {
        "bbox": [-87.6, 30.6, -87.2, 30.9],
        "datetime": "2016-01-01/2016-12-31",
        "max_cloud": 20.0,
    },
    "bands": ["blue", "green", "red", "nir08", "swir16", "swir22"],
    "grid": {"reference_band": "red", "resolution": 15.0, "resampling": "nearest"},
    "cloud_mask": {"band": "qa", "layout": "landsat8_pre", "flags": ["cloud"]},
    "labels": {"source": "sample_labels", "attribute": "class", "all_touched": False},
    "chips": {"size": 256, "stride": 256, "edge": "drop"},
    "split": {
        "block_size": 512,
        "ratios": {"train": 0.5, "val": 0.25, "test": 0.25},
        "seed": 0,
    },
}


@dataclass
class DemoResult:
    """What the demo made and measured."""

    out: Path
    item_id: str
    cloud_cover: float
    splits: dict[str, int]
    pixels_per_class: dict[str, dict[str, int]]
    batch_shapes: dict[str, list[tuple[int, ...]]]
    timings: dict[str, float] = field(default_factory=dict)
    masked_fraction: float = 0.0


def run_demo(
    out: str | Path = "demo-output",
    *,
    progress: bool = True,
    workers: int = 2,
    console: Any = None,
) -> DemoResult:
    """Run the demo into ``out`` (replacing an earlier demo there) and return its figures."""
    import dask.array as da
    from torch.utils.data import DataLoader

    from .grid import asset_geobox, target_geobox
    from .labels import rasterize_labels
    from .masks import landsat_qa_mask
    from .plan import assign_splits, plan_chips
    from .read import load_cube
    from .select import cloud_cover, least_cloudy
    from .sources.sample import SAMPLE_CLASSES, sample_catalog, sample_labels
    from .sources.stac import open_catalog
    from .store import MASK_IGNORE, ChipSource, write_store
    from .torch import ChipDataset, collate_chips
    from .viz import save_chip_grid

    out = Path(out)
    stages = Stages(enabled=progress, console=console)
    cfg = DEMO

    with stages.stage("sample catalog"):
        catalog = open_catalog(sample_catalog())
    with stages.stage("search"):
        found = catalog.search(**cfg["search"])
        item = least_cloudy(list(found))
    with stages.stage("grid + lazy load"):
        geobox = target_geobox(
            asset_geobox(item, cfg["grid"]["reference_band"]), cfg["grid"]["resolution"]
        )
        size = cfg["chips"]["size"]
        cube = load_cube(
            [item],
            [*cfg["bands"], cfg["cloud_mask"]["band"]],
            geobox,
            resampling=cfg["grid"]["resampling"],
            chunks=size,
        )
        image = cube[cfg["bands"]].to_dataarray("band").isel(time=0).data
        nodata = np.asarray(0, dtype=image.dtype)
    with stages.stage("cloud mask"):
        qa = cube[cfg["cloud_mask"]["band"]].isel(time=0).values
        cloud = np.asarray(
            landsat_qa_mask(qa, cfg["cloud_mask"]["layout"], cfg["cloud_mask"]["flags"])
        )
        cloud_lazy = da.from_array(cloud, chunks=size)  # type: ignore[no-untyped-call]
        image = da.where(cloud_lazy[None], nodata, image)
    with stages.stage("rasterise labels"):
        shapes = sample_labels()
        shapes = shapes[shapes["scene"] == item.id]
        labels, _ = rasterize_labels(
            shapes,
            geobox,
            SAMPLE_CLASSES,
            attribute=cfg["labels"]["attribute"],
            all_touched=cfg["labels"]["all_touched"],
        )
        labels[cloud] = MASK_IGNORE
    with stages.stage("plan + split"):
        plan = plan_chips(
            geobox,
            size,
            stride=cfg["chips"]["stride"],
            edge=cfg["chips"]["edge"],
            grid_id=item.id,
        )
        split = assign_splits(
            plan,
            block_size=cfg["split"]["block_size"],
            ratios=cfg["split"]["ratios"],
            seed=cfg["split"]["seed"],
        )
    source = ChipSource(
        image=image,
        bands=list(cfg["bands"]),
        nodata=nodata.item(),
        mask=labels,
        item_ids=[item.id],
        hrefs=[str(item.assets[b].href) for b in cfg["bands"]],
        datetimes=[item.datetime.isoformat() if item.datetime else ""],
    )
    with stages.stage("read + write chips", total=len(split.plan)) as advance:
        write_store(
            out,
            split.plan,
            {item.id: source},
            classes=SAMPLE_CLASSES,
            config=dict(cfg),
            workers=workers,
            overwrite=True,
            on_chip=advance,
        )
    batch_shapes: dict[str, list[tuple[int, ...]]] = {}
    with stages.stage("DataLoader (2 workers)", total=len(split.plan)) as advance:
        seen = 0
        for name in ("train", "val", "test"):
            dataset = ChipDataset(out, split=name)
            loader = DataLoader(
                dataset, batch_size=4, num_workers=2, collate_fn=collate_chips, shuffle=False
            )
            for batch in loader:
                batch_shapes.setdefault(name, []).append(tuple(batch["image"].shape))
                seen += batch["image"].shape[0]
                advance(seen)
    with stages.stage("preview PNG"):
        save_chip_grid(out, out / "chips.png")

    from .store import open_store

    store = open_store(out)
    per_class: dict[str, dict[str, int]] = {}
    names = {str(v): k for k, v in SAMPLE_CLASSES.items()} | {str(MASK_IGNORE): "ignore"}
    names["0"] = "background"
    import json

    for name, rows in store.index.groupby("split"):
        totals: dict[str, int] = {}
        for text in rows["class_counts"]:
            for key, value in json.loads(text).items():
                label = names.get(key, key)
                totals[label] = totals.get(label, 0) + int(value)
        per_class[str(name)] = totals
    return DemoResult(
        out=out,
        item_id=item.id,
        cloud_cover=cloud_cover(item) or 0.0,
        splits=split.summary()["chips"],
        pixels_per_class=per_class,
        batch_shapes=batch_shapes,
        timings=dict(stages.timings),
        masked_fraction=float(store.index["nodata_fraction"].mean()),
    )

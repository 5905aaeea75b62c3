"""Benchmark: build a 10 m datacube from ~20 COG items in two UTM zones.

A local static catalog of Sentinel-2-like COG items (``geochip.testing.cubes``): 5 dates x 4
quadrant tiles, the western tiles in UTM 33N on the target grid's lattice, the eastern ones
in UTM 34N (so they are reprojected), each with four 10 m bands (blue, green, red, nir), a
20 m band (swir16) and a 20 m SCL band. The cube: 6 bands x 5 dates x 5120 x 5120 px at 10 m
in UTM 33N (bilinear for reflectance, nearest for SCL, one time step per solar day).

Measured in one run, each in a fresh process (peak RSS = that process's VmHWM):

* ``floor``: plain rasterio reads of the same windows on 2 threads; a ``WarpedVRT`` onto the
  target grid for every source that is not already on it (the 20 m bands, the UTM 34N
  tiles), first-valid fusing, results discarded;
* ``odc-stac``: ``odc.stac.load(...)`` with its defaults (no chunks, no pool);
* ``geochip``: :func:`geochip.read.load.load_stack` +
  :func:`geochip.store.cubes.write_cube`, the cube written to Zarr block by block on 2
  threads;
* ``geochip-load``: the same block loop with nothing written (the pure load).

Ratios are ``floor seconds / seconds`` (1.0 = as fast as the floor). Run it alone on the
machine::

    .venv/bin/python benchmarks/cubes.py           # full scale
    .venv/bin/python benchmarks/cubes.py --quick   # 1024 x 1024
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BANDS = ["blue", "green", "red", "nir", "swir16", "scl"]
RESAMPLING = {b: ("nearest" if b == "scl" else "bilinear") for b in BANDS}
DATES = ["2024-05-03", "2024-05-13", "2024-05-23", "2024-06-02", "2024-06-12"]
CRS = "EPSG:32633"
X0, Y0 = 690_000.0, 5_000_000.0  # the cube's top-left corner (about 17.4 E, 45.1 N)
THREADS = 2


CHUNK = int(os.environ.get("GEOCHIP_BENCH_CHUNK", "0"))  # set by --chunk for the children


def _scale(quick: bool) -> dict[str, int]:
    if quick:
        return {"cube": 1024, "tile": 512 + 64, "chunk": CHUNK or 512}
    return {"cube": 5120, "tile": 2560 + 128, "chunk": CHUNK or 2048}


def _grid(size: int) -> Any:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    return GeoBox((size, size), Affine(10, 0, X0, 0, -10, Y0), CRS)


def build_catalog(root: Path, quick: bool) -> Path:
    """The catalog of 5 dates x 4 tiles (cached under ``root``)."""
    from odc.geo.geom import point

    from geochip.testing import make_catalog
    from geochip.testing.cubes import make_s2_scene

    scale = _scale(quick)
    marker = root / f"catalog-{'quick' if quick else 'full'}.json"
    if marker.exists():
        return Path(json.loads(marker.read_text())["catalog"])
    half, tile = scale["cube"] // 2, scale["tile"]
    items = []
    for d, date in enumerate(DATES):
        for qy in range(2):
            for qx in range(2):
                # the quadrant's top-left corner on the target grid, minus a margin
                x = X0 + qx * half * 10 - 640
                y = Y0 - qy * half * 10 + 640
                crs = CRS
                if qx == 1:  # eastern tiles: UTM 34N, on their own 20 m lattice
                    crs = "EPSG:32634"
                    x, y = point(x, y, CRS).to_crs(crs).coords[0]
                    x, y = round(x / 20) * 20 - 1280, round(y / 20) * 20 + 1280
                items.append(
                    make_s2_scene(
                        root / ("data-quick" if quick else "data-full"),
                        date,
                        crs=crs,
                        origin=(x, y),
                        size=tile,
                        seed=d * 4 + qy * 2 + qx,
                        tile=512,
                        item_id=f"s2-{date}-q{qy}{qx}",
                        orbit=22,
                    )
                )
    catalog = make_catalog(root / ("quick" if quick else "full"), items, collection="s2-bench")
    marker.write_text(json.dumps({"catalog": str(catalog)}))
    return catalog


def _items(catalog: Path) -> list[Any]:
    from geochip.sources.open import open_catalog

    return list(open_catalog(catalog).items())


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- the measured loaders (each runs in its own process) ---------------------------------


def run_floor(items: list[Any], grid: Any, chunk: int) -> int:
    """rasterio + WarpedVRT, window by window, 2 threads, first-valid fusing, discarded."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    groups: dict[str, list[Any]] = {}
    for item in sorted(items, key=lambda i: (i.datetime, i.id)):
        groups.setdefault(item.datetime.date().isoformat(), []).append(item)
    local = threading.local()

    def source(href: str, band: str) -> Any:
        cache = local.__dict__.setdefault("open", {})
        if href not in cache:
            ds = rasterio.open(href)
            col, row = ~grid.affine * (ds.transform.c, ds.transform.f)
            on_grid = (
                ds.crs == grid.crs
                and tuple(ds.transform)[:2] + tuple(ds.transform)[3:5] == (10, 0, 0, -10)
                and abs(col - round(col)) < 1e-6
                and abs(row - round(row)) < 1e-6
            )
            if on_grid:  # same CRS, same pixel size, whole-pixel offset: a plain window read
                cache[href] = ("direct", ds, round(row), round(col))
            else:
                vrt = WarpedVRT(
                    ds,
                    crs=grid.crs.to_wkt(),
                    transform=grid.affine,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling[RESAMPLING[band]],
                    nodata=0,
                )
                cache[href] = ("vrt", vrt, 0, 0)
        return cache[href]

    windows = [
        (r, c, min(chunk, grid.height - r), min(chunk, grid.width - c))
        for r in range(0, grid.height, chunk)
        for c in range(0, grid.width, chunk)
    ]
    tasks = [(g, b, w) for g in groups for b in BANDS for w in windows]

    def task(job: tuple[str, str, tuple[int, int, int, int]]) -> int:
        date, band, (r, c, h, w) = job
        out = None
        for item in groups[date]:
            href = item.assets[band].get_absolute_href()
            kind, ds, r0, c0 = source(href, band)
            if kind == "direct":
                win = Window(c - c0, r - r0, w, h)
                data = ds.read(1, window=win, boundless=True, fill_value=0)
            else:
                data = ds.read(1, window=Window(c, r, w, h))
            if out is None:
                out = data
            else:
                empty = out == 0
                out[empty] = data[empty]
        return int(out.sum(dtype=np.uint64)) if out is not None else 0

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(task, tasks))


def run_odc(items: list[Any], grid: Any, chunk: int) -> int:
    """odc.stac.load with its defaults: eager, no pool."""
    import odc.stac

    ds = odc.stac.load(items, bands=BANDS, geobox=grid, resampling=RESAMPLING, groupby="solar_day")
    return int(sum(int(ds[b].values.sum(dtype=np.uint64)) for b in BANDS))


def run_geochip(items: list[Any], grid: Any, chunk: int, out: Path | None) -> int:
    """geochip: load_stack, written block by block (or, without ``out``, computed only)."""
    from geochip.core.engine import run_tasks, synchronous_dask
    from geochip.read.load import load_stack
    from geochip.store.cubes import cube_dataset, write_cube

    cube = load_stack(items, BANDS, grid, resampling=RESAMPLING, chunks=chunk, groupby="solar_day")
    if out is not None:
        write_cube(cube, out, workers=THREADS)
        return 0
    ds = cube_dataset(cube)
    blocks = [
        (slice(r, r + chunk), slice(c, c + chunk))
        for r in range(0, grid.height, chunk)
        for c in range(0, grid.width, chunk)
    ]

    def task(block: tuple[slice, slice]) -> int:
        with synchronous_dask():
            part = ds[BANDS].isel(y=block[0], x=block[1]).compute()
        return int(sum(int(part[b].values.sum(dtype=np.uint64)) for b in BANDS))

    return sum(r for _, r in run_tasks(task, blocks, workers=THREADS))


def child(name: str, catalog: Path, quick: bool, out_dir: Path) -> None:
    import dask.array  # noqa: F401  (imports outside the timed part, for every loader alike)
    import odc.stac  # noqa: F401
    import rasterio.vrt  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    scale = _scale(quick)
    items = _items(catalog)
    grid = _grid(scale["cube"])
    start = time.perf_counter()
    if name == "floor":
        checksum = run_floor(items, grid, scale["chunk"])
    elif name == "odc-stac":
        checksum = run_odc(items, grid, scale["chunk"])
    elif name == "geochip":
        target = out_dir / "cube.zarr"
        checksum = run_geochip(items, grid, scale["chunk"], target)
        shutil.rmtree(target, ignore_errors=True)
    else:
        checksum = run_geochip(items, grid, scale["chunk"], None)
    seconds = time.perf_counter() - start
    print(json.dumps({"name": name, "seconds": seconds, "rss": _peak_rss(), "checksum": checksum}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 x 1024 cube, small tiles")
    parser.add_argument("--data", type=Path, default=Path("bench-output/cubes"))
    parser.add_argument("--only", nargs="*", help="run only these: floor odc-stac geochip ...")
    parser.add_argument("--chunk", type=int, help="window/chunk size in px (default 2048)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.chunk:
        os.environ["GEOCHIP_BENCH_CHUNK"] = str(args.chunk)  # read by the children
    args.data.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, Path(json.loads(
            (args.data / f"catalog-{'quick' if args.quick else 'full'}.json").read_text()
        )["catalog"]), args.quick, args.data)  # fmt: skip
        return
    t0 = time.perf_counter()
    catalog = build_catalog(args.data, args.quick)
    scale = _scale(args.quick)
    scale["chunk"] = args.chunk or scale["chunk"]
    n = scale["cube"]
    full = len(DATES) * len(BANDS) * n * n * 2
    print(
        f"catalog: {len(_items(catalog))} items, 2 UTM zones (ready in "
        f"{time.perf_counter() - t0:.0f} s); cube {len(DATES)} x {len(BANDS)} x {n} x {n} "
        f"uint16 = {full / 2**30:.2f} GiB; chunk {scale['chunk']} px; {THREADS} threads; "
        f"{os.cpu_count()} cores"
    )
    results: dict[str, dict[str, Any]] = {}
    names = args.only or ["floor", "odc-stac", "geochip", "geochip-load"]
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--data", str(args.data)]
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-3000:]}")
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    floor = results.get("floor", {}).get("seconds")
    print(f"{'loader':<14}{'seconds':>9}{'x floor':>9}{'peak RSS':>11}  checksum")
    for name, r in results.items():
        ratio = f"{floor / r['seconds']:.2f}" if floor else "-"
        print(
            f"{name:<14}{r['seconds']:>9.1f}{ratio:>9}{r['rss'] / 2**30:>9.2f} GiB  {r['checksum']}"
        )


if __name__ == "__main__":
    main()

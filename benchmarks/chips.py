"""Benchmark: chips straight from a COG, against plain rasterio windowed reads (the floor).

Writes a seeded ~10980 x 10980, 4-band uint16, deflate, 512-tiled COG with realistic
texture once (cached), then measures in the same run, for stride 512 and stride 256:

- floor: plain rasterio windowed reads of the same chips in one thread, with GDAL's default
  block cache and with a small one (64 MB); the faster of the two is the floor;
- ceiling: every tile decoded once on 2 threads (whole-file decode), in chips/s worth of
  tiles (at stride 256 a decoded tile serves ~4 chips, so the ceiling there is ~4x);
- geochip: ChipStream batches (read-ahead on 2 threads), with read-ahead off, numpy chips,
  the zen3geo names (DataArray chips, and batches collated to tensors), and a DataLoader
  with 2 workers;
- xbatcher over rioxarray (lazy open_rasterio + BatchGenerator), and torchgeo's
  RasterDataset + GridGeoSampler when torchgeo is installed (never part of `make test`).

Every method runs in its own process (peak RSS is per process) and stops after
``--max-seconds`` (its rate is then over the chips it read, and says so). Prints chips/s,
MB/s, the ratio to the floor and peak RSS. Run it alone on the machine:

    .venv/bin/python benchmarks/chips.py           # full scale
    .venv/bin/python benchmarks/chips.py --quick   # 2048 x 2048
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHIP = 512


def cog_path(size: int, cache: Path) -> Path:
    return cache / f"bench-chips-{size}x{size}-4b-uint16-deflate-512.tif"


def write_cog(size: int, cache: Path) -> Path:
    path = cog_path(size, cache)
    if path.exists():
        return path
    import numpy as np
    from odc.geo.geobox import GeoBox

    from geochip.testing import make_cog, texture

    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    grid = GeoBox.from_bbox(
        (300_000, 5_000_000, 300_000 + size * 10, 5_000_000 + size * 10),
        "EPSG:32633",
        resolution=10,
    )
    bands = []
    for b in range(4):  # land-cover-like texture, different per band, plus sensor noise
        base = texture((size, size), seed=100 + b, scale=4.0)
        bands.append((base * 4000 + 300 + b * 500).astype("uint16"))
    data = np.stack(bands)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tif")
    make_cog(tmp, grid, data=data, tile=512, overviews=(2, 4, 8), compress="deflate")
    os.replace(tmp, path)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s"
    )
    return path


def windows(size: int, stride: int) -> list[tuple[int, int]]:
    starts = list(range(0, size - CHIP + 1, stride))
    return [(r, c) for r in starts for c in starts]


# --- methods (each runs in a child process) -------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith(field))
    return kb / 1024


class Clock:
    """Starts when the method's setup (imports, opening, planning) is done; notes the
    process's RSS then (what the imports and the plan take, before any pixel)."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.start = 0.0
        self.deadline = float("inf")
        self.setup_rss_mb = 0.0

    def go(self) -> float:
        self.setup_rss_mb = _status_mb("VmRSS")
        self.start = time.perf_counter()
        self.deadline = self.start + self.max_seconds
        return self.deadline


def m_floor(path: str, stride: int, clock: Clock, cache_mb: int | None) -> int:
    import rasterio
    from rasterio.windows import Window

    from geochip.core.gdal import _gdal

    with rasterio.open(path) as ds:
        if cache_mb is not None:
            _gdal().GDALSetCacheMax64(cache_mb << 20)
        n = 0
        deadline = clock.go()
        for r, c in windows(ds.height, stride):
            ds.read(window=Window(c, r, CHIP, CHIP))
            n += 1
            if time.perf_counter() > deadline:
                break
    return n


def m_ceiling(path: str, stride: int, clock: Clock) -> int:
    """Tiles decoded once on 2 threads; returns chips worth of tiles for this stride."""
    import threading

    import rasterio
    from rasterio.windows import Window

    from geochip.core.gdal import _gdal

    _gdal().GDALSetCacheMax64(64 << 20)
    with rasterio.open(path) as ds:
        size = ds.height
    tiles = [(r, c) for r in range(0, size, 512) for c in range(0, size, 512)]
    counts = [0, 0]

    def work(k: int) -> None:
        with rasterio.open(path) as ds:
            for r, c in tiles[k::2]:
                ds.read(window=Window(c, r, min(512, size - c), min(512, size - r)))
                counts[k] += 1
                if time.perf_counter() > deadline:
                    return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    deadline = clock.go()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decoded = sum(counts)
    chips = len(windows(size, stride))
    return round(chips * decoded / len(tiles))


def _plan(path: str, stride: int):  # type: ignore[no-untyped-def]
    from geochip.plan.scenes import plan_scenes
    from geochip.read.open import open_scene

    scene = open_scene(path)
    return scene, plan_scenes([scene], CHIP, stride=stride)


def m_geochip(path: str, stride: int, clock: Clock, threads: int, mode: str) -> int:
    from geochip.read.stream import ChipStream

    scene, plan = _plan(path, stride)
    stream = ChipStream(plan, [scene], threads=threads, read_ahead=threads > 0)
    n = 0
    deadline = clock.go()
    if mode == "batches":
        for batch in stream.batch(16):
            n += len(batch)
            if time.perf_counter() > deadline:
                break
    else:
        for _ in stream:
            n += 1
            if time.perf_counter() > deadline:
                break
    return n


def m_zen3geo(path: str, stride: int, clock: Clock, mode: str) -> int:
    from geochip.compat.zen3geo import IterableWrapper

    slicer = (
        IterableWrapper([path])
        .read_from_rioxarray()
        .slice_with_xbatcher(
            input_dims={"y": CHIP, "x": CHIP},
            input_overlap={"y": CHIP - stride, "x": CHIP - stride},
        )
    )
    len(slicer)  # opens the header and plans the chips
    # one-off imports belong to setup, as every method's do: xarray loads dask.array on the
    # first DataArray it makes (~0.3 s here, 15% of a whole-scene run at stride 256)
    import dask.array  # noqa: F401
    import xarray  # noqa: F401

    n = 0
    deadline = clock.go()
    if mode == "chips":
        for chip in slicer:
            assert chip.shape[1:] == (CHIP, CHIP)
            n += 1
            if time.perf_counter() > deadline:
                break
    else:
        collate_fn = xr_collate_fn if mode == "tutorial" else None
        for tensor in slicer.batch(16).collate(collate_fn=collate_fn):
            n += tensor.shape[0]
            if time.perf_counter() > deadline:
                break
    return n


def xr_collate_fn(samples):  # type: ignore[no-untyped-def]
    """zen3geo's tutorial collate function, verbatim: int16 copies of every chip, stacked."""
    import torch

    tensors = [torch.as_tensor(data=sample.data.astype(dtype="int16")) for sample in samples]
    return torch.stack(tensors=tensors)


def m_dataloader(path: str, stride: int, clock: Clock) -> int:
    from torch.utils.data import DataLoader

    from geochip.ml.stream import StreamDataset
    from geochip.read.stream import ChipStream

    scene, plan = _plan(path, stride)
    loader = DataLoader(
        StreamDataset(ChipStream(plan, [scene]), 16), batch_size=None, num_workers=2
    )
    n = 0
    deadline = clock.go()
    for batch in loader:
        n += batch["image"].shape[0]
        if time.perf_counter() > deadline:
            break
    return n


def m_xbatcher(path: str, stride: int, clock: Clock) -> int:
    import rioxarray
    import xbatcher

    da = rioxarray.open_rasterio(path)
    gen = xbatcher.BatchGenerator(
        da,
        input_dims={"y": CHIP, "x": CHIP},
        input_overlap={"y": CHIP - stride, "x": CHIP - stride},
    )
    n = 0
    deadline = clock.go()
    for chip in gen:
        chip.values  # noqa: B018 - load the pixels
        n += 1
        if time.perf_counter() > deadline:
            break
    return n


def m_torchgeo(path: str, stride: int, clock: Clock) -> int:
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler

    class Scene(RasterDataset):  # type: ignore[misc]
        filename_glob = Path(path).name
        is_image = True

    dataset = Scene(paths=str(Path(path).parent))
    sampler = GridGeoSampler(dataset, size=CHIP, stride=stride)
    n = 0
    deadline = clock.go()
    for query in sampler:
        dataset[query]
        n += 1
        if time.perf_counter() > deadline:
            break
    return n


METHODS = {
    "floor (default cache)": ("floor", {"cache_mb": None}),
    "floor (64 MB cache)": ("floor", {"cache_mb": 64}),
    "ceiling (2-thread decode)": ("ceiling", {}),
    "geochip batches": ("geochip", {"threads": 2, "mode": "batches"}),
    "geochip read-ahead off": ("geochip", {"threads": 0, "mode": "batches"}),
    "geochip chips (numpy)": ("geochip", {"threads": 2, "mode": "chips"}),
    "zen3geo names (DataArray chips)": ("zen3geo", {"mode": "chips"}),
    "zen3geo tutorial collate (int16 stack)": ("zen3geo", {"mode": "tutorial"}),
    "zen3geo collate() default (one buffer)": ("zen3geo", {"mode": "collate"}),
    "geochip DataLoader 2 workers": ("dataloader", {}),
    "xbatcher over rioxarray": ("xbatcher", {}),
    "torchgeo RasterDataset+GridGeoSampler": ("torchgeo", {}),
}


def child(name: str, path: str, stride: int, max_seconds: float) -> None:
    kind, kwargs = METHODS[name]
    fn = globals()[f"m_{kind}"]
    clock = Clock(max_seconds)
    n = fn(path, stride, clock, **kwargs)
    seconds = time.perf_counter() - clock.start
    # VmHWM is this process's own peak (ru_maxrss would carry the parent's across exec);
    # DataLoader workers are children of this process
    workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "chips": n,
                "seconds": seconds,
                "rss_mb": _status_mb("VmHWM"),
                "setup_rss_mb": clock.setup_rss_mb,
                "workers_rss_mb": workers_kb / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2048 x 2048 COG, short runs")
    parser.add_argument("--size", type=int, default=None, help="COG size in pixels (square)")
    parser.add_argument("--strides", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="method names to run")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per method (interleaved; median shown)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_cog(
            args.write,
            Path(os.environ.get("GEOCHIP_CACHE_DIR", Path.home() / ".cache" / "geochip")),
        )
        return
    if args.child:
        child(args.child, args.path, args.strides[0], args.max_seconds)
        return
    size = args.size or (2048 if args.quick else 10980)
    max_seconds = args.max_seconds or (20 if args.quick else 90)
    cache = Path(os.environ.get("GEOCHIP_CACHE_DIR", Path.home() / ".cache" / "geochip"))
    path = cog_path(size, cache)
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--write", str(size)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "CPL_", "VSI_"))}
    try:
        import torchgeo  # noqa: F401
    except ImportError:
        skip_torchgeo = True
    else:
        skip_torchgeo = False
    print(
        f"COG {path.name}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; "
        f"{args.repeat} run(s) per method, interleaved, median shown; the file is read "
        "into the page cache before every run"
    )
    mb_per_chip = 4 * CHIP * CHIP * 2 / 1e6
    names = [n for n in METHODS if not args.only or n in args.only]
    for stride in args.strides:
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        failed: dict[str, str] = {}
        for _ in range(args.repeat):
            for name in names:
                if name.startswith("torchgeo") and skip_torchgeo:
                    failed[name] = "(not installed)"
                    continue
                warm_page_cache(path)
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        name,
                        "--path",
                        str(path),
                        "--strides",
                        str(stride),
                        "--max-seconds",
                        str(max_seconds),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"  {name}: failed\n{out.stderr[-2000:]}")
                    failed[name] = "(failed)"
                    continue
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        rates = {
            n: statistics.median(r["chips"] / r["seconds"] for r in rs)
            for n, rs in runs.items()
            if rs and n not in failed
        }
        floors = [rate for n, rate in rates.items() if n.startswith("floor")]
        floor = max(floors) if floors else float("nan")
        total = len(windows(size, stride))
        print(
            f"\nstride {stride}: {total} chips of {CHIP}x{CHIP}x4 uint16 "
            f"({mb_per_chip:.1f} MB each); floor = {floor:.0f} chips/s"
        )
        header = ("method", "chips", "chips/s", "MB/s", "x floor", "peak RSS", "setup")
        print(
            f"  {header[0]:<40} {header[1]:>6} {header[2]:>8} {header[3]:>7} "
            f"{header[4]:>8} {header[5]:>9} {header[6]:>7}"
        )
        for name in names:
            if name not in rates:
                print(f"  {name:<40} {failed.get(name, '(failed)')}")
                continue
            rs = runs[name]
            rate = rates[name]
            chips = min(int(r["chips"]) for r in rs)
            peak = max(r["rss_mb"] for r in rs)
            setup = max(r["setup_rss_mb"] for r in rs)
            workers_mb = max(r["workers_rss_mb"] for r in rs)
            spread = ""
            if len(rs) > 1:
                each = sorted(r["chips"] / r["seconds"] for r in rs)
                spread = f" [{each[0]:.0f}-{each[-1]:.0f}]"
            partial = "" if chips >= total or name.startswith("ceiling") else " (partial)"
            workers = f" (workers {workers_mb:.0f} MB)" if workers_mb else ""
            print(
                f"  {name:<40} {chips:>6} {rate:>8.0f} {rate * mb_per_chip:>7.0f} "
                f"{rate / floor:>7.2f}x {peak:>6.0f} MB {setup:>4.0f} MB{partial}{workers}{spread}"
            )
        native = rates.get("geochip chips (numpy)")
        zen = rates.get("zen3geo names (DataArray chips)")
        if native and zen:
            print(f"  zen3geo DataArray chips / geochip numpy chips: {zen / native:.2f}")
        print(
            "  peak RSS: the process's VmHWM; setup: its RSS after imports and planning, "
            "before any pixel (peak - setup = what reading adds)"
        )


def warm_page_cache(path: Path) -> None:
    """Read the file once, so every method starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


if __name__ == "__main__":
    main()

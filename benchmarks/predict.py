"""Benchmark: geochip.predict over a 10980 x 10980, 4-band COG and a 2 x 2 mosaic of them.

A tiny conv segmentation model (3 conv layers, 4 classes, seeded) on the CPU. Measured in
the same run, each in its own process (peak RSS is per process, VmHWM):

- **model alone**: the same model on batches of the same windows already in memory
  (float32, normalised), as many batches as predict gave the model: the floor;
- **geochip**: ``geochip.predict`` end to end (read on the streaming path, model, blend,
  strips, COG with overviews, STAC item) over the scene and over a 2 x 2 mosaic of it (a
  VRT of four copies: 4x the area); throughput as a ratio to the model alone (target
  >= 0.85x), peak RSS (target < 1.5 GB, within 10% between 1x and 4x);
- **common way** (TerraTorch/geoai style): the whole raster read into memory, every window
  run, outputs summed with a count array (average blending), argmax, one GeoTIFF.

The scene is the chips benchmark's COG (``benchmarks/chips.py`` writes it once, cached).
Run it alone on the machine:

    .venv/bin/python benchmarks/predict.py           # 10980 x 10980 (and 21960 x 21960)
    .venv/bin/python benchmarks/predict.py --quick   # 2048 x 2048 (and 4096 x 4096)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from chips import write_cog

CHIP = 512
OVERLAP = 64
BATCH = 8
CLASSES = 4
MEAN, STD = 2300.0, 1500.0


def make_model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, CLASSES, 1),
    ).eval()


def mosaic_vrt(path: Path, out: Path) -> Path:
    """A VRT of 2 x 2 copies of ``path`` side by side (4x the area)."""
    import rasterio

    with rasterio.open(path) as ds:
        h, w, t = ds.height, ds.width, ds.transform
        crs = ds.crs.to_wkt()
    bands = []
    for b in range(1, 5):
        sources = "".join(
            f"<SimpleSource><SourceFilename>{path}</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{dx * w}" yOff="{dy * h}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            for dy in (0, 1)
            for dx in (0, 1)
        )
        bands.append(f'<VRTRasterBand dataType="UInt16" band="{b}">{sources}</VRTRasterBand>')
    geo = f"{t.c}, {t.a}, 0, {t.f}, 0, {t.e}"
    out.write_text(
        f'<VRTDataset rasterXSize="{2 * w}" rasterYSize="{2 * h}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{geo}</GeoTransform><BlockXSize>512</BlockXSize>"
        f"<BlockYSize>512</BlockYSize>{''.join(bands)}</VRTDataset>"
    )
    return out


def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    return kb / 1024


# --- methods (each in a child process) ------------------------------------------------------


def m_predict(src: str, out: str) -> dict[str, Any]:
    import geochip

    model = make_model()
    start = time.perf_counter()
    result = geochip.predict(model, src, out, chip=CHIP, overlap=OVERLAP, batch_size=BATCH,
                             normalize={"mean": [MEAN], "std": [STD]})  # fmt: skip
    return {"seconds": time.perf_counter() - start, "windows": result.model_windows,
            "batches": result.model_calls, "model_seconds": result.model_seconds}  # fmt: skip


def m_model(src: str, batches: int) -> dict[str, Any]:
    """The model alone on ``batches`` batches of real windows held in memory (8 distinct
    batches of the scene, cycled)."""
    import numpy as np
    import rasterio
    import torch
    from rasterio.windows import Window

    from geochip.inference.windows import plan_windows

    model = make_model()
    held = []
    with rasterio.open(src) as ds:
        plan = plan_windows((ds.height, ds.width), CHIP, overlap=OVERLAP)
        spots = [plan.window(r, c) for r, c in plan.order()]
        for i in range(min(8, batches)):
            group = [spots[(i * BATCH + k) % len(spots)] for k in range(BATCH)]
            rows = [ds.read(window=Window(w.col, w.row, CHIP, CHIP)) for w in group]
            x = (np.stack(rows).astype(np.float32) - MEAN) / STD
            held.append(torch.from_numpy(x))
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(batches):
            y = torch.softmax(model(held[b % len(held)]), dim=1)
            y.numpy()
    return {"seconds": time.perf_counter() - start, "batches": batches}


def m_common(src: str, out: str) -> dict[str, Any]:
    """Whole raster in memory, average blending (sum / count), argmax, one GeoTIFF."""
    import numpy as np
    import rasterio
    import torch

    from geochip.inference.windows import axis_positions

    model = make_model()
    start = time.perf_counter()
    with rasterio.open(src) as ds:
        image = ds.read()
        profile = ds.profile
    _, h, w = image.shape
    total = np.zeros((CLASSES, h, w), dtype=np.float32)
    count = np.zeros((h, w), dtype=np.float32)
    spots = [
        (r, c) for r in axis_positions(h, CHIP, OVERLAP) for c in axis_positions(w, CHIP, OVERLAP)
    ]
    with torch.inference_mode():
        for i in range(0, len(spots), BATCH):
            group = spots[i : i + BATCH]
            x = np.stack([image[:, r : r + CHIP, c : c + CHIP] for r, c in group])
            y = torch.softmax(model(torch.from_numpy((x.astype(np.float32) - MEAN) / STD)), 1)
            for (r, c), p in zip(group, y.numpy(), strict=True):
                total[:, r : r + CHIP, c : c + CHIP] += p
                count[r : r + CHIP, c : c + CHIP] += 1
    classes = np.argmax(total / count, axis=0).astype("uint8")
    profile.update(count=1, dtype="uint8", nodata=None, driver="GTiff", tiled=True,
                   compress="deflate", blockxsize=512, blockysize=512,
                   BIGTIFF="IF_SAFER")  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes[None])
    return {"seconds": time.perf_counter() - start, "windows": len(spots)}


def child(method: str, args: list[str]) -> None:
    fn = globals()[f"m_{method}"]
    result = fn(*[int(a) if a.isdigit() else a for a in args])
    result["rss_mb"] = _hwm_mb()
    print(json.dumps(result))


def run_child(method: str, *args: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 x 2048 instead of 10980")
    parser.add_argument("--size", type=int, help="scene size in pixels (square)")
    parser.add_argument("--no-common", action="store_true", help="skip the whole-raster peer")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "geochip")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        child(ns.child[0], ns.child[1:])
        return
    size = ns.size or (2048 if ns.quick else 10980)
    scene = write_cog(size, ns.cache)
    rows = []
    with tempfile.TemporaryDirectory(dir=ns.cache) as tmp:
        mosaic = mosaic_vrt(scene, Path(tmp) / "mosaic.vrt")
        for label, src in ((f"{size}^2 (1x)", scene), (f"{2 * size}^2 mosaic (4x)", mosaic)):
            ours = run_child("predict", src, Path(tmp) / f"pred-{len(rows)}.tif")
            floor = run_child("model", scene, ours["batches"])
            common = None if ns.no_common else run_child("common", src, Path(tmp) / "c.tif")
            rows.append((label, ours, floor, common))
            px = (size * (2 if "4x" in label else 1)) ** 2
            print(f"{label}: geochip {ours['seconds']:.1f} s ({px / ours['seconds'] / 1e6:.2f} "
                  f"Mpx/s) = {floor['seconds'] / ours['seconds']:.2f}x the model alone "
                  f"({floor['seconds']:.1f} s; in predict {ours['model_seconds']:.1f} s); "
                  f"peak RSS {ours['rss_mb']:.0f} MB"
                  + ("" if common is None else
                     f"; common way {common['seconds']:.1f} s, {common['rss_mb']:.0f} MB"),
                  flush=True)  # fmt: skip
    (l1, o1, _, _), (l4, o4, _, _) = rows
    print(f"peak RSS 4x / 1x: {o4['rss_mb'] / o1['rss_mb']:.3f} (target <= 1.10); "
          f"1x {o1['rss_mb']:.0f} MB, 4x {o4['rss_mb']:.0f} MB (target < 1536)")  # fmt: skip
    del l1, l4


if __name__ == "__main__":
    main()

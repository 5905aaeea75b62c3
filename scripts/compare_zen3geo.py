"""Run the same pipelines through the real zen3geo 0.6.2 (torchdata 0.9) and through
geochip.compat.zen3geo, and compare the outputs chip by chip.

Not part of ``make test``: it needs a second environment with zen3geo, which this script
creates (``--venv``, default /tmp/zen-venv) with pip when it is missing::

    PYTHONPATH=src .venv/bin/python scripts/compare_zen3geo.py [--venv /tmp/zen-venv]

The inputs (Sentinel-1-like COGs, the sample Sentinel-2 item and labels, in-memory arrays
written to NetCDF, a loopback STAC API) are made here with geochip; each pipeline function
below runs unchanged on both sides (``IW`` is torchdata's IterableWrapper with zen3geo's
DataPipes registered, or geochip's). Each output is reduced to plain numpy data (values,
dims, x/y coordinates, CRS) and compared with ``np.array_equal``. Exit status 0 when every
pipeline is equal or differs only where docs/zen3geo.md says it does.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

ZEN_PACKAGES = ["torch==2.13.0", "torchdata==0.9.0", "zen3geo[raster,spatial,stac,vector]==0.6.2"]


# --- reducing outputs to plain data (runs on both sides) ---------------------------------


def _crs(obj: Any) -> Any:
    import rioxarray  # noqa: F401 - the .rio accessor, on both sides

    try:
        crs = obj.rio.crs
    except Exception:
        return None
    return None if crs is None else crs.to_wkt()


def record(obj: Any) -> Any:
    """Plain data for one output: numpy arrays, lists, dicts, strings."""
    import numpy as np

    kind = type(obj).__name__
    if kind == "StreamWrapper":  # torchdata's
        obj = obj.file_obj
        kind = type(obj).__name__
    if kind == "DataArray":
        coords = {
            str(k): np.asarray(v.values)
            for k, v in obj.coords.items()
            if k in ("x", "y", "lon", "lat") or (k in obj.dims and k not in ("sample",))
        }
        return {
            "kind": "DataArray",
            "values": np.asarray(obj.values),
            "dims": list(obj.dims),
            "coords": coords,
            "crs": _crs(obj),
        }
    if kind == "Dataset":
        return {
            "kind": "Dataset",
            "vars": {str(k): record(v) for k, v in obj.data_vars.items()},
            "coords": {str(k): np.asarray(v.values) for k, v in obj.coords.items()},
        }
    if kind == "Tensor":
        return {"kind": "Tensor", "values": obj.numpy()}
    if kind in ("GeoDataFrame", "GeoSeries"):
        return {
            "kind": kind,
            "wkb": [g.wkb for g in obj.geometry],
            "crs": obj.crs.to_wkt(),
            "index": list(obj.index),
        }
    if kind == "Canvas":
        crs = getattr(obj, "crs", None)
        return {
            "kind": "Canvas",
            "size": (obj.plot_width, obj.plot_height),
            "x_range": tuple(map(float, obj.x_range)),
            "y_range": tuple(map(float, obj.y_range)),
            "crs": None if crs is None else str(getattr(crs, "to_wkt", lambda: crs)()),
        }
    if kind == "Item":
        return {"kind": "Item", "dict": obj.to_dict()}
    if kind == "ItemSearch":
        return {"kind": "ItemSearch", "ids": sorted(i.id for i in obj.items())}
    if isinstance(obj, (list, tuple)):
        return [record(o) for o in obj]
    return obj


# --- the pipelines (the same code on both sides) -----------------------------------------


def load_array(path: str) -> Any:
    """An xarray object saved by :func:`save_array` (npz: no netCDF library needed)."""
    import numpy as np
    import xarray as xr

    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    coords = {k[6:]: (str(data[f"cdims_{k[6:]}"]), data[k]) for k in data if k.startswith("coord_")}
    if "var_dims" in data:
        return xr.Dataset(
            {str(data["var_name"]): (list(data["var_dims"]), data["values"])}, coords=coords
        )
    return xr.DataArray(
        data["values"],
        dims=list(data["dims"]),
        coords=coords,
        name=str(data["name"]) if "name" in data else None,
    )


def save_array(path: Any, obj: Any) -> None:
    import numpy as np

    out: dict[str, Any] = {}
    for k, v in obj.coords.items():
        out[f"coord_{k}"], out[f"cdims_{k}"] = v.values, np.array(v.dims[0])
    if hasattr(obj, "data_vars"):
        ((name, var),) = obj.data_vars.items()
        out.update(values=var.values, var_dims=np.array(var.dims), var_name=np.array(name))
    else:
        out.update(values=obj.values, dims=np.array(obj.dims))
        if obj.name is not None:
            out["name"] = np.array(obj.name)
    np.savez(path, **out)


def p_tutorial(IW: Any, inp: dict[str, Any]) -> Any:
    dp = IW(iterable=inp["s1"]).read_from_rioxarray(overview_level=3)
    return dp.slice_with_xbatcher(
        input_dims={"y": 512, "x": 512}, input_overlap={"y": 256, "x": 256}
    )


def p_tutorial_batches(IW: Any, inp: dict[str, Any]) -> Any:
    import torch

    def xr_collate_fn(samples: Any) -> Any:
        return torch.stack([torch.as_tensor(s.data.astype("int16")) for s in samples])

    return p_tutorial(IW, inp).batch(batch_size=10).collate(collate_fn=xr_collate_fn)


def p_dataarray(IW: Any, inp: dict[str, Any]) -> Any:
    da = load_array(inp["dataarray"])
    return IW([da]).slice_with_xbatcher(input_dims={"y": 64, "x": 64}, input_overlap={"x": 16})


def p_dataarray_lazy_x_first(IW: Any, inp: dict[str, Any]) -> Any:
    da = load_array(inp["dataarray"]).chunk({"y": 50})
    return IW([da]).slice_with_xbatcher(input_dims={"x": 48, "y": 40})


def p_dataset(IW: Any, inp: dict[str, Any]) -> Any:
    ds = load_array(inp["dataset"])
    return IW([ds]).slice_with_xbatcher(input_dims={"y": 16, "x": 16})


def p_cube_sample(IW: Any, inp: dict[str, Any]) -> Any:
    da = load_array(inp["cube"])
    return IW([da]).slice_with_xbatcher(
        input_dims={"y": 20, "x": 20}, input_overlap={"y": 10, "x": 5}
    )


def p_verbs(IW: Any, inp: dict[str, Any]) -> Any:
    dp = IW(range(20))
    out = dp.map(lambda x: x * 3).filter(lambda x: x % 2 == 0).enumerate().batch(3)
    return [
        list(out),
        list(out.unbatch()),
        list(dp.header(5).zip(IW("abcdef"))),
        list(dp.header(4).concat(IW([7, 8]))),
        list(dp.batch(6, drop_last=True)),
        sorted(dp.shuffle(buffer_size=5)),
        len(dp.batch(6)),
        list(dp.header(6).batch(4).collate()),
    ]


def p_verbs_more(IW: Any, inp: dict[str, Any]) -> Any:
    pairs = IW([(1, 2), (3, 4), (5, 6)])
    dp = IW(range(7))
    return [
        list(pairs.map(lambda x: x * 10, input_col=1)),
        list(pairs.map(lambda a, b: a + b, input_col=[0, 1], output_col=-1)),
        list(pairs.filter(lambda a: a > 1, input_col=0)),
        list(IW(["ab", "cd"]).flatmap(list)),
        list(IW("ab").zip_longest(dp.header(3))),
        list(dp.header(2).cycle(3)),
        len(dp.header(2).cycle(3)),
        list(dp.set_length(3)),
        len(dp.set_length(3)),
        [sorted(b) for b in dp.batch(3).in_batch_shuffle()],
        list(dp.batch(2).batch(2).unbatch(unbatch_level=2)),
        len(dp.header(4)),
        len(dp.zip(dp.header(2))),
    ]


def p_pystac_item(IW: Any, inp: dict[str, Any]) -> Any:
    return IW([inp["item"]]).read_to_pystac_item()


def p_search(IW: Any, inp: dict[str, Any]) -> Any:
    dp = IW([inp["query"]]).search_for_pystac_item(catalog_url=inp["api"])
    return [list(dp), sorted(i.id for i in dp.list_pystac_items_by_search())]


def p_stack(IW: Any, inp: dict[str, Any]) -> Any:
    return (
        IW([inp["item"]])
        .read_to_pystac_item()
        .stack_stac_items(
            assets=["blue", "green", "red"],
            epsg=32618,
            resolution=10,
            bounds=(440005, 4165003, 443007, 4167001),
        )
    )


def p_mosaic(IW: Any, inp: dict[str, Any]) -> Any:
    cube = load_array(inp["mosaic"])
    return [
        list(IW([cube]).mosaic_dataarray(dim="time")),
        list(IW([cube]).mosaic_dataarray(dim="time", reverse=True)),
    ]


def p_pyogrio(IW: Any, inp: dict[str, Any]) -> Any:
    return IW([inp["labels"]]).read_from_pyogrio()


def p_clip(IW: Any, inp: dict[str, Any]) -> Any:
    import rioxarray

    raster = rioxarray.open_rasterio(inp["s1"][0], overview_level=3)
    parts = [raster.isel(x=slice(0, 800)), raster.isel(x=slice(800, None))]
    vector = IW([inp["s1_footprints"]]).read_from_pyogrio()
    return [(v, r.rio.bounds()) for v, r in vector.clip_vector_with_rectangle(IW(parts))]


def _canvas_pipes(IW: Any, inp: dict[str, Any], which: str) -> Any:
    import rioxarray  # noqa: F401 - .rio

    grid = load_array(inp["grid"]).rio.write_crs("EPSG:4326")
    canvases = IW([grid]).canvas_from_xarray()
    vector = IW([inp[which]]).read_from_pyogrio()
    return [list(canvases), list(canvases.rasterize_with_datashader(vector_datapipe=vector))]


def p_rasterize_polygons(IW: Any, inp: dict[str, Any]) -> Any:
    return _canvas_pipes(IW, inp, "labels")


def p_rasterize_points(IW: Any, inp: dict[str, Any]) -> Any:
    return _canvas_pipes(IW, inp, "points")


def p_rasterize_lines(IW: Any, inp: dict[str, Any]) -> Any:
    return _canvas_pipes(IW, inp, "lines")


PIPELINES = {name[2:]: fn for name, fn in list(globals().items()) if name.startswith("p_")}


def run_side(side: str, inputs: Path, out: Path) -> None:
    warnings.filterwarnings("ignore")
    if side == "zen3geo":
        import zen3geo.datapipes  # noqa: F401 - registers zen3geo's functional names
        from torchdata.datapipes.iter import IterableWrapper
    else:
        from geochip.compat.zen3geo import IterableWrapper
    inp = json.loads(inputs.read_text())
    results: dict[str, Any] = {}
    for name, fn in PIPELINES.items():
        try:
            results[name] = {"ok": record(list(fn(IterableWrapper, inp)))}
        except Exception as err:
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    out.write_bytes(pickle.dumps(results))


# --- inputs, environment and comparison (geochip side) -----------------------------------


def make_inputs(folder: Path) -> dict[str, Any]:
    import geopandas as gpd
    import numpy as np
    import pystac
    import shapely
    import xarray as xr

    from geochip.sources.sample import sample_catalog, sample_labels
    from geochip.testing.scenes import make_s1_like

    s1 = [str(p) for p in make_s1_like(folder / "s1")]
    rng = np.random.default_rng(1)
    da = xr.DataArray(
        rng.integers(0, 5000, (2, 200, 300)).astype("int16"),
        dims=["band", "y", "x"],
        coords={
            "band": [1, 2],
            "x": 500_005.0 + 10 * np.arange(300),
            "y": 4_000_995.0 - 10 * np.arange(200),
        },
        name="reflectance",
    )
    save_array(folder / "dataarray.npz", da)
    save_array(
        folder / "dataset.npz",
        xr.Dataset(
            {"temperature": (["x", "y"], 15 * np.ones((32, 32)))},
            coords={
                "lon": (["x"], np.linspace(0, 32, 32)),
                "lat": (["y"], np.linspace(64, 32, 32)),
            },
        ),
    )
    save_array(
        folder / "cube.npz",
        xr.DataArray(
            rng.random((2, 3, 60, 70)),
            dims=["time", "band", "y", "x"],
            coords={"time": [1, 2], "x": np.arange(70.0), "y": -np.arange(60.0)},
            name="cube",
        ),
    )
    mosaic = rng.random((3, 2, 20, 20))
    mosaic[rng.random(mosaic.shape) < 0.4] = np.nan
    save_array(folder / "mosaic.npz", xr.DataArray(mosaic, dims=["time", "band", "y", "x"]))
    labels = sample_labels()
    labels.to_file(folder / "labels.gpkg")
    gpd.GeoDataFrame(geometry=labels.geometry.centroid, crs=labels.crs).to_file(
        folder / "points.gpkg"
    )
    gpd.GeoDataFrame(geometry=labels.geometry.boundary, crs=labels.crs).to_file(
        folder / "lines.gpkg"
    )
    west, south, east, north = labels.total_bounds
    grid = xr.DataArray(
        np.zeros((120, 200), "uint8"),
        dims=["y", "x"],
        name="grid",
        coords={"x": np.linspace(west, east, 200), "y": np.linspace(north, south, 120)},
    )
    save_array(folder / "grid.npz", grid)
    import rasterio

    boxes = []
    for path in s1:
        with rasterio.open(path, overview_level=3) as ds:
            b = ds.bounds
            w, h = (b.right - b.left), (b.top - b.bottom)
            boxes += [
                shapely.box(
                    b.left + w * i / 5,
                    b.bottom + h * j / 4,
                    b.left + w * (i + 1.5) / 5,
                    b.bottom + h * (j + 1) / 4,
                )
                for i in range(4)
                for j in range(3)
            ]
            crs = ds.crs
    gpd.GeoDataFrame(geometry=boxes, crs=crs).to_file(folder / "s1_footprints.gpkg")
    catalog = pystac.Catalog.from_file(str(sample_catalog()))
    item = next(i for i in catalog.get_items(recursive=True) if "sentinel2" in i.id)
    item = item.clone()
    item.make_asset_hrefs_absolute()  # stackstac reads hrefs as they are
    item.set_self_href(str(folder / "item.json"))
    item.save_object(include_self_link=True)
    return {
        "s1": s1,
        "dataarray": str(folder / "dataarray.npz"),
        "dataset": str(folder / "dataset.npz"),
        "cube": str(folder / "cube.npz"),
        "mosaic": str(folder / "mosaic.npz"),
        "labels": str(folder / "labels.gpkg"),
        "points": str(folder / "points.gpkg"),
        "lines": str(folder / "lines.gpkg"),
        "grid": str(folder / "grid.npz"),
        "s1_footprints": str(folder / "s1_footprints.gpkg"),
        "item": str(folder / "item.json"),
        "query": {"bbox": list(item.bbox), "collections": ["sample"]},
    }


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import zen3geo, torchdata; print(zen3geo.__version__)"]
    if python.exists() and subprocess.run(probe, check=False, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *ZEN_PACKAGES], check=True)
    return python


def compare(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two records differ (empty when equal)."""
    import numpy as np

    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return [f"{path}: shape {a.shape} != {b.shape}"]
        same = np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")
        if same:
            return []
        note = ""
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            diff = np.abs(a.astype("float64") - b.astype("float64"))
            note = f", largest difference {np.nanmax(diff):.3g}"
            if a.dtype.kind in "iu" and b.dtype.kind in "iu":
                note += f" (zen3geo > geochip at {int((a > b).sum())}, < at {int((a < b).sum())})"
        return [f"{path}: values differ ({int((a != b).sum())} of {a.size}{note})"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only on the {'zen3geo' if k in a else 'geochip'} side")
            else:
                out += compare(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in compare(x, y, f"{path}[{i}]")
        ]
    if path.endswith(".crs") and a and b:
        from pyproj import CRS

        return [] if CRS(a) == CRS(b) else [f"{path}: CRS differ"]
    return [] if a == b else [f"{path}: {str(a)[:80]!r} != {str(b)[:80]!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/zen-venv"))
    parser.add_argument("--side", choices=["zen3geo", "geochip"])
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    if args.side:
        if args.only:
            for name in list(PIPELINES):
                if name not in args.only:
                    del PIPELINES[name]
        run_side(args.side, args.inputs, args.out)
        return 0
    from geochip.testing.stac_api import StacApiServer

    python = ensure_venv(args.venv)
    folder = Path(tempfile.mkdtemp(prefix="compare-zen3geo-"))
    inputs = make_inputs(folder)
    import pystac

    from geochip.sources.sample import sample_catalog

    catalog = pystac.Catalog.from_file(str(sample_catalog()))
    items = [i.clone() for i in catalog.get_items(recursive=True)]
    for item in items:
        item.collection_id = "sample"
    with StacApiServer(items) as api:
        inputs["api"] = api.url
        (folder / "inputs.json").write_text(json.dumps(inputs))
        only = ["--only", *args.only] if args.only else []
        runs = {}
        for side, exe in (("zen3geo", str(python)), ("geochip", sys.executable)):
            out = folder / f"{side}.pkl"
            subprocess.run(
                [
                    exe,
                    __file__,
                    "--side",
                    side,
                    "--inputs",
                    str(folder / "inputs.json"),
                    "--out",
                    str(out),
                    *only,
                ],
                check=True,
            )
            runs[side] = pickle.loads(out.read_bytes())
    equal = 0
    for name in runs["zen3geo"]:
        zen, ours = runs["zen3geo"][name], runs["geochip"][name]
        if "error" in zen or "error" in ours:
            print(f"{name}: zen3geo {zen.get('error', 'ok')} | geochip {ours.get('error', 'ok')}")
            continue
        diffs = compare(zen["ok"], ours["ok"])
        n = len(zen["ok"]) if isinstance(zen["ok"], list) else 1
        if not diffs:
            equal += 1
            print(f"{name}: EQUAL ({n} outputs)")
        else:
            print(f"{name}: DIFFERENT ({n} outputs; {len(diffs)} differences), first:")
            for d in diffs[:4]:
                print(f"    {d}")
    print(f"{equal} of {len(runs['zen3geo'])} pipelines equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NetCDF cube writes from several threads at once (run_timeseries on threads does that).

netCDF-C/HDF5 are not thread-safe and netCDF4-python releases the GIL: without one lock
per process around every write, writing different files from 4 threads crashes the
interpreter (segmentation fault) within a few dozen files. The writes run in a child
process so that a crash is a failed test, not a dead test worker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import assign_crs

from geochip.store.cubes import open_cube, write_cube

out = Path(sys.argv[1])
gbox = GeoBox.from_bbox((0, 0, 320, 320), "EPSG:32633", resolution=10)


def cube(i):
    data = np.random.default_rng(i).integers(1, 1000, (3, 2, 32, 32)).astype("uint16")
    da = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.arange(3).astype("datetime64[D]"),
            "band": ["a", "b"],
            "y": gbox.coords["y"].values,
            "x": gbox.coords["x"].values,
            "nodata": ("band", [0.0, 0.0]),
            "scale": ("band", [np.nan, np.nan]),
            "offset": ("band", [np.nan, np.nan]),
        },
    )
    return assign_crs(da, "EPSG:32633"), data


def write(i):
    da, data = cube(i)
    path = write_cube(da if i % 2 else da.chunk({"y": 16, "x": 16}), out / f"c{i}.nc")
    back = open_cube(path)
    assert np.array_equal(back["a"].values, data[:, 0]), i


with ThreadPoolExecutor(4) as pool:
    list(pool.map(write, range(120)))
print("ok")
"""


def test_netcdf_cubes_written_from_four_threads_at_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    assert len(list(tmp_path.glob("c*.nc"))) == 120

"""Gap-filling, composites and scaling against numpy references on seeded series."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geochip.errors import InputError
from geochip.read.cube import composite, count_missing, gapfill, scale_cube

# uneven revisits, as real acquisitions are
DATES = pd.to_datetime(
    [
        "2024-01-02", "2024-01-07", "2024-01-12", "2024-01-27", "2024-02-01", "2024-02-06",
        "2024-02-21", "2024-03-02", "2024-03-07", "2024-03-22", "2024-04-01", "2024-04-06",
    ]
)  # fmt: skip


def _series(seed: int = 0, dtype: str = "float32", missing: float = 0.35) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    values = rng.uniform(100, 5000, size=(len(DATES), 2, 5, 6)).round()
    gaps = rng.random(values.shape) < missing
    nodata = np.nan if dtype.startswith("float") else 0.0
    values[gaps] = 0 if not np.isnan(nodata) else np.nan
    return xr.DataArray(
        values.astype(dtype),
        dims=("time", "band", "y", "x"),
        coords={"time": DATES, "band": ["red", "nir"], "nodata": ("band", [nodata, nodata])},
    )


def _days() -> np.ndarray:
    return (DATES - DATES[0]).days.to_numpy().astype(float)


def _reference(series: np.ndarray, method: str, max_steps: int | None) -> np.ndarray:
    """Pixel by pixel, with np.interp and explicit loops."""
    t = _days()
    out = series.astype("float64").copy()
    flat = out.reshape(len(t), -1)
    for k in range(flat.shape[1]):
        v = flat[:, k].copy()
        valid = np.flatnonzero(~np.isnan(v))
        for i in np.flatnonzero(np.isnan(v)):
            before, after = valid[valid < i], valid[valid > i]
            if not len(before) or not len(after):
                continue
            p, n = before[-1], after[0]
            if max_steps is not None and n - p - 1 > max_steps:
                continue
            if method == "linear":
                flat[i, k] = np.interp(t[i], [t[p], t[n]], [v[p], v[n]])
            else:
                flat[i, k] = v[p] if t[i] - t[p] <= t[n] - t[i] else v[n]
    return out


@pytest.mark.parametrize("max_gap", [None, 1, 2])
@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_gapfill_matches_numpy_reference(method: str, max_gap: int | None) -> None:
    cube = _series(seed=7)
    got = gapfill(cube, method, max_gap=max_gap)
    want = _reference(cube.values, method, max_gap)
    np.testing.assert_allclose(got.values, want, rtol=1e-6)
    assert int(got.gap_unfilled.sum()) == int(np.isnan(want).sum())
    assert int(got.gap_filled.sum()) == int(np.isnan(cube.values).sum() - np.isnan(want).sum())


def test_gapfill_on_dask_equals_numpy() -> None:
    cube = _series(seed=3)
    lazy = cube.chunk({"time": 1, "band": 1, "y": 3, "x": 3})
    got = gapfill(lazy, "linear", max_gap=2)
    assert got.chunks is not None  # still lazy
    xr.testing.assert_allclose(got, gapfill(cube, "linear", max_gap=2))


def test_max_gap_as_duration_bounds_the_time_between_neighbours() -> None:
    cube = _series(seed=5)
    got = gapfill(cube, "linear", max_gap="20D").values
    t = _days()
    series = cube.values.reshape(len(t), -1)
    flat = got.reshape(len(t), -1)
    for k in range(series.shape[1]):
        valid = np.flatnonzero(~np.isnan(series[:, k]))
        for i in np.flatnonzero(np.isnan(series[:, k])):
            before, after = valid[valid < i], valid[valid > i]
            fillable = len(before) and len(after) and t[after[0]] - t[before[-1]] <= 20
            assert np.isnan(flat[i, k]) != bool(fillable)


def test_integer_cube_nearest_keeps_dtype_and_nodata_never_zero_fills() -> None:
    cube = _series(seed=11, dtype="uint16").assign_coords(nodata=("band", [65535.0, 65535.0]))
    cube = cube.where(cube != 0, 65535).astype("uint16")
    got = gapfill(cube, "nearest", max_gap=1)
    assert got.dtype == np.uint16
    assert not (got.values == 0).any()  # unfilled values stay nodata, never 0
    left = got.values == 65535
    assert int(got.gap_unfilled.sum()) == int(left.sum()) > 0
    ref = _reference(np.where(cube.values == 65535, np.nan, cube.values), "nearest", 1)
    np.testing.assert_array_equal(np.where(np.isnan(ref), 65535, ref), got.values)


def test_linear_fill_of_an_integer_cube_is_float32_with_nan() -> None:
    cube = _series(seed=2, dtype="uint16")
    got = gapfill(cube, "linear")
    assert got.dtype == np.float32
    assert np.isnan(got.nodata.values).all()
    assert int(count_missing(got).sum()) == int(np.isnan(got.values).sum())


def test_unknown_method_and_bad_max_gap_are_refused() -> None:
    with pytest.raises(InputError, match="linear, nearest"):
        gapfill(_series(), "spline")
    with pytest.raises(InputError, match="neither a number of time steps nor a duration"):
        gapfill(_series(), "linear", max_gap="soon")


def test_monthly_median_matches_nanmedian() -> None:
    cube = _series(seed=4)
    got = composite(cube, "M", "median")
    months = DATES.to_period("M")
    assert got.sizes["time"] == 4 and got.n_obs.values.tolist() == [4, 3, 3, 2]
    starts = pd.DatetimeIndex(got.time.values)
    assert list(starts.strftime("%Y-%m-%d")) == [
        "2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"
    ]  # fmt: skip
    for i, month in enumerate(months.unique()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            want = np.nanmedian(cube.values[months == month], axis=0)
        np.testing.assert_allclose(got.values[i], want)
    assert np.isnan(got.values).any()  # some pixels had no valid observation in a month
    assert int(got.gap_unfilled.sum()) == int(np.isnan(got.values).sum())


def test_best_pixel_takes_the_least_cloudy_valid_observation() -> None:
    cube = _series(seed=8, dtype="uint16")
    score = np.random.default_rng(1).random(len(DATES))
    cube = cube.assign_coords(masked_fraction=("time", score))
    lazy = composite(cube.chunk({"time": 1, "band": 1, "y": 3, "x": 3}), "M", "best")
    assert lazy.dtype == np.uint16
    got = lazy.compute()
    months = DATES.to_period("M")
    values = cube.values
    for i, month in enumerate(months.unique()):
        idx = np.flatnonzero(months == month)
        for y in range(5):
            for x in range(6):
                ok = [j for j in idx if (values[j, :, y, x] != 0).all()]
                want = values[min(ok, key=lambda j: (score[j], j)), :, y, x] if ok else np.zeros(2)
                np.testing.assert_array_equal(got.values[i, :, y, x], want)


def test_best_pixel_needs_a_score() -> None:
    with pytest.raises(InputError, match="needs a cloud score"):
        composite(_series(), "M", "best")


def test_scale_clip_and_nan_handling() -> None:
    raw = np.array([0, 1000, 5000, 12000], dtype="uint16").reshape(1, 1, 1, 4)
    cube = xr.DataArray(
        raw,
        dims=("time", "band", "y", "x"),
        coords={
            "time": DATES[:1],
            "band": ["red"],
            "nodata": ("band", [0.0]),
            "scale": ("band", [1e-4]),
            "offset": ("band", [-0.1]),
        },
    )
    got = scale_cube(cube, clip=(0, 1))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.values.ravel(), [np.nan, 0.0, 0.4, 1.0], rtol=1e-6)
    filled = scale_cube(cube, clip=(0, 1), fill=-1)
    assert filled.values.ravel()[0] == -1 and int(filled.nan_filled.sum()) == 1
    user = scale_cube(cube, scale={"red": 2.0}, offset=0)
    np.testing.assert_allclose(user.values.ravel(), [np.nan, 2000, 10000, 24000])


def test_scaling_without_known_scale_is_refused() -> None:
    cube = _series(dtype="uint16")
    with pytest.raises(InputError, match=r"bands \['red', 'nir'\] have no raster:scale/offset"):
        scale_cube(cube)
    assert scale_cube(cube, scale=1, offset=0).dtype == np.float32

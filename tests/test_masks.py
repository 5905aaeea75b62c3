"""QA bit masks against independent arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from geochip.core.masks import cloud_fraction, landsat_qa_mask, probability_mask, scl_mask
from geochip.errors import InputError

RNG = np.random.default_rng(0)
QA = RNG.integers(0, 2**16, size=5000, dtype=np.uint16)


def _bits(qa: np.ndarray, shift: int, width: int) -> np.ndarray:
    return (qa.astype(np.int64) // 2**shift) % 2**width


def test_pre_collection_cloud_is_bits_14_15_high() -> None:
    expected = (_bits(QA, 14, 2) == 3) & (_bits(QA, 0, 1) == 0)
    np.testing.assert_array_equal(landsat_qa_mask(QA, "landsat8_pre", ["cloud"]), expected)


def test_pre_collection_cloud_or_cirrus() -> None:
    expected = ((_bits(QA, 14, 2) == 3) | (_bits(QA, 12, 2) == 3)) & (_bits(QA, 0, 1) == 0)
    got = landsat_qa_mask(QA, "landsat8_pre", ["cloud", "cirrus"])
    np.testing.assert_array_equal(got, expected)


def test_collection2_flags() -> None:
    expected = ((_bits(QA, 3, 1) == 1) | (_bits(QA, 4, 1) == 1) | (_bits(QA, 1, 1) == 1)) & (
        _bits(QA, 0, 1) == 0
    )
    got = landsat_qa_mask(QA, "landsat_c2", ["cloud", "cloud_shadow", "dilated_cloud"])
    np.testing.assert_array_equal(got, expected)


def test_collection1_cloud_bit() -> None:
    expected = (_bits(QA, 4, 1) == 1) & (_bits(QA, 0, 1) == 0)
    np.testing.assert_array_equal(landsat_qa_mask(QA, "landsat_c1", ["cloud"]), expected)


def test_cloud_fraction_ignores_fill() -> None:
    qa = np.array([1, 1, 53248, 20480], dtype=np.uint16)
    assert cloud_fraction(qa, "landsat8_pre") == 0.5
    assert np.isnan(cloud_fraction(np.array([1, 1], np.uint16), "landsat8_pre"))


def test_unknown_flag_lists_the_flags_of_the_layout() -> None:
    with pytest.raises(InputError, match="choose from .*cirrus.*cloud"):
        landsat_qa_mask(QA, "landsat8_pre", ["shadow"])


def test_unknown_layout_is_named() -> None:
    with pytest.raises(InputError, match="known layouts: landsat8_pre, landsat_c1, landsat_c2"):
        landsat_qa_mask(QA, "sentinel", ["cloud"])


def test_scl_default_classes() -> None:
    scl = np.arange(12)
    assert np.flatnonzero(scl_mask(scl)).tolist() == [0, 1, 3, 8, 9, 10]
    with pytest.raises(InputError, match="0..11"):
        scl_mask(scl, [12])


def test_probability_threshold() -> None:
    assert probability_mask(np.array([10, 40, 41]), 40).tolist() == [False, True, True]


def test_masks_work_lazily_on_dask() -> None:
    import dask.array as da

    lazy = landsat_qa_mask(da.from_array(QA, chunks=1000), "landsat8_pre", ["cloud"])
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), landsat_qa_mask(QA, "landsat8_pre", ["cloud"]))

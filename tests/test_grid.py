"""Chip windows and grids: properties of every edge policy, exact GeoBox arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from geochip.core.grid import chip_windows, count_windows, target_geobox, yx
from geochip.errors import InputError, NoChipsError

dims = st.integers(min_value=1, max_value=300)
sizes = st.integers(min_value=1, max_value=64)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded 2-core machine
@given(h=dims, w=dims, size=sizes, stride=sizes)
def test_drop_windows_fit_inside_and_never_repeat(h: int, w: int, size: int, stride: int) -> None:
    if h < size or w < size:
        with pytest.raises(NoChipsError, match="no .* chip fits"):
            chip_windows((h, w), size, stride, "drop")
        return
    wins = chip_windows((h, w), size, stride, "drop")
    assert len(wins) == len(set(wins)) == count_windows((h, w), size, stride, "drop")
    assert all(v.row >= 0 and v.row + v.height <= h for v in wins)
    assert all(v.col >= 0 and v.col + v.width <= w for v in wins)
    assert len(wins) == ((h - size) // stride + 1) * ((w - size) // stride + 1)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded 2-core machine
@given(h=dims, w=dims, size=sizes, stride=sizes)
def test_shift_windows_cover_every_pixel_when_stride_le_size(
    h: int, w: int, size: int, stride: int
) -> None:
    if h < size or w < size:
        return
    wins = chip_windows((h, w), size, stride, "shift")
    assert all(v.row + v.height <= h and v.col + v.width <= w for v in wins)
    if stride <= size:
        covered = np.zeros((h, w), bool)
        for v in wins:
            covered[v.slices()] = True
        assert covered.all()


@settings(deadline=None)  # wall-clock deadlines flake on a loaded 2-core machine
@given(h=dims, w=dims, size=sizes, stride=sizes)
def test_pad_windows_start_inside_and_cover_everything(
    h: int, w: int, size: int, stride: int
) -> None:
    wins = chip_windows((h, w), size, stride, "pad")
    assert all(v.row < h and v.col < w for v in wins)
    assert len(wins) == count_windows((h, w), size, stride, "pad")
    if stride <= size:
        covered = np.zeros((h + size, w + size), bool)
        for v in wins:
            covered[v.slices()] = True
        assert covered[:h, :w].all()


def test_windows_accept_named_pairs() -> None:
    wins = chip_windows((100, 300), {"y": 50, "x": 100})
    assert [(v.row, v.col, v.height, v.width) for v in wins][:2] == [
        (0, 0, 50, 100),
        (0, 100, 50, 100),
    ]
    assert len(wins) == 6


@pytest.mark.parametrize("bad", [0, -1, {"y": 1}, (2, 3), True, "8"])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises(InputError, match="size"):
        yx(bad)


def test_unknown_edge_policy_names_the_choices() -> None:
    with pytest.raises(InputError, match="drop, shift, pad"):
        chip_windows((10, 10), 5, edge="wrap")


def test_chip_transform_is_grid_transform_shifted_by_window() -> None:
    grid = GeoBox.from_bbox((300_000, 5_000_000, 310_240, 5_010_240), "EPSG:32633", resolution=10)
    win = chip_windows(grid.shape.yx, 256)[5]
    chip = grid[win.slices()]
    assert chip.affine.c == grid.affine.c + win.col * 10
    assert chip.affine.f == grid.affine.f - win.row * 10
    assert chip.shape.yx == (256, 256)


def test_target_geobox_halves_a_30m_grid_exactly() -> None:
    base = GeoBox((603, 627), Affine(30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0), "EPSG:32616")
    fine = target_geobox(base, 15)
    assert fine.shape.yx == (1206, 1254)
    assert fine.extent.boundingbox == base.extent.boundingbox
    assert target_geobox(base) is base


def test_target_geobox_keeps_top_left_anchor_when_extent_is_not_divisible() -> None:
    base = GeoBox((10, 10), Affine(30.0, 0.0, 0.0, 0.0, -30.0, 300.0), "EPSG:32616")
    coarse = target_geobox(base, 40)
    assert coarse.shape.yx == (8, 8)  # 300 m / 40 m = 7.5 -> 8 pixels
    assert (coarse.affine.c, coarse.affine.f) == (0.0, 300.0)

"""Chips with no data at all (issue 11, part 4): status ``nodata`` in the index, counted by
``check``/``info``, and kept away from the DataLoader unless asked for.

The oracle: the source rasters read with plain rasterio (or the array given to the store),
cut with numpy; a chip is "no data" exactly when every value of every band (and of every
time step) is the nodata value or NaN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.plan.chips import plan_chips
from geochip.store.check import check_store
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store
from geochip.testing import make_catalog, make_cog, make_item
from geochip.testing.catalogs import scene_grid

torch = pytest.importorskip("torch")

from geochip.ml.torch import ChipDataset, collate_chips  # noqa: E402

SIZE, CHIP = 128, 32


def _bands(seed: int) -> np.ndarray:
    """(2, 128, 128) uint16 in 1..999 with nodata (0) where the chips below need it."""
    data = np.random.default_rng(seed).integers(1, 1000, (2, SIZE, SIZE), dtype="uint16")
    data[:, 0:32, 0:64] = 0  # chips r0-c0 and r0-c32: nothing in either band
    data[0, 32:64, 0:32] = 0  # chip r32-c0: band 1 empty, band 2 has data
    data[:, 64:96, 64:80] = 0  # chip r64-c64: half of it nodata
    data[:, 96:128, 96:127] = 0  # chip r96-c96: one column of data left
    return data


def _scene(root: Path, name: str, data: np.ndarray, date: str) -> object:
    grid = scene_grid(0, SIZE)
    assets = {
        f"b{b + 1}": make_cog(
            root / name / f"b{b + 1}.tif", grid, dtype="uint16", nodata=0, data=data[b : b + 1]
        )
        for b in range(2)
    }
    return make_item(name, assets, datetime=date)


def _oracle(paths: list[Path], nodata: float) -> dict[str, bool]:
    """chip id -> whether every value of the chip is nodata, from plain rasterio reads."""
    stack = []
    for path in paths:
        with rasterio.open(path) as ds:
            stack.append(ds.read())
    image = np.stack(stack)  # (files, bands, y, x)
    out = {}
    for r in range(0, SIZE, CHIP):
        for c in range(0, SIZE, CHIP):
            window = image[..., r : r + CHIP, c : c + CHIP]
            out[f"r{r}-c{c}"] = bool(np.all((window == nodata) | np.isnan(window)))
    return out


def _statuses(index: object) -> dict[str, str]:
    """chip id -> status."""
    return dict(zip(index["chip_id"], index["status"], strict=True))  # type: ignore[index]


def _config(catalog: Path, out: Path, **extra: object) -> dict:
    return {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["b1", "b2"],
        "chips": {"size": CHIP},
        "split": {"method": "none"},
        "output": {"path": str(out)},
        "engine": {"threads": 2, "batch_size": 4},
        **extra,
    }


def test_built_chips_with_no_data_are_exactly_the_all_nodata_ones(tmp_path: Path) -> None:
    item = _scene(tmp_path / "data", "scene", _bands(1), "2024-05-01")
    catalog = make_catalog(tmp_path / "catalog", [item])
    result = build(parse_config(_config(catalog, tmp_path / "ds")), progress=False)
    files = [Path(item.assets[f"b{b}"].href) for b in (1, 2)]  # type: ignore[attr-defined]
    expected = _oracle(files, 0)
    store = open_store(result.path)
    index = store.index
    got = {cid.split("scene-", 1)[1]: s == "nodata" for cid, s in _statuses(index).items()}
    assert got == expected
    assert sorted(k for k, v in expected.items() if v) == ["r0-c0", "r0-c32"]
    assert set(index["status"]) == {"ok", "nodata"}
    n_nodata = sum(expected.values())
    assert result.counts["nodata"] == store.manifest["counts"]["nodata"] == n_nodata
    assert result.counts["ok"] == 16 - n_nodata

    report = check_store(result.path)
    assert report.ok and report.nodata == n_nodata and report.checked == 16 - n_nodata

    # the DataLoader sees none of them by default; all of them on request
    dataset = ChipDataset(result.path)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=collate_chips)
    seen = [cid for batch in loader for cid in batch["chip_id"]]
    empty = {cid for cid, s in _statuses(index).items() if s == "nodata"}
    assert len(seen) == 16 - n_nodata and not set(seen) & empty
    for batch in loader:  # every chip the loader gives has data
        assert all(bool((img != 0).any()) for img in batch["image"])
    everything = ChipDataset(result.path, include_nodata=True)
    assert len(everything) == 16
    assert {everything[i]["chip_id"] for i in range(16)} >= empty
    shown = subprocess.run(
        [sys.executable, "-m", "geochip", "info", str(result.path)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert f"{n_nodata} nodata" in " ".join(shown.split())


def test_a_time_stack_chip_is_nodata_only_when_every_step_is(tmp_path: Path) -> None:
    first = _bands(2)
    second = _bands(3)
    second[:, 0:32, 0:32] = 7  # chip r0-c0 has data in the second step only
    items = [
        _scene(tmp_path / "data", "d1", first, "2024-05-01"),
        _scene(tmp_path / "data", "d2", second, "2024-06-01"),
    ]
    catalog = make_catalog(tmp_path / "catalog", items)
    time = {"start": "2024-05-01", "end": "2024-06-30", "periods": "monthly"}
    result = build(parse_config(_config(catalog, tmp_path / "ds", time=time)), progress=False)
    files = [Path(i.assets[f"b{b}"].href) for i in items for b in (1, 2)]  # type: ignore[attr-defined]
    expected = _oracle(files, 0)
    assert expected["r0-c0"] is False and expected["r0-c32"] is True
    index = open_store(result.path).index
    got = {cid.rsplit("-r", 1)[1]: s == "nodata" for cid, s in _statuses(index).items()}
    assert got == {k[1:]: v for k, v in expected.items()}
    row = index[index["chip_id"].str.endswith("-r0-c0")].iloc[0]
    assert row["status"] == "ok" and row["empty_steps"] == 1
    assert len(ChipDataset(result.path)) == 16 - sum(expected.values())


def test_a_store_written_from_arrays_marks_nan_and_nodata_chips(tmp_path: Path) -> None:
    grid = scene_grid(0, 64)
    image = np.random.default_rng(4).random((3, 64, 64)).astype("float32")
    image[:, 0:32, 0:32] = np.nan  # chip r0-c0: all NaN
    image[0, 0:32, 32:64] = -9999.0  # chip r0-c32: NaN and nodata, mixed by band
    image[1:, 0:32, 32:64] = np.nan
    image[:, 32:64, 0:32] = -9999.0  # chip r32-c0: all nodata...
    image[2, 40, 10] = 0.5  # ...but one value
    plan = plan_chips(grid, CHIP, grid_id="g")
    path = write_store(tmp_path / "ds", plan, {"g": ChipSource(image, ["a", "b", "c"], -9999.0)})
    index = open_store(path).index
    for cid, status in _statuses(index).items():
        r, c = (int(v[1:]) for v in cid.split("-")[1:])
        window = image[:, r : r + CHIP, c : c + CHIP]
        empty = bool(np.all(np.isnan(window) | (window == -9999.0)))
        assert status == ("nodata" if empty else "ok"), cid
    assert list(index["status"]) == ["nodata", "nodata", "ok", "ok"]
    assert len(ChipDataset(path)) == 2


def test_a_build_whose_every_chip_holds_no_data_exits_1(tmp_path: Path) -> None:
    item = _scene(tmp_path / "data", "blank", np.zeros((2, SIZE, SIZE), "uint16"), "2024-05-01")
    catalog = make_catalog(tmp_path / "catalog", [item])
    config = tmp_path / "build.json"
    config.write_text(json.dumps(_config(catalog, tmp_path / "ds")))
    result = subprocess.run(
        [sys.executable, "-m", "geochip", "build", str(config), "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no usable chip: all 16 chips hold no data" in " ".join(result.stderr.split())
    assert set(open_store(tmp_path / "ds").index["status"]) == {"nodata"}

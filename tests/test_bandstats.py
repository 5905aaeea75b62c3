"""Band statistics: computed while the chips are written, merged exactly, checked against
numpy over the stored arrays (valid pixels only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.bandstats import (
    PERCENTILES,
    STATS_FILE,
    band_stats,
    compute_store_stats,
    histograms,
    stats_document,
)
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store
from geochip.testing.catalogs import make_scene_catalog, scene_config


def _oracle(store: Any, split: str, nodata: Any) -> dict[str, dict[str, Any]]:
    """numpy over the stored arrays: per band, the valid pixels of the split's ok chips."""
    index = store.index
    rows = index[(index["status"] == "ok") & ((index["split"] == split) | (split == "all"))]
    image = np.asarray(store.image[:])[rows["index"].to_numpy()]
    bad = np.isnan(image) if image.dtype.kind == "f" else np.zeros(image.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        bad |= image == nodata
    valid = ~bad.any(axis=-3)
    out = {}
    for b, band in enumerate(store.bands):
        values = image[..., b, :, :][valid].astype(np.float64)
        out[band] = {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            **{
                f"p{q}": float(np.percentile(values, q, method="inverted_cdf")) for q in PERCENTILES
            },
        }
    return out


def _small_store(tmp: Path, dtype: str, nodata: Any, seed: int = 0) -> Path:
    gbox = GeoBox.from_bbox((500_000, 0, 501_280, 1280), "EPSG:32633", resolution=10)
    plan = assign_splits(plan_chips(gbox, 16), block_size=32, seed=1).plan
    rng = np.random.default_rng(seed)
    if dtype == "uint16":
        image = rng.integers(0, 3000, (3, 128, 128)).astype("uint16")
        image[:, :20, :] = nodata  # a strip of nodata
        image[1, 50:60, 50:60] = nodata  # nodata in one band only: the pixel is invalid
    else:
        image = rng.normal(0.2, 0.1, (3, 128, 128)).astype(dtype)
        image[:, :20, :] = np.nan
        image[2, 70:75, :] = np.nan
    source = ChipSource(image, ["red", "green", "nir"], nodata, mask=np.zeros((128, 128)))
    return write_store(tmp / f"ds-{dtype}", plan, {"grid": source}, workers=2)


def test_uint16_stats_are_exact_against_numpy(tmp_path: Path) -> None:
    store = open_store(_small_store(tmp_path, "uint16", 0))
    stats = store.manifest["stats"]
    assert stats["bins"] == "exact" and stats["bands"] == ["red", "green", "nir"]
    assert set(stats["splits"]) == {"train", "val", "test", "all"}
    for split in ("train", "val", "test", "all"):
        expected = _oracle(store, split, 0)
        for band in store.bands:
            got = stats["splits"][split][band]
            want = expected[band]
            assert got["count"] == want["count"]
            for key in ("min", "max", *(f"p{q}" for q in PERCENTILES)):
                assert got[key] == want[key], (split, band, key)
            assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
            assert got["std"] == pytest.approx(want["std"], rel=1e-9)
    # the pixel that is nodata in one band only is left out of every band
    assert stats["splits"]["all"]["red"]["count"] == stats["splits"]["all"]["green"]["count"]
    # stats.json holds the same numbers and the histograms; band_stats reads the train split
    full = json.loads((store.path / STATS_FILE).read_text())
    assert full["splits"] == stats["splits"]
    hists = histograms(store.path)
    image = np.asarray(store.image[:])
    for split in ("train", "val", "test", "all"):
        index = store.index
        rows = index[(index["status"] == "ok") & ((index["split"] == split) | (split == "all"))]
        chips = image[rows["index"].to_numpy()]
        values = chips[:, 1][(chips != 0).all(axis=1)]  # green, valid pixels
        want_keys, want_counts = np.unique(values, return_counts=True)
        keys, counts = hists[split]["green"]
        assert keys.tolist() == want_keys.tolist() and counts.tolist() == want_counts.tolist()
    # stored compactly: the splits' histograms, not their sum (``all``), which adds up
    assert set(full["histograms"]) == {"train", "val", "test"}
    assert full["version"] == 2 and "zlib" in full["histogram_encoding"]
    assert band_stats(store)["nir"]["mean"] == stats["splits"]["train"]["nir"]["mean"]


def test_float_stats_with_nan_against_numpy(tmp_path: Path) -> None:
    store = open_store(_small_store(tmp_path, "float32", float("nan")))
    stats = store.manifest["stats"]
    assert stats["bins"] == "bfloat16"
    expected = _oracle(store, "train", float("nan"))
    for band in store.bands:
        got = stats["splits"]["train"][band]
        want = expected[band]
        assert got["count"] == want["count"]
        assert (got["min"], got["max"]) == (want["min"], want["max"])
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-9)
        assert got["std"] == pytest.approx(want["std"], rel=1e-9)
        for q in PERCENTILES:  # bfloat16 bins: within 2**-8 of the value
            assert got[f"p{q}"] == pytest.approx(want[f"p{q}"], rel=2**-7, abs=1e-6)


def test_recomputed_stats_equal_the_build_time_stats(tmp_path: Path) -> None:
    store = open_store(_small_store(tmp_path, "uint16", 0))
    again = stats_document(
        compute_store_stats(store, batch_size=5), store.bands, "uint16", histograms=False
    )
    assert again == store.manifest["stats"]


def _config(catalog: Path, out: Path, threads: int = 2, batch_size: int = 3) -> dict[str, Any]:
    return scene_config(
        catalog,
        out,
        size=32,
        split={"block_size": 2},
        engine={"threads": threads, "batch_size": batch_size},
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bandstats")
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=128, dtype="uint16")
    (tmp / "catalog.txt").write_text(str(catalog))
    build(parse_config(_config(catalog, tmp / "ds")), progress=False)
    return tmp / "ds"


def test_build_writes_stats_that_match_numpy_and_any_thread_count(
    built: Path, tmp_path: Path
) -> None:
    store = open_store(built)
    stats = store.manifest["stats"]
    nodata = store.manifest["image"]["nodata"]
    for split in stats["splits"]:
        expected = _oracle(store, split, nodata)
        for band in store.bands:
            got, want = stats["splits"][split][band], expected[band]
            assert got["count"] == want["count"] > 0
            assert got["p50"] == want["p50"] and got["max"] == want["max"]
            assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    # one thread, other batches: the same bytes
    cfg = _config(
        Path((built.parent / "catalog.txt").read_text()), tmp_path / "one", threads=1, batch_size=5
    )
    build(parse_config(cfg), progress=False)
    assert (tmp_path / "one" / STATS_FILE).read_bytes() == (built / STATS_FILE).read_bytes()


def test_build_without_stats_writes_none(built: Path, tmp_path: Path) -> None:
    build(
        parse_config(
            _config(Path((built.parent / "catalog.txt").read_text()), tmp_path / "nostats")
        ),
        progress=False,
        band_stats=False,
    )
    assert "stats" not in json.loads((tmp_path / "nostats" / "manifest.json").read_text())
    assert not (tmp_path / "nostats" / STATS_FILE).exists()
    # an older store: `geochip stats` recomputes them, the same as the build's
    done = subprocess.run(
        [sys.executable, "-m", "geochip", "stats", str(tmp_path / "nostats"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["splits"] == open_store(built).manifest["stats"]["splits"]


def test_geochip_stats_prints_a_table(built: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "geochip", "stats", str(built), "--split", "train"],
        capture_output=True,
        text=True,
        check=True,
    )
    stats = open_store(built).manifest["stats"]["splits"]["train"]
    band = next(iter(stats))
    assert band in done.stdout and str(stats[band]["count"]) in done.stdout


@pytest.mark.parametrize("chunk", [1 << 22, 300])  # one bincount, or one per chip
def test_batch_histograms_of_a_signed_time_stack_against_numpy(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geochip.store import histograms as hist_module
    from geochip.store.histograms import batch_stats, fold_steps

    monkeypatch.setattr(hist_module, "_CHUNK", chunk)
    rng = np.random.default_rng(7)
    chips = rng.integers(-300, 300, (5, 3, 2, 8, 8)).astype("int16")  # (N, T, C, H, W)
    chips[0, 1, 1, :4] = -9999  # nodata in one band: the pixel is invalid in both
    splits = ["train", "val", "train", "train", "val"]
    ok = [True, True, True, False, True]
    steps = batch_stats(chips, splits, -9999, ok, per_step=True)
    flat = batch_stats(chips, splits, -9999, ok)
    for split in ("train", "val"):
        rows = [k for k, s in enumerate(splits) if s == split and ok[k]]
        part = chips[rows]
        valid = (part != -9999).all(axis=2)  # (N, T, H, W)
        for b in range(2):
            for t in range(3):
                want = np.unique(part[:, t, b][valid[:, t]], return_counts=True)
                acc = steps[split][t * 2 + b]
                got = acc.keys()
                assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
                assert (acc.min, acc.max) == (want[0][0], want[0][-1])
            values = part[:, :, b][valid]
            want = np.unique(values, return_counts=True)
            for acc in (flat[split][b], fold_steps(steps, 2)[split][b]):
                assert acc.count == values.size
                assert acc.keys()[0].tolist() == want[0].tolist()
                assert acc.keys()[1].tolist() == want[1].tolist()

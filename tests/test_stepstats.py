"""Band statistics per time step (``stats: {per_step: true}``): a small time-stacked build
(6 monthly steps, clouds masked per scene, two empty months) checked against numpy over the
stored arrays, after other batches, a resume, and recomputed for a store built without them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geochip.builder.config import parse_config
from geochip.builder.run import build
from geochip.store.bandstats import PERCENTILES, STATS_FILE, histograms, step_stats
from geochip.store.reader import open_store
from geochip.testing import BuildStopped, stop_after
from geochip.testing.catalogs import make_time_catalog

DATES = ["2024-01-05", "2024-02-10", "2024-02-20", "2024-04-15", "2024-05-01"]


def _config(catalog: Path, out: Path, per_step: bool = True, **engine: Any) -> dict[str, Any]:
    return {
        "sources": {"kind": "catalog", "path": str(catalog)},
        "bands": ["red", "nir"],
        "time": {"start": "2024-01-01", "end": "2024-06-30", "periods": "monthly"},
        "masks": {"kind": "scl", "band": "scl"},
        "chips": {"size": 16},
        "split": {"method": "random", "seed": 3},
        "output": {"path": str(out)},
        "engine": {"threads": 2, "batch_size": 2, **engine},
        **({"stats": {"per_step": True}} if per_step else {}),
    }


def _oracle(store: Any, split: str) -> list[dict[str, dict[str, Any]]]:
    """numpy over the stored arrays: per step and band, the valid pixels (no band nodata at
    that step) of the split's ok chips."""
    index = store.index
    rows = index[(index["status"] == "ok") & ((index["split"] == split) | (split == "all"))]
    image = np.asarray(store.image[:])[rows["index"].to_numpy()]  # (N, T, C, H, W)
    valid = ~(image == store.manifest["image"]["nodata"]).any(axis=2)  # (N, T, H, W)
    out = []
    for t in range(image.shape[1]):
        step = {}
        for b, band in enumerate(store.bands):
            values = image[:, t, b][valid[:, t]].astype(np.float64)
            step[band] = {"count": int(values.size)}
            if values.size:
                step[band] |= {
                    "mean": float(values.mean()),
                    "std": float(values.std()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                    **{
                        f"p{q}": float(np.percentile(values, q, method="inverted_cdf"))
                        for q in PERCENTILES
                    },
                }
        out.append(step)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("stepstats")
    catalog = make_time_catalog(tmp / "time", DATES, covers=[30, 5, 50, 20, 12], size=64)
    build(parse_config(_config(catalog, tmp / "ds")), progress=False)
    return catalog, tmp / "ds"


def test_per_step_stats_match_numpy_over_the_stored_arrays(built: tuple[Path, Path]) -> None:
    store = open_store(built[1])
    assert store.image.shape == (16, 6, 2, 16, 16)
    stats = store.manifest["stats"]
    steps = stats["per_step"]
    assert steps["steps"] == 6 and set(steps["splits"]) == {"train", "val", "test", "all"}
    for split, per_step in steps["splits"].items():
        expected = _oracle(store, split)
        assert len(per_step) == 6
        for t, (got_step, want_step) in enumerate(zip(per_step, expected, strict=True)):
            for band in store.bands:
                got, want = got_step[band], want_step[band]
                assert got["count"] == want["count"], (split, t, band)
                if not want["count"]:  # March and June have no scene
                    assert got["mean"] is None and got["p50"] is None
                    continue
                for key in ("min", "max", *(f"p{q}" for q in PERCENTILES)):
                    assert got[key] == want[key], (split, t, band, key)
                assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
                assert got["std"] == pytest.approx(want["std"], rel=1e-9)
    counts = [s["red"]["count"] for s in steps["splits"]["all"]]
    assert counts[2] == counts[5] == 0 and all(counts[t] > 0 for t in (0, 1, 3, 4))
    # clouds are masked per step: the steps' valid pixels add up to the per-band count
    assert sum(counts) == stats["splits"]["all"]["red"]["count"]
    # stats.json: the same numbers, and per-step histograms that add up to the band's
    full = json.loads((store.path / STATS_FILE).read_text())
    assert full["per_step"]["splits"] == steps["splits"]
    per_band, per_step = histograms(store.path), histograms(store.path, per_step=True)
    assert set(per_step) == {"train", "val", "test", "all"}
    for split, hists in per_step.items():
        for band in store.bands:
            merged: dict[int, int] = {}
            for step in hists:
                for k, c in zip(*step[band], strict=True):
                    merged[int(k)] = merged.get(int(k), 0) + int(c)
            keys, counts = per_band[split][band]
            assert merged == dict(zip(keys.tolist(), counts.tolist(), strict=True))
    assert step_stats(store, "train") == steps["splits"]["train"]


def test_per_step_stats_are_the_same_bytes_for_other_batches_and_after_a_resume(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, reference = built
    want = (reference / STATS_FILE).read_bytes()
    manifest = json.loads((reference / "manifest.json").read_text())
    build(parse_config(_config(catalog, tmp_path / "one", threads=1, batch_size=5)), progress=False)
    assert (tmp_path / "one" / STATS_FILE).read_bytes() == want

    cfg = parse_config(_config(catalog, tmp_path / "resumed", threads=1))
    with pytest.raises(BuildStopped):
        build(cfg, progress=False, on_batch=stop_after(3))
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    result = build(cfg, resume=True, progress=False)
    assert 3 <= result.skipped_batches < result.batches
    assert (tmp_path / "resumed" / STATS_FILE).read_bytes() == want
    again = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert again["stats"] == manifest["stats"]


def test_geochip_stats_per_step_recomputes_them_for_a_store_built_without(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, reference = built
    out = tmp_path / "plain"
    build(parse_config(_config(catalog, out, per_step=False)), progress=False)
    plain = json.loads((out / "manifest.json").read_text())
    assert "per_step" not in plain["stats"] and "stats" not in plain["config"]
    want = json.loads((reference / "manifest.json").read_text())["stats"]
    assert plain["stats"]["splits"] == want["splits"]  # per_step leaves per-band stats alone

    def stats(*args: str) -> str:
        cmd = [sys.executable, "-m", "geochip", "stats", str(out), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    shown = json.loads(stats("--per-step", "--json"))
    assert shown["per_step"] == want["per_step"]
    table = stats("--per-step", "--split", "val")
    assert "val, time step 5" in table and "train" not in table
    assert "--save writes them" in table
    stats("--per-step", "--save")
    saved = open_store(out)
    assert saved.manifest["stats"] == want
    assert (out / STATS_FILE).read_bytes() == (reference / STATS_FILE).read_bytes()


def test_the_report_shows_the_per_step_stats(built: tuple[Path, Path], tmp_path: Path) -> None:
    import re

    from geochip.store.report import write_report

    store = open_store(built[1])
    page = write_report(store, tmp_path / "report.html").read_text()
    shown = dict(re.findall(r'data-key="(step-[^"]+)">([^<]*)<', page))
    # every split, step and band, and the numbers are numpy's over the stored arrays
    assert len(shown) == 4 * 6 * 2 * 3
    for split in ("train", "val", "test", "all"):
        for t, step in enumerate(_oracle(store, split)):
            for band, want in step.items():
                assert int(shown[f"step-count-{split}-{t}-{band}"]) == want["count"]
                mean = shown[f"step-mean-{split}-{t}-{band}"]
                if want["count"]:
                    assert float(mean.replace(",", "")) == pytest.approx(want["mean"], rel=1e-5)
                else:
                    assert mean == "-"
    periods = [p["name"] for p in store.manifest["time"]["periods"]]
    assert all(f"<td>{name}</td>" in page for name in periods)

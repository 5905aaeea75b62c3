"""Bad input for datasets ready to train on (issue 14): statistics, normalisation, the
sampler and the report page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.errors import InputError, NoChipsError, NoValidPixelsError, UnknownClassError
from geochip.ml.sampling import LabelSampler
from geochip.ml.torch import ChipDataset
from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.writer import ChipSource, write_store


def _store(tmp: Path, *, splits: bool = True, valid: bool = True) -> Path:
    gbox = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    plan = plan_chips(gbox, 16)
    if splits:
        plan = assign_splits(plan, block_size=32, seed=1).plan
    image = np.full((2, 64, 64), 7 if valid else 0, dtype="uint16")
    mask = np.zeros((64, 64), dtype="uint8")
    mask[:16, :16] = 1
    source = ChipSource(image, ["red", "nir"], 0, mask)
    return write_store(tmp / "ds", plan, {"grid": source}, classes={"water": 1})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("trainready"))


def test_normalising_with_a_split_without_valid_pixels(tmp_path: Path) -> None:
    path = _store(tmp_path, valid=False)
    with pytest.raises(NoValidPixelsError, match=r"split 'train' of .* has no valid pixel"):
        ChipDataset(path, split="val", normalize="zscore")


def test_normalising_with_a_split_the_store_lacks(store: Path) -> None:
    with pytest.raises(InputError, match=r"no split 'holdout' in its statistics"):
        ChipDataset(store, normalize="zscore", stats_split="holdout")


def test_an_unknown_normalisation_method(store: Path) -> None:
    with pytest.raises(InputError, match=r"normalize must be one of zscore, percentile"):
        ChipDataset(store, normalize="minmax")


def test_normalising_into_an_integer_dtype(store: Path) -> None:
    with pytest.raises(InputError, match=r"dtype must be a float dtype .* got int16"):
        ChipDataset(store, dtype="int16", normalize="zscore")


def test_sampler_class_the_dataset_does_not_have(store: Path) -> None:
    with pytest.raises(UnknownClassError, match=r"class ids \[5\] are not in this dataset"):
        LabelSampler(ChipDataset(store), classes=[5])


def test_sampler_survival_outside_0_1(store: Path) -> None:
    with pytest.raises(InputError, match=r"survival must be a probability in \[0, 1\], got 1.5"):
        LabelSampler(ChipDataset(store), classes=[1], survival=1.5)


def test_sampler_with_nothing_left_to_draw(store: Path) -> None:
    with pytest.raises(NoChipsError, match=r"no chip has a weight above 0"):
        LabelSampler(ChipDataset(store), weighting=None, classes=[1], min_pixels=10**6, survival=0)


def test_stats_of_a_split_the_store_lacks(refuse, store: Path) -> None:
    refuse("stats", str(store), "--split", "holdout", error="InputError", message="'holdout'")


def test_report_of_a_store_without_splits(refuse, tmp_path: Path) -> None:
    path = _store(tmp_path, splits=False)
    out = tmp_path / "report.html"
    refuse(
        "report",
        str(path),
        "--out",
        str(out),
        error="InputError",
        message="has no splits",
        outputs=[out],
    )


def test_report_of_a_store_still_being_built(refuse, tmp_path: Path) -> None:
    building = tmp_path / "ds"
    (building / ".geochip" / "batches").mkdir(parents=True)
    (building / "chips.zarr").mkdir()
    out = tmp_path / "report.html"
    refuse(
        "report",
        str(building),
        "--out",
        str(out),
        error="StoreError",
        message="unfinished `geochip build`",
        outputs=[out],
    )


def test_report_screenshot_without_chromium(refuse, store: Path, tmp_path: Path) -> None:
    # a PATH without chromium (the CLI runs as sys.executable): nothing is written
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out, png = tmp_path / "report.html", tmp_path / "report.png"
    refuse(
        "report",
        str(store),
        "--out",
        str(out),
        "--screenshot-out",
        str(png),
        error="BrowserNotFoundError",
        message="needs headless Chromium and there is none on PATH",
        outputs=[out, png],
        env={"PATH": str(bin_dir)},
    )

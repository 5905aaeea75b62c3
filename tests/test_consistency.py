"""One CLI and one API (issue 16): the conventions every command shares, checked on every
command (typer introspection), and the API paths that must behave alike."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.main
import yaml
from odc.geo.geobox import GeoBox
from typer.testing import CliRunner

from geochip._version import __version__
from geochip.cli import app
from geochip.errors import NoSplitsError
from geochip.read.open import open_scene, open_scenes
from geochip.testing import make_cog, make_item
from geochip.testing.catalogs import make_scene_catalog, scene_config
from geochip.testing.http import RangeServer

runner = CliRunner()

# --------------------------------------------------------------------------- the conventions

#: Commands that write files, and so take --out.
WRITES = {
    "build", "chips", "demo", "sample", "search", "select", "preview", "report", "timeseries",
    "predict", "retile",
}  # fmt: skip
#: Commands that show progress bars, and so take --progress/--no-progress.
LONG_RUNNING = {"build", "chips", "demo", "select", "timeseries", "predict", "retile"}
#: Commands that refuse to replace what they wrote before unless told: --overwrite.
REFUSE_TO_REPLACE = {"build", "chips", "predict", "retile", "datasets download"}
#: Lists whose values may hold commas, so they are repeated only: a header's value
#: ("Accept: a, b"), and file paths.
REPEAT_ONLY = {"--header", "--header-env", "--registry"}


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(group: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield " ".join((*prefix, name)), command
                yield from walk(command, (*prefix, name))
            else:
                yield " ".join((*prefix, name)), command

    root = typer.main.get_command(app)
    yield "", root
    yield from walk(root, ())


COMMANDS = dict(_commands())


def _options(command: Any) -> dict[str, Any]:
    return {
        opt: p
        for p in command.params
        if p.param_type_name == "option" and not p.hidden
        for opt in (*p.opts, *p.secondary_opts)
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_argument_or_option_is_a_pathlib_path(name: str) -> None:
    """Every file may be a URL (issue 13): click's Path type turns ``s3://b/x`` into the
    local folder ``s3:/b/x`` before geochip sees it, so no parameter has it (hidden ones
    included)."""
    import typing
    from pathlib import PurePath

    def mentions_path(annotation: Any) -> bool:  # Path, Path | None, list[Path]...
        if isinstance(annotation, type) and issubclass(annotation, PurePath):
            return True
        return any(mentions_path(a) for a in typing.get_args(annotation))

    params = COMMANDS[name].params
    assert all(hasattr(p, "type_descriptor") for p in params)  # typer's own parameters
    typed_path = [p.name for p in params if mentions_path(p.type_descriptor.annotation)]
    assert typed_path == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_no_bool_type_after_flags(name: str) -> None:
    result = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    options = [line for line in result.output.splitlines() if line.lstrip("│ ").startswith("--")]
    assert not [line for line in options if "<list[" in line]  # <a,b,...> or <text>, repeated
    assert "--help" in result.output


def test_every_command_follows_the_output_progress_overwrite_and_list_conventions() -> None:
    assert set(COMMANDS) >= WRITES | LONG_RUNNING | REFUSE_TO_REPLACE
    for name, command in COMMANDS.items():
        options = _options(command)
        assert ("--out" in options) == (name in WRITES), name
        # an option that writes a file says so in its name: --out or --<what>-out
        for opt, param in options.items():
            if (param.help or "").lower().startswith(("write", "also write")):
                assert opt == "--out" or opt.endswith("-out"), (name, opt)
        if name in LONG_RUNNING:
            assert options["--progress"].secondary_opts == ["--no-progress"], name
        assert ("--overwrite" in options) == (name in REFUSE_TO_REPLACE), name
        assert "--force" not in options and "--root" not in options, name
        for opt, param in options.items():
            if param.multiple and opt not in REPEAT_ONLY:
                assert "repeat or separate with commas" in param.help, (name, opt)
            elif "comma" in (param.help or ""):
                pytest.fail(f"{name} {opt}: a comma list that cannot be repeated")


def test_version_prints_the_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"geochip {__version__}"


def test_old_option_names_still_work_hidden(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", "--root", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "catalog.json").exists()
    help_text = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    assert "--footprints-out" in help_text and "--footprints " not in help_text


# --------------------------------------------------------------------------- lists


@pytest.fixture(scope="module")
def two_band_item(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("items")
    grid = GeoBox.from_bbox((500_000, 0, 502_560, 1_280), "EPSG:32633", resolution=10)
    red = make_cog(folder / "red.tif", grid, tile=128, pattern="random", seed=1)
    nir = make_cog(folder / "nir.tif", grid, tile=128, pattern="random", seed=2)
    path = folder / "item.json"
    path.write_text(json.dumps(make_item("it", {"red": red, "nir": nir}).to_dict()))
    return path


@pytest.mark.parametrize(
    "assets", [["--asset", "nir,red"], ["--asset", "nir", "--asset", "red"]], ids=str
)
def test_asset_takes_repeats_and_commas_like_bands(
    two_band_item: Path, tmp_path: Path, assets: list[str]
) -> None:
    from geochip.store.reader import open_store

    out = tmp_path / "ds"
    args = ["chips", str(two_band_item), *assets, "--size", "64", "--out", str(out)]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    # the store's bands are the asset keys, as a build names them
    assert open_store(out).bands == ["nir", "red"]


def test_a_store_of_chips_has_no_splits_and_says_so(two_band_item: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from geochip.ml.torch import ChipDataset

    out = tmp_path / "ds"
    args = ["chips", str(two_band_item), "--asset", "red", "--size", "64", "--out", str(out)]
    assert runner.invoke(app, [*args, "--no-progress"]).exit_code == 0
    with pytest.raises(NoSplitsError, match=r"has no splits .* use split=None"):
        ChipDataset(out, split="train")
    assert len(ChipDataset(out)) == 4 * 2  # 256 x 128 pixels in chips of 64


# --------------------------------------------------------------------------- open_scenes


def test_open_scenes_takes_an_item_url_as_chips_does(two_band_item: Path) -> None:
    data = json.loads(two_band_item.read_text())
    for asset in data["assets"].values():  # hrefs relative to the item, as a server has them
        asset["href"] = Path(asset["href"]).name
    (two_band_item.parent / "served.json").write_text(json.dumps(data))
    with RangeServer(two_band_item.parent) as server:
        url = server.url("served.json")
        (scene,) = open_scenes([url], asset="nir")
        assert scene.id == "it" and scene.band_names == ("nir",)
        assert open_scene(url, asset="nir").shape == scene.shape
        remote = scene.read()
        result = runner.invoke(app, ["chips", url, "--asset", "nir", "--size", "64", "--count"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "8"
    import rasterio

    with rasterio.open(two_band_item.parent / "nir.tif") as ds:
        np.testing.assert_array_equal(remote, ds.read())


# --------------------------------------------------------------------------- batches


def test_streamed_and_dataloader_batches_have_the_same_keys(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from geochip.ml.stream import StreamDataset
    from geochip.plan.scenes import plan_scenes
    from geochip.read.stream import ChipStream

    grid = GeoBox.from_bbox((0, 0, 2_560, 1_280), "EPSG:32633", resolution=10)
    cog = make_cog(tmp_path / "s.tif", grid, bands=2, tile=128, pattern="random", seed=3)
    scenes = open_scenes([cog])
    stream = ChipStream(plan_scenes(scenes, 64), scenes)
    batch = next(iter(stream.batch(4)))
    loaded = next(iter(DataLoader(StreamDataset(stream, 4), batch_size=None)))
    assert list(batch.keys()) == list(loaded.keys())
    assert "image" in batch and "mask" not in batch
    assert batch["image"] is batch.image and batch["chip_id"] == loaded["chip_id"]
    np.testing.assert_array_equal(batch["image"], loaded["image"].numpy())
    np.testing.assert_array_equal(batch["bounds"], loaded["bounds"].numpy())
    assert dict(batch).keys() == loaded.keys()
    chip = next(iter(stream))
    single = next(iter(DataLoader(StreamDataset(stream), batch_size=None)))
    assert list(chip.keys()) == list(single.keys())
    np.testing.assert_array_equal(chip["bounds"], single["bounds"].numpy())
    np.testing.assert_array_equal(chip["bounds"], batch["bounds"][0])
    assert isinstance(single["image"], torch.Tensor)
    with pytest.raises(KeyError, match="has keys image, chip_id"):
        batch["mask"]


# --------------------------------------------------------------------------- build


def _geochip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config without output: (its path, a finished store built with --out)."""
    import geopandas as gpd
    from shapely.geometry import box

    tmp = tmp_path_factory.mktemp("consistency")
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=256)
    labels = tmp / "labels.geojson"
    gpd.GeoDataFrame(
        {"class": ["water", "field"]},
        geometry=[
            box(500_000, 4_000_000, 501_000, 4_002_000),
            box(502_000, 4_000_500, 505_000, 4_001_500),
        ],
        crs=32633,
    ).to_file(labels)
    cfg = scene_config(
        catalog,
        "unused",
        labels={"path": str(labels), "classes": {"water": 1, "field": 2}},
        engine={"threads": 1, "batch_size": 2},
    )
    del cfg["output"]  # --out says where
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _geochip("build", str(config), "--out", "store", "--no-progress", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return config, tmp / "store"


def test_the_resume_hint_after_ctrl_c_repeats_the_command_and_resumes_there(
    labelled: tuple[Path, Path],
) -> None:
    config, _ = labelled
    cwd = config.parent / "shell"
    cwd.mkdir()
    out = cwd / "runs" / "my store"  # a relative path with a space: quoted in the hint
    command = ["build", str(config), "--out", "runs/my store", "--no-progress", "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "geochip", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    deadline = time.monotonic() + 120
    batches = out / ".geochip" / "batches"
    while not (batches.exists() and any(batches.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "ended before a batch"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert not (out / "manifest.json").exists()
    hint = stderr.strip().splitlines()[-1]
    assert hint.startswith("interrupted: run `geochip build "), hint
    typed = hint.split("`")[1]
    assert typed == shlex.join(["geochip", *command])
    # followed word for word, in the same shell
    words = shlex.split(typed)
    again = subprocess.run(
        [sys.executable, "-m", *words],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert (out / "manifest.json").exists()
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["my store"]


def test_info_check_and_demo_name_classes_the_same_way(labelled: tuple[Path, Path]) -> None:
    from geochip.store.format import class_labels

    config, store = labelled
    info = _geochip("info", str(store), cwd=config.parent)
    assert info.returncode == 0, info.stderr
    line = next(x for x in info.stdout.splitlines() if x.startswith("pixels per class"))
    shown = set(json.loads(line.removeprefix("pixels per class ").replace("'", '"')))
    check = _geochip("check", str(store), "--json", cwd=config.parent)
    assert check.returncode == 0, check.stderr
    named = {k for b in json.loads(check.stdout)["balance"].values() for k in b["pixels"]}
    assert shown == named
    assert {"water", "field"} <= shown <= set(class_labels({"water": 1, "field": 2}).values())


# --------------------------------------------------------------------------- tables


def test_datasets_table_never_wraps_a_name_at_80_columns() -> None:
    from geochip.registry.catalog import open_registry

    result = subprocess.run(
        [sys.executable, "-m", "geochip", "datasets", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for dataset in open_registry():
        assert any(dataset.tag in line.split() for line in lines), (dataset.tag, result.stdout)


# --------------------------------------------------------------------------- no torch


_NAMED = (
    "MissingExtraError: torch is needed for this; install it with: pip install 'geochip[torch]'"
)
_NO_TORCH = "import sys; sys.modules['torch'] = None; sys.argv = ['geochip', *sys.argv[1:]]; "


def test_without_torch_predict_and_the_api_name_the_extra(tmp_path: Path) -> None:
    grid = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32633", resolution=10)
    cog = make_cog(tmp_path / "s.tif", grid, tile=64)
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a model")
    result = subprocess.run(
        [
            sys.executable, "-c", _NO_TORCH + "from geochip.cli import main; main()",
            "predict", str(model), str(cog), "--out", str(tmp_path / "p.tif"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {_NAMED}"
    assert not (tmp_path / "p.tif").exists()
    api = subprocess.run(
        [sys.executable, "-c", _NO_TORCH + "from geochip import ChipDataset; ChipDataset('x')"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert _NAMED in api.stderr

"""`geochip build` sources and labels: every kind of catalog, STAC APIs with API keys from
the environment and a signing hook that never reaches a file, label rasters, GDAL options."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from odc.geo.geobox import GeoBox

from geochip.builder.config import parse_config
from geochip.builder.plan import plan_build
from geochip.builder.run import build
from geochip.builder.tasks import batch_tasks as _batch_tasks
from geochip.errors import ConfigError, GridMismatchError
from geochip.store.format import MASK_IGNORE
from geochip.store.reader import open_store
from geochip.testing import make_cog
from geochip.testing.catalogs import make_scene_catalog, scene_config, scene_grid
from geochip.testing.rustac import RustacServer
from geochip.testing.signing import TOKEN_ENV
from geochip.testing.stac_api import StacApiServer

SIG = "Pl4ntedBuildSasSig"
KEY = "planted-build-api-key-77"
SIGNER = "geochip.testing.signing:sign"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_catalog(tmp_path_factory.mktemp("cogs"), scenes=2, size=64)


@pytest.fixture(scope="module")
def reference(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The image array built from the static catalog."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    store = open_store(build(parse_config(scene_config(catalog, out)), progress=False).path)
    return np.asarray(store.image[:])


def items_of(catalog: Path) -> list[pystac.Item]:
    out = []
    for item in pystac.Catalog.from_file(str(catalog)).get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        out.append(item)
    return sorted(out, key=lambda i: i.id)


def files_of(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_an_item_collection_json_builds_the_same_chips(
    catalog: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    features = [i.to_dict(include_self_link=False) for i in items_of(catalog)]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    cfg = scene_config(path, tmp_path / "ds")
    np.testing.assert_array_equal(open_store(build(parse_config(cfg)).path).image[:], reference)


def test_a_stac_geoparquet_file_builds_the_same_chips(
    catalog: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    import rustac

    path = tmp_path / "items.parquet"
    rustac.write_sync(str(path), [i.to_dict(include_self_link=False) for i in items_of(catalog)])
    cfg = scene_config(path, tmp_path / "ds")
    result = build(parse_config(cfg), progress=False)
    np.testing.assert_array_equal(open_store(result.path).image[:], reference)


def test_a_folder_of_band_files_builds_the_same_chips(
    catalog: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    folder = tmp_path / "rasters"
    folder.mkdir()
    for scene in ("scene-0", "scene-1"):
        for band in ("b1", "b2"):
            shutil.copy(
                catalog.parent.parent / scene / f"{band}.tif", folder / f"{scene}_{band}.tif"
            )
    cfg = scene_config(
        catalog,
        tmp_path / "ds",
        sources={
            "kind": "files",
            "path": str(folder),
            "group": r"(?P<scene>scene-\d)_(?P<band>b\d)\.tif",
        },
    )
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert set(store.index["grid_id"]) == {"scene-0", "scene-1"}
    np.testing.assert_array_equal(store.image[:], reference)


def _served(catalog: Path, files: StacApiServer) -> list[pystac.Item]:
    out = []
    for item in items_of(catalog):
        clone = item.clone()
        for asset in clone.assets.values():
            asset.href = files.file_url(asset.href)
        out.append(clone)
    return out


def test_rustac_api_with_a_key_from_the_environment_and_a_signer_by_import_path(
    catalog: Path,
    reference: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GEOCHIP_TEST_API_KEY", KEY)
    monkeypatch.setenv(TOKEN_ENV, SIG)
    root = catalog.parent.parent
    files = StacApiServer(files_root=root, file_token=SIG).start()
    try:
        with RustacServer(_served(catalog, files)) as api:
            source = {
                "kind": "catalog",
                "path": api.url,
                "headers_env": {"X-Api-Key": "GEOCHIP_TEST_API_KEY"},
                "sign": SIGNER,
            }
            config = parse_config(scene_config(catalog, tmp_path / "ds", sources=source))
            plan = plan_build(config)
            tasks = list(
                _batch_tasks(tmp_path / "x", plan, config, "f", "uint32", 0, False, 1, {0, 1})
            )
            result = build(config, progress=False)
    finally:
        files.stop()
    assert result.ok, result.failed[:1]  # every read was signed: the files answer 403 else
    store = open_store(result.path)
    np.testing.assert_array_equal(store.image[:], reference)
    hrefs = [h for hs in store.index["hrefs"] for h in hs]
    assert hrefs and all(h.startswith(files.url) and "?" not in h for h in hrefs)
    blob = files_of(result.path) + pickle.dumps(tasks)
    for secret in (SIG, KEY):
        assert secret.encode() not in blob
        assert secret not in caplog.text
    assert b"GEOCHIP_TEST_API_KEY" in (result.path / "manifest.json").read_bytes()


def test_the_api_key_header_reaches_the_api_and_a_bad_token_fails_without_leaking(
    catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("GEOCHIP_TEST_API_KEY", KEY)
    monkeypatch.setenv(TOKEN_ENV, "planted-wrong-token")
    root = catalog.parent.parent
    with StacApiServer(files_root=root, file_token=SIG, conformance=("filter",)) as api:
        api.state.items = [i.to_dict() for i in _served(catalog, api)]
        source = {
            "kind": "catalog",
            "path": api.url,
            "headers_env": {"X-Api-Key": "GEOCHIP_TEST_API_KEY"},
            "sign": SIGNER,
        }
        cfg = scene_config(catalog, tmp_path / "ds", sources=source, engine={"retries": 0})
        result = build(parse_config(cfg), progress=False)
        searches = api.searches()
    assert searches and all(r.headers.get("X-Api-Key") == KEY for r in searches)
    assert not result.ok and result.counts["failed"] == result.counts["chips"]
    errors = " ".join(open_store(result.path).index["error"])
    assert "HTTP response code: 403" in errors and "planted-wrong-token" not in errors
    assert b"planted-wrong-token" not in files_of(result.path)
    assert "sig=REDACTED" in errors  # the failed read names the signed URL, redacted
    assert "planted-wrong-token" not in caplog.text


def test_a_header_whose_variable_is_not_set_is_named(catalog: Path, tmp_path: Path) -> None:
    source = {"kind": "catalog", "path": str(catalog), "headers_env": {"X-Api-Key": "NOT_SET_42"}}
    with pytest.raises(ConfigError, match=r"variable NOT_SET_42 \(for header X-Api-Key\)"):
        plan_build(parse_config(scene_config(catalog, tmp_path / "ds", sources=source)))


def test_a_signer_that_cannot_be_imported_is_named(catalog: Path, tmp_path: Path) -> None:
    source = {"kind": "catalog", "path": str(catalog), "sign": "no_such_pkg.signing:sign"}
    with pytest.raises(ConfigError, match=r"sources\.sign: cannot import 'no_such_pkg"):
        plan_build(parse_config(scene_config(catalog, tmp_path / "ds", sources=source)))


def test_workers_get_the_gdal_defaults_merged_with_the_config(
    catalog: Path, tmp_path: Path
) -> None:
    from geochip.core.env import DEFAULTS

    cfg = scene_config(catalog, tmp_path / "ds", engine={"gdal": {"GDAL_HTTP_TIMEOUT": 5}})
    config = parse_config(cfg)
    task = next(
        iter(_batch_tasks(tmp_path, plan_build(config), config, "f", "u4", 0, False, 1, {0}))
    )
    assert task.gdal == {**DEFAULTS, "GDAL_HTTP_TIMEOUT": "5", "GDAL_CACHEMAX": 256}
    from geochip.core.env import probe_gdal

    seen = probe_gdal(task.gdal, ["GDAL_HTTP_TIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME"])
    assert {k: str(v) for k, v in seen.items()} == {
        "GDAL_HTTP_TIMEOUT": "5",
        "GDAL_HTTP_LOW_SPEED_TIME": "20",
    }


# --------------------------------------------------------------------------- label rasters


def _label(tmp: Path, shift_x: float) -> tuple[Path, np.ndarray, GeoBox]:
    grid = scene_grid(0, 64)
    shifted = GeoBox(grid.shape, Affine.translation(shift_x, 0) * grid.affine, grid.crs)
    values = np.random.default_rng(5).integers(1, 4, (64, 64)).astype("uint8")
    path = make_cog(tmp / "label.tif", shifted, data=values, dtype="uint8", nodata=None)
    return path, values, grid


def _label_config(catalog: Path, tmp: Path, path: Path, **labels: Any) -> dict[str, Any]:
    return scene_config(
        catalog,
        tmp / "ds",
        sources={"kind": "catalog", "path": str(catalog), "ids": ["scene-0"]},
        labels={"kind": "raster", "path": str(path), **labels},
        chips={"size": 16},
        split={"method": "none"},
    )


def test_a_label_raster_on_the_grid_is_the_mask(catalog: Path, tmp_path: Path) -> None:
    path, values, _ = _label(tmp_path, 0.0)
    store = open_store(build(parse_config(_label_config(catalog, tmp_path, path))).path)
    for row in store.index.itertuples():
        _, mask = store.read(row.index)
        np.testing.assert_array_equal(mask, values[row.row : row.row + 16, row.col : row.col + 16])


def test_a_label_raster_off_the_grid_is_refused_with_the_offset(
    catalog: Path, tmp_path: Path
) -> None:
    path, _, _ = _label(tmp_path, 7.0)
    with pytest.raises(GridMismatchError, match=r"0 rows, 0\.7 columns off"):
        plan_build(parse_config(_label_config(catalog, tmp_path, path)))


def test_a_label_raster_off_the_grid_is_reprojected_with_nearest_when_asked(
    catalog: Path, tmp_path: Path
) -> None:
    path, values, grid = _label(tmp_path, 7.0)  # 0.7 px east
    cfg = _label_config(catalog, tmp_path, path, on_mismatch="reproject", classes={1: 1, 2: 2})
    store = open_store(build(parse_config(cfg), progress=False).path)
    expected = np.full((64, 64), 255, dtype="uint8")
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            expected,
            dst_transform=grid.affine,
            dst_crs=src.crs,
            dst_nodata=255,
            resampling=rasterio.warp.Resampling.nearest,
        )
    # pixel centres fall 0.3 px into the label pixel to their west; the first column's
    # centre lies west of the label
    np.testing.assert_array_equal(expected[:, 1:], values[:, :-1])
    assert (expected[:, 0] == 255).all()
    expected[expected == 3] = MASK_IGNORE  # not in the class map
    for row in store.index.itertuples():
        _, mask = store.read(row.index)
        np.testing.assert_array_equal(
            mask, expected[row.row : row.row + 16, row.col : row.col + 16]
        )


# --------------------------------------------------------------------------- scaling


def test_scaling_a_scene_gives_float32_with_nan_for_nodata(catalog: Path, tmp_path: Path) -> None:
    cfg = scene_config(
        catalog,
        tmp_path / "ds",
        scale={"scale": 1e-7, "offset": {"b2": -1.0}},
        chips={"size": 32, "edge": "pad"},
        split={"method": "none"},
    )
    store = open_store(build(parse_config(cfg), progress=False).path)
    assert store.image.dtype == "float32" and store.manifest["image"]["nodata"] == "nan"
    for row in store.index.itertuples():
        folder = catalog.parent.parent / row.grid_id
        image, _ = store.read(row.index)
        for k, (band, offset) in enumerate((("b1", 0.0), ("b2", -1.0))):
            with rasterio.open(folder / f"{band}.tif") as src:
                raw = src.read(
                    1,
                    window=((row.row, row.row + 32), (row.col, row.col + 32)),
                    boundless=True,
                    fill_value=0,
                )
            expected = raw.astype("float32") * np.float32(1e-7) + np.float32(offset)
            expected[raw == 0] = np.nan  # nodata, and the padding past the grid
            np.testing.assert_allclose(image[k], expected, rtol=1e-6, equal_nan=True)


def test_scaling_bands_without_raster_scale_needs_the_numbers(
    catalog: Path, tmp_path: Path
) -> None:
    cfg = scene_config(catalog, tmp_path / "ds", scale={"clip": [0, 1]})
    with pytest.raises(ConfigError, match=r"scale\.scale: bands \['b1', 'b2'\] of grid scene-0"):
        plan_build(parse_config(cfg))

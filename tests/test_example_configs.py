"""The example configs for public STAC APIs (``examples/stac-apis/earth-search-s2.yaml``,
``examples/stac-apis/planetary-computer-s2.yaml``; not in ``examples/*.yaml``, which the
tests build on the sample data) have the right shape, checked offline: they validate, their
band, reference-band and SCL names resolve against items of the same form as the
real catalogs' (:mod:`geochip.testing.eo_items`: the Planetary Computer's asset keys
``B04``/``SCL``; Earth Search v1 names the same assets ``red``/``scl``), and each builds a
chip dataset end to end from such items served by a STAC API on loopback, the Planetary
Computer's through its signer (the files answer 403 to an unsigned read).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.windows import from_bounds

from geochip.builder.catalog import resolve_items
from geochip.builder.config import load_config, parse_config
from geochip.builder.run import build
from geochip.core.bands import resolve_asset
from geochip.store.reader import open_store
from geochip.testing import make_cog
from geochip.testing.eo_items import sentinel2_l2a_item
from geochip.testing.rustac import RustacServer
from geochip.testing.signing import TOKEN_ENV
from geochip.testing.stac_api import StacApiServer

ROOT = Path(__file__).parents[1]
EARTH_SEARCH = ROOT / "examples" / "stac-apis" / "earth-search-s2.yaml"
PLANETARY = ROOT / "examples" / "stac-apis" / "planetary-computer-s2.yaml"
#: Earth Search v1's asset keys for the Planetary Computer's (the same files).
ES_KEYS = {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir", "SCL": "scl"}
SIG = "Pl4ntedExampleSig"
#: (date, eo:cloud_cover): the configs keep June-August 2024, cloud <= 20, the first two.
SCENES = [("2024-05-20", 3.0), ("2024-06-10", 5.0), ("2024-07-02", 60.0), ("2024-07-15", 12.0)]
KEPT = ["2024-06-10", "2024-07-15"]


def _earth_search(item: dict[str, Any]) -> dict[str, Any]:
    """A Planetary-Computer-like item as Earth Search v1 publishes it: assets by common name."""
    out = copy.deepcopy(item)
    out["assets"] = {ES_KEYS[key]: asset for key, asset in item["assets"].items()}
    return out


def _items(
    form: str, hrefs: dict[str, str] | None = None, grid: GeoBox | None = None
) -> list[dict[str, Any]]:
    """Items of ``form`` over the configs' bbox (Brussels); with ``grid``, their assets carry
    ``proj:shape``/``proj:transform`` as the real catalogs' do (SCL at 20 m)."""
    bounds = (4.25, 50.75, 4.5, 50.95)
    items = [
        sentinel2_l2a_item("31UES", bounds, when, cloud, hrefs=hrefs) for when, cloud in SCENES
    ]
    for item in items if grid is not None else []:
        for key, asset in item["assets"].items():
            g = grid.zoom_to(resolution=20) if key == "SCL" else grid
            asset["proj:shape"] = list(g.shape.yx)
            asset["proj:transform"] = list(g.transform)[:6]
    return [_earth_search(i) for i in items] if form == "earth-search" else items


CASES = {"earth-search": EARTH_SEARCH, "planetary-computer": PLANETARY}


@pytest.mark.parametrize("form", CASES)
def test_the_configs_names_resolve_against_items_of_their_catalog(form: str) -> None:
    config = load_config(CASES[form])
    assert config.sources.kind == "catalog"
    assert config.sources.collections == ["sentinel-2-l2a"]
    with RustacServer(_items(form)) as api:
        data = config.model_dump(mode="json")
        data["sources"]["path"] = api.url
        data["sources"]["sign"] = None  # planetary_computer is not installed here
        items = resolve_items(parse_config(data))
    assert [i.datetime.date().isoformat() for i in items] == KEPT  # type: ignore[union-attr]
    names = [*config.bands.names, config.grid.reference_band, config.masks.band]  # type: ignore[union-attr]
    keys = [ES_KEYS[k] for k in ("B04", "B03", "B02", "B08", "B04", "SCL")]
    if form == "planetary-computer":
        keys = ["B04", "B03", "B02", "B08", "B04", "SCL"]
    for item in items:
        assert [resolve_asset(item, str(name)) for name in names] == keys


def test_the_planetary_computer_config_signs_with_planetary_computer() -> None:
    assert load_config(PLANETARY).sources.sign == "planetary_computer:sign"  # type: ignore[union-attr]
    assert load_config(EARTH_SEARCH).sources.sign is None  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeoBox]:
    """Four 10 m bands and a 20 m SCL band over Brussels (UTM 31N); SCL is 4 (vegetation)
    except a high-cloud box (9) in the top-left corner."""
    root = tmp_path_factory.mktemp("s2")
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(4.375, 50.85)
    x, y = round(x, -1), round(y, -1)
    grid = GeoBox.from_bbox((x - 5120, y - 5120, x + 5120, y + 5120), "EPSG:32631", resolution=10)
    for n, key in enumerate(["B02", "B03", "B04", "B08"]):
        make_cog(root / f"{key}.tif", grid, seed=n, pattern="random", nodata=0)
    scl = np.full((1, 512, 512), 4, np.uint8)
    scl[0, :64, :64] = 9
    make_cog(root / "SCL.tif", grid.zoom_to(resolution=20), dtype="uint8", data=scl)
    return root, grid


@pytest.mark.parametrize("proj", [True, False], ids=["proj", "no-proj"])
@pytest.mark.parametrize("form", CASES)
def test_each_config_builds_from_items_of_its_catalog_on_loopback(
    form: str,
    proj: bool,
    files: tuple[Path, GeoBox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, grid = files
    signed = form == "planetary-computer"
    monkeypatch.setenv(TOKEN_ENV, SIG)
    with StacApiServer(files_root=root, file_token=SIG if signed else None) as api:
        hrefs = {key: api.file_url(root / f"{key}.tif") for key in ES_KEYS}
        # without proj:shape/transform the grid comes from the reference band's header,
        # read through the catalog's signer (a signed catalog refuses unsigned reads)
        api.state.items = _items(form, hrefs, grid if proj else None)
        data = load_config(CASES[form]).model_dump(mode="json")
        data["sources"]["path"] = api.url
        if signed:  # the same hook as planetary_computer.sign, offline
            data["sources"]["sign"] = "geochip.testing.signing:sign"
        data["output"]["path"] = str(tmp_path / "ds")
        result = build(parse_config(data), progress=False)
    assert result.ok, result.failed[:1]
    store = open_store(result.path)
    assert store.image.shape[1:] == (4, 256, 256)
    index = store.index
    kept = [i["id"] for i in _items(form) if i["properties"]["datetime"][:10] in KEPT]
    assert sorted(set(index["grid_id"])) == kept
    # the first chip equals a plain rasterio read of the red band (the config's first channel)
    # where the SCL says clear, and is nodata (0) under the cloud box
    row = index[(index["row"] == 0) & (index["col"] == 0)].iloc[0]  # top-left chip
    with rasterio.open(root / "B04.tif") as src:
        window = from_bounds(row.minx, row.miny, row.maxx, row.maxy, transform=src.transform)
        red = src.read(1, window=window.round_offsets().round_lengths())
    chip = store.image[int(row["index"])][0]
    cloud = np.zeros(chip.shape, bool)
    cloud[:128, :128] = True  # SCL's 64 x 64 px at 20 m
    assert (chip[cloud] == 0).all()
    np.testing.assert_array_equal(chip[~cloud], red[~cloud])

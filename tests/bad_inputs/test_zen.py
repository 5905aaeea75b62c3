"""zen3geo code on geochip.compat.zen3geo: what users get wrong, refused by name."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pystac
import pytest
import shapely
import xarray as xr

from geochip.compat.zen3geo import Canvas, IterableWrapper
from geochip.errors import InputError

ARRAY = xr.DataArray(np.zeros((1, 32, 32)), dims=["band", "y", "x"])


def _canvas(crs: str | None = "EPSG:32631") -> Canvas:
    canvas = Canvas(plot_width=4, plot_height=4, x_range=(0.0, 4.0), y_range=(0.0, 4.0))
    canvas.crs = crs
    return canvas


def test_a_window_on_a_dimension_the_data_lacks() -> None:
    dp = IterableWrapper([ARRAY]).slice_with_xbatcher(input_dims={"lat": 8, "lon": 8})
    with pytest.raises(InputError, match=r"input_dims names 'lat', which the data does not"):
        list(dp)


def test_a_window_larger_than_the_data() -> None:
    dp = IterableWrapper([ARRAY]).slice_with_xbatcher(input_dims={"y": 64, "x": 8})
    with pytest.raises(InputError, match=r"input_dims\['y'\] = 64 must be between 1 and"):
        len(dp)


def test_an_overlap_as_large_as_the_window() -> None:
    dp = IterableWrapper([ARRAY]).slice_with_xbatcher(
        input_dims={"y": 8, "x": 8}, input_overlap={"y": 8}
    )
    with pytest.raises(InputError, match=r"input_overlap\['y'\] = 8 must be at least 0 and less"):
        list(dp)


def test_xbatcher_options_not_supported() -> None:
    with pytest.raises(InputError, match="slice_with_xbatcher does not take concat_input_dims"):
        IterableWrapper([ARRAY]).slice_with_xbatcher(
            input_dims={"y": 8, "x": 8}, concat_input_dims=True
        )


def test_a_batch_of_zero() -> None:
    with pytest.raises(InputError, match="batch_size must be at least 1, got 0"):
        IterableWrapper(range(3)).batch(0)


def test_stackstac_options_not_supported() -> None:
    with pytest.raises(InputError, match="stack_stac_items does not take rescale, xy_coords"):
        IterableWrapper([]).stack_stac_items(rescale=False, xy_coords="center")


def test_the_xpystac_engine() -> None:
    with pytest.raises(InputError, match=r"read_from_xpystac\(engine='stac'\) needs xpystac"):
        IterableWrapper([pystac.Asset("x.zarr")]).read_from_xpystac()


def test_a_vector_without_crs() -> None:
    vector = gpd.GeoSeries([shapely.box(0, 0, 2, 2)])
    dp = IterableWrapper([_canvas()]).rasterize_with_datashader(IterableWrapper([vector]))
    with pytest.raises(InputError, match=r"has no crs; set it, e.g. vector = vector.set_crs"):
        list(dp)


def test_a_canvas_without_crs() -> None:
    vector = gpd.GeoSeries([shapely.box(0, 0, 2, 2)], crs=32631)
    dp = IterableWrapper([_canvas(None)]).rasterize_with_datashader(IterableWrapper([vector]))
    with pytest.raises(InputError, match=r"has no crs; set it, e.g. canvas.crs = 'OGC:CRS84'"):
        list(dp)


def test_mixed_geometry_types() -> None:
    vector = gpd.GeoSeries([shapely.box(0, 0, 2, 2), shapely.Point(1, 1)], crs=32631)
    dp = IterableWrapper([_canvas()]).rasterize_with_datashader(IterableWrapper([vector]))
    with pytest.raises(InputError, match=r"unsupported geometry type\(s\) \['Point', 'Polygon'\]"):
        list(dp)


def test_two_vectors_to_clip() -> None:
    vector = gpd.GeoSeries([shapely.box(0, 0, 2, 2)], crs=32631)
    with pytest.raises(InputError, match="clip_vector_with_rectangle takes one vector, got 2"):
        IterableWrapper([vector, vector]).clip_vector_with_rectangle(IterableWrapper([ARRAY]))


def test_a_torchdata_verb_that_is_not_here() -> None:
    with pytest.raises(AttributeError, match="no attribute 'demux'; the DataPipe verbs here are"):
        IterableWrapper(range(3)).demux(2, lambda x: x % 2)


def test_importing_without_torch_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import geochip.compat.zen3geo\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "MissingExtraError torch is needed for this; install it with: pip install 'geochip[torch]'"
    )

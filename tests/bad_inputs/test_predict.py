"""Bad input to ``geochip predict`` / ``geochip.predict`` and ``geochip retile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from odc.geo.geobox import GeoBox

from geochip import predict
from geochip.errors import BandNotFoundError, InputError, ModelError
from geochip.testing import make_cog


def _scene(tmp_path: Path, **kwargs: object) -> Path:
    gbox = GeoBox.from_bbox((500_000, 0, 502_560, 2_560), "EPSG:32633", resolution=10)
    return make_cog(tmp_path / "scene.tif", gbox, bands=2, tile=128, **kwargs)  # type: ignore[arg-type]


def _model_file(tmp_path: Path) -> Path:
    net = torch.nn.Conv2d(2, 3, 1)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.zeros(2, 2, 128, 128),), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    return path


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.stem)
                  or p.name.startswith(f".{out.name}"))  # fmt: skip


def test_a_model_whose_output_has_the_wrong_size(tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    with pytest.raises(ModelError, match=r"returned shape \(8, 1, 127, 128\) for input"):
        predict(lambda x: x[:, :1, :-1], _scene(tmp_path), out, chip=128)
    assert _leftovers(out) == []


def test_a_model_with_more_channels_than_classes_named(tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    with pytest.raises(ModelError, match="returned 2 channels; 3 classes were named"):
        predict(lambda x: x, _scene(tmp_path), out, chip=128, classes=["a", "b", "c"])
    assert _leftovers(out) == []


def test_a_source_without_the_bands_the_model_expects(tmp_path: Path) -> None:
    with pytest.raises(BandNotFoundError, match="no band or asset named 'red', 'nir'; it has"):
        predict(lambda x: x, _scene(tmp_path), tmp_path / "o.tif", bands=["red", "nir"])


def test_a_model_that_needs_other_bands(tmp_path: Path) -> None:
    net = torch.nn.Conv2d(4, 3, 1)  # trained on 4 bands; the scene has 2
    with pytest.raises(ModelError, match=r"failed on a batch of shape \(\d+, 2, 128, 128\)"):
        predict(net, _scene(tmp_path), tmp_path / "o.tif", chip=128)


def test_a_border_the_overlap_cannot_cover(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="border must be >= 0 and at most"):
        predict(lambda x: x, _scene(tmp_path), tmp_path / "o.tif", overlap=16, border=8)


def test_an_output_that_exists_is_refused(refuse, tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    out.write_bytes(b"mine")
    refuse("predict", str(_model_file(tmp_path)), str(_scene(tmp_path)), "--out", str(out),
           "--chip", "128", error="OutputExistsError", message="o.tif exists; pass",
           outputs=[tmp_path / "o.json", tmp_path / ".o.tif.predict"])  # fmt: skip
    assert out.read_bytes() == b"mine"


def test_a_raster_without_crs(refuse, tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2,
                       dtype="uint16") as dst:  # fmt: skip
        dst.write(np.ones((2, 64, 64), dtype="uint16"))
    out = tmp_path / "o.tif"
    refuse("predict", str(_model_file(tmp_path)), str(path), "--out", str(out),
           error="MissingGeoreferenceError", message="nocrs.tif: the raster has no CRS",
           outputs=[out, tmp_path / "o.json", tmp_path / ".o.tif.predict"])  # fmt: skip


def test_a_file_that_is_not_a_model(refuse, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_text("not a model")
    out = tmp_path / "o.tif"
    refuse("predict", str(model), str(_scene(tmp_path)), "--out", str(out),
           error="ModelError", message="not a TorchScript archive",
           outputs=[out, tmp_path / "o.json"])  # fmt: skip


def test_an_unreadable_window_fails_its_strips(refuse, tmp_path: Path) -> None:
    scene = _scene(tmp_path, compress="deflate", pattern="random")
    with rasterio.open(scene) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(scene, "r+b") as f:  # a tile in the middle of the file, garbled
        f.seek(offset)
        f.write(bytes(size))
    out = tmp_path / "o.tif"
    refuse("predict", str(_model_file(tmp_path)), str(scene), "--out", str(out), "--chip",
           "128", "--overlap", "0", "--tile", "128", error="PredictFailedError",
           message="strip(s) of 128 rows could not be computed (rows 128)", status=3,
           outputs=[out, tmp_path / "o.json"])  # fmt: skip


def test_float16_probabilities_need_a_newer_gdal(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="float16 probabilities need GDAL >= 3.11"):
        predict(lambda x: x, _scene(tmp_path), tmp_path / "o.tif", output="probabilities",
                probability_dtype="float16")  # fmt: skip


def test_retile_with_a_tile_that_does_not_divide_into_patches(refuse, tmp_path: Path) -> None:
    refuse("retile", str(_scene(tmp_path)), "--tile", "160", "--patch", "64", "--out",
           str(tmp_path / "tiles"), error="InputError", message="use 128 or 192",
           outputs=[tmp_path / "tiles"])  # fmt: skip

"""Where predict's results go: strips in a state folder, then one Cloud-Optimized GeoTIFF.

Finished rows of the output are written as *strips* (one output tile high, the raster's
width; a small tiled GeoTIFF per strip and per output kind) into a hidden state folder
beside the output, ``.<name>.predict/``, each strip atomically, its checksum recorded in
``state.json`` (written atomically after every strip). When every strip is there, a VRT
of the strips is copied by GDAL's COG driver (overviews: ``MODE`` for class maps,
``AVERAGE`` for probabilities) into a temporary file that is renamed onto the output's
name (:mod:`geochip.core.files`): the output appears complete or not at all. A run that
was killed resumes from the strips whose checksums check out; the COG is made from the
strips' pixels only, so it is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from odc.geo.geobox import GeoBox

from ..core.files import atomic_path, atomic_write_text, sha256_file
from ..errors import MissingGeoreferenceError

__all__ = ["Layer", "StripStore", "crs_wkt", "state_dir"]

STATE_VERSION = 1


@dataclass(frozen=True)
class Layer:
    """One output file: its path, dtype, nodata, band names, scale, overview resampling."""

    kind: str  # "classes" or "probabilities"
    path: Path
    dtype: str
    nodata: float
    bands: tuple[str, ...]
    scale: float = 1.0
    resampling: str = "MODE"


def crs_wkt(geobox: GeoBox) -> str:
    """The grid's CRS as WKT (a grid without a CRS cannot be written georeferenced)."""
    if geobox.crs is None:
        raise MissingGeoreferenceError(
            "the grid has no CRS; give the raster one (gdal_edit.py -a_srs)"
        )
    return str(geobox.crs.to_wkt())


def state_dir(out: Path) -> Path:
    """The hidden folder that holds a run's strips and state beside ``out``."""
    return out.parent / f".{out.name}.predict"


class StripStore:
    """Strips of one prediction (see the module docstring)."""

    def __init__(
        self, out: Path, geobox: GeoBox, layers: list[Layer], tile: int, fingerprint: str
    ) -> None:
        self.out = out
        self.geobox = geobox
        self.layers = layers
        self.tile = tile
        self.fingerprint = fingerprint
        self.dir = state_dir(out)
        self.height, self.width = (int(v) for v in geobox.shape.yx)
        self.n_strips = -(-self.height // tile)
        self.done: dict[int, dict[str, str]] = {}
        self.failed: dict[int, str] = {}

    # -- state -------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.dir / "state.json"

    def open(self) -> set[int]:
        """Start or resume: the strips already done (their files check out)."""
        state: dict[str, Any] = {}
        try:
            state = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("fingerprint") != self.fingerprint or state.get("version") != STATE_VERSION:
            shutil.rmtree(self.dir, ignore_errors=True)
            state = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob(".*.partial"):
            leftover.unlink(missing_ok=True)
        for key, sums in (state.get("strips") or {}).items():
            k = int(key)
            if all(sha256_file(self._strip_path(k, kind)) == s for kind, s in sums.items()):
                self.done[k] = dict(sums)
        self._save()
        return set(self.done)

    def _save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "strips": {str(k): v for k, v in sorted(self.done.items())},
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
        }
        atomic_write_text(self._state_path(), json.dumps(state, indent=1, sort_keys=True))

    def _strip_path(self, k: int, kind: str) -> Path:
        return self.dir / f"strip-{k:05d}.{kind}.tif"

    # -- strips ------------------------------------------------------------------------
    def strip_rows(self, k: int) -> tuple[int, int]:
        """Grid rows [start, stop) of strip k."""
        return k * self.tile, min((k + 1) * self.tile, self.height)

    def write_strip(self, k: int, arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Write strip k (one (bands, rows, width) array per layer kind) and record it."""
        r0, r1 = self.strip_rows(k)
        affine = self.geobox.affine * Affine.translation(0, r0)
        sums = {}
        for layer in self.layers:
            data = arrays[layer.kind]
            path = self._strip_path(k, layer.kind)
            profile = {
                "driver": "GTiff",
                "width": self.width,
                "height": r1 - r0,
                "count": data.shape[0],
                "dtype": layer.dtype,
                "crs": crs_wkt(self.geobox),
                "transform": affine,
                "nodata": layer.nodata,
                "tiled": True,
                "blockxsize": self.tile,
                "blockysize": self.tile,
                "compress": "deflate",
                "zlevel": 1,
            }
            with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                dst.write(data)
            sums[layer.kind] = sha256_file(path) or ""
        self.done[k] = sums
        self.failed.pop(k, None)
        self._save()

    def record_failed(self, k: int, why: str) -> None:
        """Record strip k as failed (a window it needs could not be read)."""
        self.failed[k] = why
        self._save()

    # -- the result --------------------------------------------------------------------
    def _vrt(self, layer: Layer) -> str:
        a = self.geobox.affine
        bands = []
        for b, name in enumerate(layer.bands, start=1):
            sources = []
            for k in range(self.n_strips):
                r0, r1 = self.strip_rows(k)
                sources.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="1">'
                    f"{escape(self._strip_path(k, layer.kind).name)}</SourceFilename>"
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{self.width}" ySize="{r1 - r0}"/>'
                    f'<DstRect xOff="0" yOff="{r0}" xSize="{self.width}" ySize="{r1 - r0}"/>'
                    "</SimpleSource>"
                )
            gdal_type = {"uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}[layer.dtype]
            nodata = "nan" if np.isnan(layer.nodata) else repr(layer.nodata)
            scale = f"<Scale>{layer.scale!r}</Scale>" if layer.scale != 1.0 else ""
            bands.append(
                f'<VRTRasterBand dataType="{gdal_type}" band="{b}">'
                f"<Description>{escape(name)}</Description><NoDataValue>{nodata}</NoDataValue>"
                f"{scale}{''.join(sources)}</VRTRasterBand>"
            )
        geo = ", ".join(repr(v) for v in (a.c, a.a, a.b, a.f, a.d, a.e))
        return (
            f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">'
            f"<SRS>{escape(crs_wkt(self.geobox))}</SRS><GeoTransform>{geo}</GeoTransform>"
            f"{''.join(bands)}</VRTDataset>"
        )

    def finish(self, overwrite: bool) -> None:
        """Copy the strips into each layer's COG (atomically) once all are done."""
        for layer in self.layers:
            vrt = self.dir / f"{layer.kind}.vrt"
            atomic_write_text(vrt, self._vrt(layer))
            if overwrite and layer.path.is_dir():
                shutil.rmtree(layer.path)
            with atomic_path(layer.path) as tmp:
                rasterio.shutil.copy(
                    str(vrt),
                    str(tmp),
                    driver="COG",
                    BLOCKSIZE=str(self.tile),
                    COMPRESS="DEFLATE",
                    LEVEL="6",
                    PREDICTOR="YES" if layer.dtype == "float32" else "NO",
                    OVERVIEW_RESAMPLING=layer.resampling,
                    BIGTIFF="IF_SAFER",
                    NUM_THREADS="2",
                )

    def remove(self) -> None:
        """Remove the state folder (after the result and its item are written)."""
        shutil.rmtree(self.dir, ignore_errors=True)

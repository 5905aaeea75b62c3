"""``geochip.predict``: a trained model applied to whole scenes, into a COG.

The pipeline: a reader thread reads the planned windows (the streaming path: read-ahead,
COG tiles decoded once and shared by overlapping windows) and groups them into batches; a
bounded queue hands the batches to the model (on the calling thread, on its device); a
second bounded queue hands probabilities to a blending thread
(:class:`~geochip.inference.blend.Blender`) that writes finished strips
(:class:`~geochip.inference.writer.StripStore`). Memory is set by the chip size, the batch
size and the overlap, not by the raster. Windows that are all nodata are not given to the
model; their pixels are nodata in the output.

Batches are a fixed partition of the windows in row-major order (window ``g`` is in batch
``g // batch_size``), so a resumed run gives the model the same batches as an
uninterrupted one, and the result is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from odc.geo.geobox import GeoBox

from .._version import __version__
from ..core.env import GdalEnv
from ..core.files import output_file, remove_stale_partials
from ..core.storage import check_writable, exists, is_url, join, local_path, parent
from ..errors import InputError, OutputExistsError, PredictFailedError, RasterReadError
from ..sources.sample import cache_dir
from .blend import Blender, OutputSpec
from .item import finished, item_location, item_path, write_item
from .model import (
    Activation,
    ModelRunner,
    Normalization,
    load_model,
    model_checksum,
    normalization_from_store,
)
from .sources import WindowSource, resolve_sources
from .windows import WindowPlan, plan_windows
from .writer import Layer, StripStore, crs_wkt, state_dir

__all__ = ["PredictResult", "predict"]

log = logging.getLogger(__name__)

Output = Literal["classes", "probabilities", "both"]
ProbabilityDtype = Literal["float32", "float16", "uint8"]

_END = object()


@dataclass
class PredictResult:
    """What :func:`predict` wrote: the output files (COGs) and their STAC items, and how
    many windows were planned, given to the model, skipped (all nodata) or resumed."""

    paths: list[Path] = field(default_factory=list)
    items: list[Path] = field(default_factory=list)
    #: outputs written to object storage (``s3://...``): the COGs, then their items
    urls: list[str] = field(default_factory=list)
    windows: int = 0
    model_windows: int = 0
    model_calls: int = 0
    skipped: int = 0
    resumed_strips: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def path(self) -> Path:
        """The first output (the class map, when one was asked for)."""
        return self.paths[0]


def _nodata_mask(pixels: npt.NDArray[Any], nodata: float | int | None) -> npt.NDArray[np.bool_]:
    """(h, w) True where any band is nodata (or NaN)."""
    bad = np.zeros(pixels.shape[1:], dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        bad |= (pixels == nodata).any(axis=0)
    if pixels.dtype.kind == "f":
        bad |= np.isnan(pixels).any(axis=0)
    return bad


def _layers(
    out: Path, output: Output, classes: Sequence[str] | None, k: int | None, prob: str
) -> tuple[list[Layer], OutputSpec]:
    if output not in ("classes", "probabilities", "both"):
        raise InputError(f"output must be classes, probabilities or both, got {output!r}")
    if prob not in ("float32", "float16", "uint8"):
        raise InputError(f"probabilities dtype must be float32, float16 or uint8, got {prob!r}")
    if prob == "float16":
        raise InputError(
            "float16 probabilities need GDAL >= 3.11 (this one cannot write Float16 GeoTIFFs); "
            "use probability_dtype='uint8' (scaled by 254) or 'float32'"
        )
    n = len(classes) if classes is not None else (k or 1)
    names = tuple(classes) if classes is not None else tuple(f"class_{i}" for i in range(n))
    class_dtype = "uint8" if n < 255 else "uint16"
    class_nodata = 255 if class_dtype == "uint8" else 65535
    layers = []
    if output in ("classes", "both"):
        layers.append(Layer("classes", out, class_dtype, float(class_nodata), ("class",)))
    if output in ("probabilities", "both"):
        path = out if output == "probabilities" else out.with_name(f"{out.stem}-probabilities.tif")
        layers.append(
            Layer(
                "probabilities",
                path,
                prob,
                float("nan") if prob == "float32" else 255.0,
                names[:k] if k else names,
                scale=1.0 if prob == "float32" else 1 / 254,
                resampling="AVERAGE",
            )
        )
    spec = OutputSpec(
        classes=output in ("classes", "both"),
        probabilities=output in ("probabilities", "both"),
        class_dtype=class_dtype,
        class_nodata=class_nodata,
        prob_dtype=prob,
    )
    return layers, spec


def _batches(
    source: WindowSource,
    plan: WindowPlan,
    first: int,
    batch_size: int,
    threads: int | None,
) -> Iterator[list[tuple[int, npt.NDArray[Any] | RasterReadError]]]:
    """Batches (lists of ``(global window index, pixels or error)``) from window ``first``
    (a multiple of the batch size) to the end."""
    ncols = len(plan.cols)
    windows = [plan.window(g // ncols, g % ncols) for g in range(first, len(plan))]
    batch: list[tuple[int, npt.NDArray[Any] | RasterReadError]] = []
    for pos, pixels in source.read(windows, threads):
        batch.append((first + pos, pixels))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Worker(threading.Thread):
    """A thread whose error is re-raised by :meth:`check`."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as err:  # handed to the main thread
            self.error = err


def _check(*workers: _Worker) -> None:
    for worker in workers:
        if worker.error is not None:
            raise worker.error


def _put(q: queue.Queue[Any], value: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _fingerprint(source: WindowSource, options: Mapping[str, Any], checksum: str | None) -> str:
    data = {
        "source": source.id,
        "inputs": list(source.inputs),
        "grid": [crs_wkt(source.geobox), list(source.geobox.affine)[:6],
                 list(source.geobox.shape.yx)],
        "options": dict(options),
        "model": checksum,
        "geochip": __version__,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _predict_one(
    runner: ModelRunner,
    source: WindowSource,
    out: Path,
    *,
    options: dict[str, Any],
    checksum: str | None,
    model_href: str | None,
    classes: Sequence[str] | None,
    output: Output,
    prob_dtype: str,
    tile: int,
    threads: int | None,
    overwrite: bool,
    result: PredictResult,
    on_window: Callable[[int, int], None] | None = None,
) -> None:
    chip, overlap, border = options["chip"], options["overlap"], options["border"]
    batch_size = options["batch_size"]
    height, width = (int(v) for v in source.geobox.shape.yx)
    plan = plan_windows((height, width), chip, overlap=overlap, border=border)
    fingerprint = _fingerprint(source, options, checksum)
    k = len(classes) if classes is not None else None
    layers, spec = _layers(out, output, classes, k, prob_dtype)
    for path in (*(layer.path for layer in layers), item_path(out)):
        remove_stale_partials(path)  # what a killed run was writing
    ours = _state_matches(out, fingerprint)
    existing = [layer.path for layer in layers if layer.path.exists()]
    if existing and not overwrite and not ours and checksum and finished(out, fingerprint):
        # the same job (same source, options and model weights) ran to the end, e.g. killed
        # after its last write: nothing to do. A plain callable has no checksum: refused.
        shutil.rmtree(state_dir(out), ignore_errors=True)
        result.paths += [layer.path for layer in layers]
        result.items.append(item_path(out))
        return
    if existing and not overwrite and not ours:
        raise OutputExistsError(
            f"{existing[0]} exists; pass overwrite=True (--overwrite) to replace it, or "
            "choose another output path"
        )
    ncols = len(plan.cols)
    before = result.windows  # the windows of earlier sources (progress counts all)
    result.windows += len(plan)
    nodata = source.nodata
    # the number of output channels is known after the first batch: the store is made then
    store: StripStore | None = None
    done: set[int] = set()
    if ours or not existing:
        probe = StripStore(out, source.geobox, layers, tile, fingerprint)
        done = probe.open() if state_dir(out).exists() else set()
    n_strips = -(-height // tile)
    first_strip = min(set(range(n_strips)) - done, default=n_strips)
    result.resumed_strips += len(done)
    start_row = next(
        (r for r, y in enumerate(plan.rows) if y + chip > first_strip * tile), len(plan.rows)
    )
    first = (start_row * ncols // batch_size) * batch_size
    processed = first  # windows before the resumed rows count as done
    failed: dict[int, str] = {}

    stop = threading.Event()
    to_model: queue.Queue[Any] = queue.Queue(maxsize=2)
    to_blend: queue.Queue[Any] = queue.Queue(maxsize=2)
    state: dict[str, Any] = {}

    def read() -> None:
        for batch in _batches(source, plan, first, batch_size, threads):
            if not _put(to_model, batch, stop):
                return
        _put(to_model, _END, stop)

    def on_strip(k_: int, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        assert store is not None
        if k_ in done:
            return
        r0, r1 = store.strip_rows(k_)
        bad = [why for (y0, why) in state["bad_windows"] if y0 < r1 and y0 + chip > r0]
        if bad:
            failed[k_] = bad[0]
            store.record_failed(k_, bad[0])
            return
        store.write_strip(k_, arrays)

    def blend() -> None:
        blender: Blender | None = None
        while True:
            try:
                item = to_blend.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _END:
                return
            if blender is None:
                blender = Blender(plan, state["k"], spec, tile, on_strip, start_row)
            g, probs, valid = item
            blender.add(g // ncols, g % ncols, probs, valid)

    state["bad_windows"] = []
    reader = _Worker(read, "geochip-predict-read")
    blender_thread = _Worker(blend, "geochip-predict-blend")
    reader.start()
    started_blend = False
    try:
        while True:
            try:
                batch = to_model.get(timeout=0.1)
            except queue.Empty:
                _check(reader, blender_thread)
                continue
            if batch is _END:
                break
            keep: list[int] = []
            masks: dict[int, npt.NDArray[np.bool_] | None] = {}
            for i, (g, pixels) in enumerate(batch):
                if isinstance(pixels, RasterReadError):
                    state["bad_windows"].append((plan.rows[g // ncols], str(pixels)))
                    masks[g] = None
                    continue
                valid = ~_nodata_mask(pixels, nodata)
                if valid.any():
                    keep.append(i)
                    masks[g] = valid
                else:
                    masks[g] = None
            probs = None
            if keep:
                stack = np.stack([batch[i][1] for i in keep])
                probs = runner(stack)
                result.model_windows += len(keep)
            result.skipped += (
                len(batch) - len(keep) - sum(isinstance(p, RasterReadError) for _, p in batch)
            )
            if store is None:
                k_out = probs.shape[1] if probs is not None else (len(classes) if classes else 1)
                layers, spec = _layers(out, output, classes, k_out, prob_dtype)
                store = StripStore(out, source.geobox, layers, tile, fingerprint)
                done = store.open()
                state["k"] = k_out
            elif probs is not None and probs.shape[1] != state["k"]:
                raise InputError(f"the model returned {probs.shape[1]} channels, then {state['k']}")
            if not started_blend:
                blender_thread.start()
                started_blend = True
            at = {batch[i][0]: j for j, i in enumerate(keep)}
            for g, _ in batch:
                if g < start_row * ncols:
                    continue  # a window before the resumed rows, read to keep batches equal
                p = probs[at[g]] if g in at and probs is not None else None
                if not _put(to_blend, (g, p, masks[g]), stop):
                    break
                if blender_thread.error is not None:
                    raise blender_thread.error
            processed += len(batch)
            if on_window is not None:
                on_window(before + processed, result.windows)
        if store is None:  # nothing was left to read: every strip was done already
            store = StripStore(out, source.geobox, layers, tile, fingerprint)
            store.open()
        if started_blend:
            _put(to_blend, _END, stop)
            blender_thread.join()
            if blender_thread.error is not None:
                raise blender_thread.error
    finally:
        stop.set()
        reader.join()
        if started_blend:
            blender_thread.join()
    result.model_calls = runner.calls
    result.model_seconds = runner.seconds
    if failed:
        rows = ", ".join(str(k_ * tile) for k_ in sorted(failed))
        raise PredictFailedError(
            f"{out}: {len(failed)} strip(s) of {tile} rows could not be computed (rows "
            f"{rows}): {next(iter(failed.values()))}; run again to retry them (finished "
            "strips are kept)"
        )
    missing = set(range(n_strips)) - set(store.done)
    if missing:
        raise PredictFailedError(f"{out}: strips {sorted(missing)} were not written")
    store.finish(overwrite=True)
    for layer in store.layers:
        result.paths.append(layer.path)
    result.items.append(
        write_item(out, source, store.layers, classes, options, checksum, model_href, fingerprint)
    )
    store.remove()


def _staging(url: str) -> Path:
    """Where a prediction to ``url`` is made before it is uploaded (its strips, state and
    finished files): a folder in geochip's cache named by a hash of the URL, so a rerun
    resumes there."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:24]
    return cache_dir() / "predict" / digest / posixpath.basename(url)


def _predict_remote(url: str, source: WindowSource, result: PredictResult, **kw: Any) -> None:
    """:func:`_predict_one` to an object-store ``url``: made in a local staging folder,
    then each COG uploaded in one ``put_file`` (GDAL cannot write a COG in place on S3;
    one PUT or a completed multipart upload appears whole or not at all), the item last. A
    rerun of a finished job (the item there, same fingerprint) has nothing to do."""
    fingerprint = _fingerprint(source, kw["options"], kw["checksum"])
    staging = _staging(url)
    layers, _ = _layers(staging, kw["output"], kw["classes"], None, kw["prob_dtype"])
    urls = [join(parent(url), layer.path.name) for layer in layers]
    if not kw["overwrite"] and kw["checksum"] and finished(url, fingerprint):
        result.urls += [*urls, item_location(url)]
        return
    if not kw["overwrite"] and not _state_matches(staging, fingerprint):
        taken = next((u for u in urls if exists(u)), None)
        if taken is not None:
            raise OutputExistsError(
                f"{taken} exists; pass overwrite=True (--overwrite) to replace it, or "
                "choose another output path"
            )
    if not _state_matches(staging, fingerprint) and not finished(staging, fingerprint):
        shutil.rmtree(staging.parent, ignore_errors=True)  # what another job left there
    before = len(result.paths)
    _predict_one(kw.pop("runner"), source, staging, result=result, **{**kw, "overwrite": False})
    made = result.paths[before:]
    del result.paths[before:], result.items[len(result.items) - 1 :]
    for path in [*made, item_path(staging)]:  # the COGs, then the item that names them
        target = join(parent(url), path.name)
        with output_file(target) as tmp:
            shutil.copyfile(path, tmp)
        result.urls.append(target)
    shutil.rmtree(staging.parent, ignore_errors=True)


def _state_matches(out: Path, fingerprint: str) -> bool:
    try:
        state = json.loads((state_dir(out) / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("fingerprint") == fingerprint)


def predict(
    model: Any,
    source: Any,
    out: str | Path,
    *,
    bands: Sequence[str | int] | None = None,
    grid: GeoBox | None = None,
    chip: int = 512,
    overlap: int = 64,
    border: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    normalize: Normalization | Mapping[str, Any] | str | Path | None = None,
    activation: Activation = "softmax",
    output: Output = "classes",
    probability_dtype: ProbabilityDtype = "float32",
    classes: Sequence[str] | None = None,
    nodata: float | None = None,
    tta: bool = False,
    tile: int = 512,
    threads: int | None = None,
    overwrite: bool = False,
    model_path: str | Path | None = None,
    env: GdalEnv | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Apply ``model`` to a whole scene (or several) and write a Cloud-Optimized GeoTIFF.

    ``model``: a ``torch.nn.Module`` or a callable on (N, C, H, W) float32 tensors giving
    (N, K, H, W) (``model_path`` names the file it came from, for the checksum).
    ``source``: a path or URL, a ``pystac.Item`` (``bands`` = asset keys or band names),
    a :class:`~geochip.read.scene.Scene`, a registry dataset from
    :func:`~geochip.registry.samples.load_inference_data` (``out`` is then a folder with
    one ``<image id>.tif`` per image) or items with a ``grid`` (a mosaic on that grid).
    Windows of ``chip`` pixels overlap by at least ``overlap`` and blend on probabilities
    (``border`` pixels cropped at inner edges); ``normalize``: ``{"mean", "std"}``, a
    :class:`~geochip.inference.model.Normalization` or a chip dataset (its manifest).
    ``output``: ``classes`` (argmax, uint8 or uint16), ``probabilities``
    (``probability_dtype``) or ``both`` (probabilities in ``<stem>-probabilities.tif``).
    A STAC item ``<stem>.json`` is written last. A run that was interrupted resumes where
    it stopped and ends byte-identical; an existing output is refused unless
    ``overwrite``. ``on_window(done, total)`` is called after each batch of windows (the
    total grows as each source is planned).
    """
    started = time.perf_counter()
    remote = is_url(out)
    if remote:
        check_writable(parent(out))  # refused before any work
    url, out = str(out), local_path(out)
    for name, value in (("chip", chip), ("batch_size", batch_size), ("tile", tile)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if tile % 16:
        raise InputError(f"tile must be a multiple of 16 (GeoTIFF tiles), got {tile}")
    if isinstance(normalize, str | Path):
        normalize = normalization_from_store(normalize)
    elif isinstance(normalize, Mapping):
        normalize = Normalization(
            tuple(np.atleast_1d(normalize["mean"]).tolist()),
            tuple(np.atleast_1d(normalize["std"]).tolist()),
        )
    plan_windows((chip, chip), chip, overlap=overlap, border=border)  # check the options
    _layers(out, output, classes, None, probability_dtype)
    sources = resolve_sources(source, bands=bands, grid=grid, nodata=nodata, env=env)
    if not sources:
        raise InputError("the source has no images")
    counts = {len(s.band_names) for s in sources}
    if len(counts) > 1:
        raise InputError(f"the images have different band counts {sorted(counts)}")
    if model_path is None and isinstance(model, str | Path):
        model_path = model
    if isinstance(model, str | Path):
        model = load_model(model)
    checksum = model_checksum(model, model_path)
    runner = ModelRunner(
        model,
        bands=counts.pop(),
        device=device,
        normalize=normalize,
        activation=activation,
        tta=tta,
        classes=classes,
    )
    options = {
        "chip": chip,
        "overlap": overlap,
        "border": border,
        "batch_size": batch_size,
        "activation": activation,
        "output": output,
        "probability_dtype": probability_dtype,
        "tta": tta,
        "tile": tile,
        "bands": list(sources[0].band_names),
        "normalize": None if normalize is None else {"mean": list(normalize.mean),
                                                      "std": list(normalize.std)},
        "nodata": nodata,
    }  # fmt: skip
    result = PredictResult()
    for src in sources:
        folder = len(sources) > 1 or out.suffix == ""
        if remote:
            _predict_remote(
                join(url, f"{src.id}.tif") if folder else url,
                src,
                result,
                runner=runner,
                options=options,
                checksum=checksum,
                model_href=str(model_path) if model_path is not None else None,
                classes=classes,
                output=output,
                prob_dtype=probability_dtype,
                tile=tile,
                threads=threads,
                overwrite=overwrite,
                on_window=on_window,
            )
            continue
        target = out / f"{src.id}.tif" if folder else out
        _predict_one(
            runner,
            src,
            target,
            options=options,
            checksum=checksum,
            model_href=str(model_path) if model_path is not None else None,
            classes=classes,
            output=output,
            prob_dtype=probability_dtype,
            tile=tile,
            threads=threads,
            overwrite=overwrite,
            result=result,
            on_window=on_window,
        )
    result.seconds = time.perf_counter() - started
    return result

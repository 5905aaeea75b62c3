"""``geochip predict MODEL SOURCE --out OUT.tif`` and ``geochip retile SRC --tile N --out DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.security import redact
from ..errors import InputError, PredictFailedError
from .app import app, err_console, split_list
from .chips import _split_bands

#: Exit status when some windows could not be read (the output is not written; run again).
EXIT_FAILED_BLOCKS = 3


def _source(value: str, registry: str | None, download: bool) -> Any:
    if value.startswith("registry:"):
        from ..registry.samples import load_inference_data  # lazy: CLI

        return load_inference_data(value.removeprefix("registry:"), registry=registry,
                                   download=download)  # fmt: skip
    from ..core.stacjson import scene_sources  # lazy: the CLI imports what it runs

    sources = scene_sources([value])
    if len(sources) != 1:
        raise InputError(f"{value}: give one scene (one item); it holds {len(sources)}")
    return sources[0]


def _floats(values: list[str] | None, name: str) -> list[float] | None:
    items = split_list(values)
    if items is None:
        return None
    try:
        return [float(v) for v in items]
    except ValueError as err:
        raise InputError(
            f"--{name} takes numbers (repeated or separated by commas), got {','.join(items)!r}"
        ) from err


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Argument(
            help="A TorchScript (.pt) or torch.export (.pt2) file, or package.module:function "
            "(called with no arguments, it returns the model)."
        ),
    ],
    source: Annotated[
        str,
        typer.Argument(
            help="A raster path or URL, a STAC Item JSON, or registry:TAG (a named dataset)."
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            help="The output COG (a folder for several images); a path or an s3://, gs://, "
            "az:// URL."
        ),
    ],
    bands: Annotated[
        list[str] | None,
        typer.Option(
            help="Bands (asset keys or names) in the model's order; repeat or separate with commas."
        ),
    ] = None,
    chip: Annotated[int, typer.Option(min=1, help="Window size the model sees, in pixels.")] = 512,
    overlap: Annotated[int, typer.Option(min=0, help="Least overlap between windows.")] = 64,
    border: Annotated[int, typer.Option(min=0, help="Pixels cropped at inner window edges.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per model call.")] = 8,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    mean: Annotated[
        list[str] | None,
        typer.Option(help="Normalisation means per band; repeat or separate with commas."),
    ] = None,
    std: Annotated[
        list[str] | None,
        typer.Option(help="Normalisation stds per band; repeat or separate with commas."),
    ] = None,
    normalize_from: Annotated[
        str | None,
        typer.Option(help="Take the normalisation from a chip dataset's manifest (path or URL)."),
    ] = None,
    activation: Annotated[str, typer.Option(help="softmax, sigmoid or none.")] = "softmax",
    output: Annotated[str, typer.Option(help="classes, probabilities or both.")] = "classes",
    probability_dtype: Annotated[str, typer.Option(help="float32 or uint8 (x 254).")] = "float32",
    classes: Annotated[
        list[str] | None,
        typer.Option(help="Class names in channel order; repeat or separate with commas."),
    ] = None,
    nodata: Annotated[
        float | None, typer.Option(help="Input nodata (overrides the file's).")
    ] = None,
    tta: Annotated[bool, typer.Option(help="Average over flips (test-time augmentation).")] = False,
    tile: Annotated[int, typer.Option(min=16, help="Output tile size (pixels).")] = 512,
    registry: Annotated[
        str | None, typer.Option(help="Registry file for registry:TAG sources.")
    ] = None,
    download: Annotated[bool, typer.Option(help="Download a registry dataset first.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of the windows.")] = True,
) -> None:
    """Apply a model to whole scenes: blended windows into a Cloud-Optimized GeoTIFF."""
    from ..core.progress import Stages  # lazy: CLI
    from ..inference.run import predict as run_predict

    normalize: Any = None
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise InputError("give --mean and --std together")
        normalize = {"mean": _floats(mean, "mean"), "std": _floats(std, "std")}
    elif normalize_from is not None:
        normalize = normalize_from
    band_list = _split_bands(bands)
    from ..core.storage import is_url

    the_model: Any = model if is_url(model) else Path(model)
    if not is_url(model) and not Path(model).exists() and ":" in model:
        from ..core.imports import load_object

        the_model = load_object(model, "MODEL")()
    try:
        with Stages(enabled=progress, console=err_console).counter("windows") as advance:
            result = run_predict(
                the_model,
                _source(source, registry, download),
                out,
                bands=band_list,
                chip=chip,
                overlap=overlap,
                border=border,
                batch_size=batch_size,
                device=device,
                normalize=normalize,
                activation=activation,  # type: ignore[arg-type]
                output=output,  # type: ignore[arg-type]
                probability_dtype=probability_dtype,  # type: ignore[arg-type]
                classes=split_list(classes),
                nodata=nodata,
                tta=tta,
                tile=tile,
                overwrite=overwrite,
                on_window=advance,
            )
    except PredictFailedError as err:
        message = " ".join(redact(str(err)).split())
        err_console.print(
            f"[red]error:[/] {type(err).__name__}: {message}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_FAILED_BLOCKS) from None
    err_console.print(
        f"wrote {', '.join(map(str, result.paths or result.urls))} ({result.windows} windows, "
        f"{result.skipped} all nodata) in {result.seconds:.1f} s"
    )


@app.command()
def retile(
    sources: Annotated[
        list[str], typer.Argument(help="Rasters to cut (GeoTIFF, JP2, ...; paths or URLs).")
    ],
    tile: Annotated[int, typer.Option(min=16, help="Tile size in pixels (a multiple of 16).")],
    out: Annotated[
        str, typer.Option(help="Folder (or s3://, gs://, az:// URL) for the tiles and catalog.")
    ],
    patch: Annotated[
        int | None, typer.Option(min=1, help="Patch size the tile size must be a multiple of.")
    ] = None,
    edge: Annotated[str, typer.Option(help="Edge tiles: keep (cut short) or pad.")] = "keep",
    collection: Annotated[str, typer.Option(help="The collection's id.")] = "tiles",
    overwrite: Annotated[bool, typer.Option(help="Redo an existing catalog.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of the tiles.")] = True,
) -> None:
    """Cut rasters into COG tiles that divide into patches; write them as a STAC collection."""
    from ..core.progress import Stages  # lazy: CLI
    from ..inference.retile import retile as run_retile

    with Stages(enabled=progress, console=err_console).counter("tiles") as advance:
        path = run_retile(sources, tile, out, patch=patch, edge=edge,  # type: ignore[arg-type]
                          collection=collection, overwrite=overwrite,
                          on_tile=advance)  # fmt: skip
    err_console.print(f"wrote {path}")

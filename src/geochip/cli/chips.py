"""``geochip chips``: count or write the chips of scenes (paths, URLs, STAC item files)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import InputError
from .app import app, console, err_console, split_list


def _split_bands(values: list[str] | None) -> list[str | int] | None:
    """Band names and 1-based numbers, repeated or comma-separated."""
    names = split_list(values)
    return [int(n) if n.isdigit() else n for n in names] if names else None


@app.command()
def chips(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Scenes: raster paths or URLs (http(s), s3://, gs://, az://), folders, "
            "STAC Item/ItemCollection JSON."
        ),
    ],
    size: Annotated[int, typer.Option(min=1, help="Chip size in pixels (square).")] = 512,
    stride: Annotated[
        int | None, typer.Option(min=1, help="Step between chips (default: the size).")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(min=0, help="Overlap between chips (stride = size - overlap).")
    ] = None,
    overview_level: Annotated[
        int | None, typer.Option(min=0, help="COG overview level (0 = first overview).")
    ] = None,
    bands: Annotated[
        list[str] | None,
        typer.Option(help="Bands by name or 1-based number; repeat or separate with commas."),
    ] = None,
    asset: Annotated[
        list[str] | None,
        typer.Option(help="STAC asset keys to read (items only); repeat or separate with commas."),
    ] = None,
    edge: Annotated[
        str, typer.Option(help="Windows at the edge: drop (partial ones), shift or pad.")
    ] = "drop",
    count: Annotated[
        bool, typer.Option("--count", help="Print the number of chips (headers only).")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option(help="Write the chips as a chip dataset (store) here: a folder or a URL."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Threads that read and write.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while writing.")] = True,
) -> None:
    """Plan the chips of scenes from their headers; print the count or write a store."""
    from ..plan.scenes import plan_scenes
    from ..read.open import open_scenes

    if not count and out is None:
        raise InputError("say what to do: --count, --out DIR, or both")
    if out is not None:
        from ..core.storage import check_writable

        check_writable(out)  # before any read: a missing bucket or extra, a read-only folder
    assets = split_list(asset)
    scenes = open_scenes(
        sources,
        overview_level=overview_level,
        bands=_split_bands(bands),
        asset=(assets[0] if assets and len(assets) == 1 else assets) or None,
    )
    plan = plan_scenes(scenes, size, stride=stride, overlap=overlap, edge=edge)
    if count:
        console.print(len(plan))
    if out is None:
        return
    from ..core.progress import Stages
    from ..store.writer import ChipSource, write_store

    sources_by_id = {}
    for scene in scenes:
        nodata = scene.nodata
        if nodata is None:
            err_console.print(
                f"note: {scene.label} has no nodata value; 0 fills padding and is counted "
                "as nodata in the index"
            )
            nodata = 0
        sources_by_id[scene.id] = ChipSource(
            image=scene.array(),
            bands=list(scene.band_names),
            nodata=nodata,
            item_ids=[str(scene.attrs.get("item_id", scene.id))],
            hrefs=[p.href for p in scene.parts],
        )
    config = {
        "command": "chips",
        "size": size,
        "stride": stride,
        "overlap": overlap,
        "overview_level": overview_level,
        "edge": edge,
        "bands": list(scenes[0].band_names),
    }
    stages = Stages(enabled=progress, console=err_console)
    with stages.stage("chips", total=len(plan)) as advance:
        path = write_store(
            out,
            plan,
            sources_by_id,
            config=config,
            workers=workers,
            overwrite=overwrite,
            on_chip=advance,
        )
    err_console.print(f"wrote {len(plan)} chips to {path}")

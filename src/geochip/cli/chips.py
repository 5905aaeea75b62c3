"""``geochip chips``: count or write the chips of scenes (paths, URLs, STAC item files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pystac
import typer

from ..errors import InputError
from .app import app, console, err_console


def _sources(values: list[str]) -> list[Any]:
    """Paths and URLs as they are; ``.json`` files as STAC Items or ItemCollections."""
    from ..sources.items import item_from_dict  # lazy: the CLI imports what it runs

    out: list[Any] = []
    for value in values:
        if value.lower().endswith(".json"):
            try:
                data = json.loads(Path(value).read_text()) if Path(value).exists() else None
            except (OSError, ValueError) as err:
                raise InputError(f"{value}: cannot read it as JSON ({err})") from err
            if data is None:
                data = pystac.StacIO.default().read_json(value)
            if data.get("type") == "FeatureCollection":
                out.extend(item_from_dict(f, value) for f in data.get("features") or [])
            elif data.get("type") == "Feature":
                item = item_from_dict(data, value)
                item.set_self_href(str(Path(value).resolve()) if Path(value).exists() else value)
                out.append(item)
            else:
                raise InputError(
                    f"{value}: a STAC Item or ItemCollection was expected, got type "
                    f"{data.get('type')!r}"
                )
        else:
            out.append(value)
    return out


def _split_bands(values: list[str] | None) -> list[str | int] | None:
    if not values:
        return None
    bands: list[str | int] = []
    for value in values:
        for piece in value.split(","):
            name = piece.strip()
            if name:
                bands.append(int(name) if name.isdigit() else name)
    return bands


@app.command()
def chips(
    sources: Annotated[
        list[str],
        typer.Argument(help="Scenes: raster paths, http(s) URLs, STAC Item/ItemCollection JSON."),
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
        list[str] | None, typer.Option(help="STAC asset key(s) to read (items only).")
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
) -> None:
    """Plan the chips of scenes from their headers; print the count or write a store."""
    from ..plan.scenes import plan_scenes
    from ..read.open import open_scenes

    if not count and out is None:
        raise InputError("say what to do: --count, --out DIR, or both")
    scenes = open_scenes(
        _sources(sources),
        overview_level=overview_level,
        bands=_split_bands(bands),
        asset=(asset[0] if asset and len(asset) == 1 else asset) or None,
    )
    plan = plan_scenes(scenes, size, stride=stride, overlap=overlap, edge=edge)
    if count:
        console.print(len(plan))
    if out is None:
        return
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
    path = write_store(
        out, plan, sources_by_id, config=config, workers=workers, overwrite=overwrite
    )
    err_console.print(f"wrote {len(plan)} chips to {path}")

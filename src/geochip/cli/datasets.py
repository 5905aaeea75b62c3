"""``geochip datasets``: the registry of named datasets (list, show, download)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from .app import GeochipTyper, app, console

datasets_app = GeochipTyper(
    help="Named datasets of image/mask pairs: the built-ins and registry files.",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")

RegistryOption = Annotated[
    list[str] | None,
    typer.Option(
        "--registry",
        help="A registry file (YAML or JSON) whose datasets are added to the built-ins; "
        "repeat for several.",
    ),
]


def _registry(files: list[str] | None) -> Any:
    from ..registry.catalog import open_registry

    return open_registry(files or None)


def _files(dataset: Any) -> tuple[int | None, str]:
    from ..errors import DatasetNotAvailableError

    try:
        images = dataset.image_paths()
        dataset.mask_paths()
    except DatasetNotAvailableError as err:
        return None, str(err)
    return len(images), ""


@datasets_app.command("list")
def list_datasets(
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered datasets: tag, image files, masks, resolution, download."""
    reg = _registry(registry)
    rows = []
    for dataset in reg:
        count, _ = _files(dataset)
        spec = dataset.spec
        rows.append(
            {
                "tag": dataset.tag,
                "images": count,
                "available": count is not None,
                "masks": spec.masks.kind if spec.masks else None,
                "resolution": spec.resolution,
                "download": spec.download is not None,
                "source": dataset.source,
                "description": spec.description,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    # names never wrap; at 80 columns the description wraps, between words
    table = Table(
        title=f"{len(rows)} datasets", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False
    )
    widest = max((len(row["tag"]) for row in rows), default=3)
    table.add_column("tag", no_wrap=True, min_width=widest)
    for column in ("files", "masks", "res (m)", "download", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    for row in rows:
        table.add_row(
            row["tag"],
            str(row["images"]) if row["available"] else "[yellow]missing[/]",
            row["masks"] or "-",
            f"{row['resolution']:g}",
            "yes" if row["download"] else "no",
            row["source"],
            row["description"],
        )
    console.print(table)
    for note in reg.notes:
        console.print(f"note: {note}")


@datasets_app.command()
def show(
    tag: Annotated[str, typer.Argument(help="The dataset's tag.")],
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a dataset: its entry, its files, and each image's grid at the dataset's resolution."""
    dataset = _registry(registry).get(tag)
    info: dict[str, Any] = dataset.describe()
    count, missing = _files(dataset)
    info["available"] = count is not None
    if missing:
        info["missing"] = missing
    else:
        info["image_files"] = [str(p) for p in dataset.image_paths()]
        info["mask_files"] = [str(p) for p in dataset.mask_paths()]
        images = []
        for item in dataset.items():
            grid = dataset.geobox(item)
            images.append(
                {
                    "id": item.id,
                    "bands": dataset.bands(item),
                    "crs": str(grid.crs),
                    "shape": list(grid.shape.yx),
                    "resolution": abs(grid.affine.a),
                    "mask": str(item.assets["mask"].href) if "mask" in item.assets else None,
                }
            )
        info["images"] = images
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    console.print(f"[bold]{dataset.tag}[/]  {dataset.spec.description}")
    for key in ("source", "root", "resolution", "group", "bands", "download", "license", "url"):
        if info.get(key) is not None:
            console.print(f"  {key}: {info[key]}")
    masks = dataset.spec.masks
    if masks is not None:
        console.print(f"  masks: {masks.model_dump(exclude_none=True)}")
    if missing:
        console.print(f"[yellow]not available:[/] {missing}")
        return
    n_images, n_masks = len(info["image_files"]), len(info["mask_files"])
    console.print(f"  {n_images} image file(s), {n_masks} mask file(s)")
    for image in info["images"]:
        console.print(
            f"  image {image['id']}: {len(image['bands'])} bands {image['bands']}, "
            f"{image['crs']}, {image['shape'][0]}x{image['shape'][1]} px at "
            f"{image['resolution']:g}" + (f", mask {image['mask']}" if image["mask"] else "")
        )


@datasets_app.command()
def download(
    tag: Annotated[str, typer.Argument(help="The dataset's tag.")],
    registry: RegistryOption = None,
    overwrite: Annotated[
        bool, typer.Option(help="Download again and replace the files that are there.")
    ] = False,
    force: Annotated[bool, typer.Option(hidden=True, help="Old name of --overwrite.")] = False,
) -> None:
    """Run a dataset's download function (nothing to do when its files are there)."""
    force = overwrite or force
    dataset = _registry(registry).get(tag)
    was = dataset.available
    root = dataset.download(force=force)
    state = "already there" if was and not force else "downloaded"
    console.print(f"{tag}: {state} -> {root}")

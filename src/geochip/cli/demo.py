"""``geochip demo``, ``geochip sample`` and ``geochip versions``: the first commands to try."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .app import app, console


@app.command()
def demo(
    out: Annotated[
        str, typer.Option(help="Output folder: the chip dataset and chips.png go here.")
    ] = "demo-output",
    workers: Annotated[int, typer.Option(min=1, help="Threads that read and write chips.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the whole pipeline on the embedded sample catalog and write a chip dataset."""
    from ..workflows.demo import run_demo

    result = run_demo(out, progress=progress, workers=workers, console=console)
    console.print(
        f"\nscene [bold]{result.item_id}[/] (eo:cloud_cover {result.cloud_cover:.2f} %), "
        f"{result.masked_fraction:.1%} of chip pixels masked as cloud"
    )
    for split, shapes in result.batch_shapes.items():
        console.print(
            f"{result.reader} {split:<5}: {len(shapes)} batches, shapes {sorted(set(shapes))}"
        )
    if result.reader != "DataLoader":
        console.print(
            "(torch is not installed: pip install 'geochip[torch]' for the DataLoader)",
            markup=False,
        )
    table = Table(title="chips and label pixels per split")
    table.add_column("split")
    table.add_column("chips", justify="right")
    classes = sorted({c for counts in result.pixels_per_class.values() for c in counts})
    for name in classes:
        table.add_column(name, justify="right")
    for split, n in result.splits.items():
        counts = result.pixels_per_class.get(split, {})
        table.add_row(split, str(n), *(f"{counts.get(c, 0):,}" for c in classes))
    console.print(table)
    timing = Table(title="time per stage")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in result.timings.items():
        timing.add_row(stage, f"{seconds:.2f}")
    timing.add_row("[bold]total[/]", f"[bold]{sum(result.timings.values()):.2f}[/]")
    console.print(timing)
    console.print(
        f"store: {result.out}/  preview: {result.out / 'chips.png'}  "
        f"report: {result.out / 'report.html'}"
    )


@app.command()
def sample(
    out: Annotated[
        str | None,
        typer.Option(help="Where to write it, a folder or URL (default: the geochip cache)."),
    ] = None,
    refresh: Annotated[bool, typer.Option(help="Rebuild even if it exists.")] = False,
    root: Annotated[str | None, typer.Option(hidden=True, help="Old name of --out.")] = None,
) -> None:
    """Write the sample STAC catalog (real Landsat 8 and Sentinel-2 crops) and print its path."""
    from ..sources.sample import sample_catalog

    console.print(str(sample_catalog(out or root, refresh=refresh)))


@app.command()
def versions() -> None:
    """Print geochip, GDAL, PROJ, GEOS and library versions (for bug reports)."""
    from ..core.versions import show_versions

    show_versions()

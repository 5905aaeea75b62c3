"""Commands that look at a chip dataset before training: ``geochip stats`` (band
statistics per split) and ``geochip report`` (one offline HTML page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .app import app, console


@app.command()
def stats(
    store: Annotated[Path, typer.Argument(help="A chip dataset folder.")],
    split: Annotated[
        str | None, typer.Option(help="One split (train, val, test, all); default: every one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
    save: Annotated[
        bool,
        typer.Option(help="Store older than band statistics: write stats.json and the manifest."),
    ] = False,
) -> None:
    """Band statistics per split: valid pixels, mean, std, min, max, percentiles (from the
    manifest; recomputed from the arrays for a store built without them)."""
    from ..store.bandstats import band_stats, save_statistics, store_stats
    from ..store.reader import open_store

    opened = open_store(store)
    recomputed = "stats" not in opened.manifest
    doc = store_stats(opened)
    if save and recomputed:
        doc = save_statistics(opened)
    splits = [split] if split is not None else list(doc["splits"])
    if split is not None:
        band_stats(opened, split, allow_empty=True)  # names a split that is not there
    if as_json:
        console.print_json(json.dumps({**doc, "splits": {s: doc["splits"][s] for s in splits}}))
        return
    if recomputed:
        console.print(
            "recomputed from the arrays (this store was built without band statistics"
            + ("; saved)" if save else "; --save writes them)")
        )
    keys = ["count", "mean", "std", "min", "max", "p1", "p2", "p50", "p98", "p99"]
    for name in splits:
        table = Table(title=f"{name}: valid pixels per band ({doc['bins']} histogram bins)")
        table.add_column("band")
        for key in keys:
            table.add_column(key, justify="right")
        for band in doc["bands"]:
            row = doc["splits"][name][band]
            table.add_row(
                band,
                *(
                    "-" if row[k] is None else f"{row[k]:,.6g}" if k != "count" else f"{row[k]}"
                    for k in keys
                ),
            )
        console.print(table)


@app.command()
def report(
    store: Annotated[Path, typer.Argument(help="A chip dataset folder.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    per_split: Annotated[int, typer.Option(min=1, help="Sample chips shown per split.")] = 4,
) -> None:
    """Write one self-contained HTML page about a chip dataset (works offline): split map,
    class balance, band statistics, sample chips and masks, config and provenance, failures."""
    from ..store.report import write_report

    path = write_report(store, out, per_split=per_split)
    console.print(f"report: {path}")

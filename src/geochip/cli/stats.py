"""Commands that look at a chip dataset before training: ``geochip stats`` (band
statistics per split) and ``geochip report`` (one offline HTML page)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from .app import app, console, split_list


@app.command()
def stats(
    store: Annotated[
        str, typer.Argument(help="A chip dataset: a folder or a URL (s3://bucket/ds).")
    ],
    split: Annotated[
        list[str] | None,
        typer.Option(help="Splits (train, val, test, all); repeat or separate with commas."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
    save: Annotated[
        bool,
        typer.Option(help="Store older than band statistics: write stats.json and the manifest."),
    ] = False,
    per_step: Annotated[
        bool,
        typer.Option("--per-step", help="Time stacks: one table per split and time step."),
    ] = False,
) -> None:
    """Band statistics per split: valid pixels, mean, std, min, max, percentiles (from the
    manifest; recomputed from the arrays for a store built without them)."""
    from ..store.bandstats import band_stats, save_statistics, store_stats
    from ..store.reader import open_store

    opened = open_store(store)
    section = opened.manifest.get("stats") or {}
    recomputed = not section or (per_step and "per_step" not in section)
    doc = store_stats(opened, per_step=per_step)
    if save and recomputed:
        doc = save_statistics(opened, per_step=per_step)
    chosen = split_list(split)
    splits = chosen if chosen is not None else list(doc["splits"])
    for name in chosen or ():
        band_stats(opened, name, allow_empty=True)  # names a split that is not there
    if as_json:
        shown = {**doc, "splits": {s: doc["splits"][s] for s in splits}}
        if "per_step" in doc:
            steps = doc["per_step"]
            shown["per_step"] = {**steps, "splits": {s: steps["splits"][s] for s in splits}}
        console.print_json(json.dumps(shown))
        return
    if recomputed:
        console.print(
            "recomputed from the arrays (this store was built without these statistics"
            + ("; saved)" if save else "; --save writes them)")
        )
    keys = ["count", "mean", "std", "min", "max", "p1", "p2", "p50", "p98", "p99"]
    for name in splits:
        tables = [("", doc["splits"][name])]
        if per_step:
            tables = [
                (f", time step {t}", s) for t, s in enumerate(doc["per_step"]["splits"][name])
            ]
        for where, rows in tables:
            title = f"{name}{where}: valid pixels per band ({doc['bins']} histogram bins)"
            table = Table(title=title)
            table.add_column("band")
            for key in keys:
                table.add_column(key, justify="right")
            for band in doc["bands"]:
                row = rows[band]
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
    store: Annotated[
        str, typer.Argument(help="A chip dataset: a folder or a URL (s3://bucket/ds).")
    ],
    out: Annotated[
        str, typer.Option(help="The HTML file to write (a path or URL).")
    ] = "report.html",
    per_split: Annotated[int, typer.Option(min=1, help="Sample chips shown per split.")] = 4,
    screenshot: Annotated[
        str | None,
        typer.Option(
            "--screenshot-out", help="Also write a PNG of the page as headless Chromium shows it."
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML page about a chip dataset (works offline): split map,
    class balance, band statistics, sample chips and masks, config and provenance, failures."""
    from ..core.files import check_file_output
    from ..store.report import find_chromium, write_report
    from ..store.report import screenshot as take_screenshot

    if screenshot is not None and find_chromium() is None:  # refused before any write
        take_screenshot(out, screenshot)
    for target in (out, screenshot):
        if target is not None:
            check_file_output(target)
    path = write_report(store, out, per_split=per_split)
    console.print(f"report: {path}")
    if screenshot is not None:
        console.print(f"screenshot: {take_screenshot(path, screenshot)}")

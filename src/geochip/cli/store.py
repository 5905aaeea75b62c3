"""Commands on a chip dataset: ``geochip info``, ``geochip check``, ``geochip preview``."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core.storage import ObjectPath
from .app import app, console, err_console

#: Exit status of ``geochip check`` when it finds a leak, a corrupt chip or an inconsistency.
EXIT_CHECK_FAILED = 4


def _folder_bytes(path: Path | ObjectPath) -> int:
    if isinstance(path, ObjectPath):
        return path.tree_bytes()
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


@app.command()
def info(
    store: Annotated[
        str, typer.Argument(help="A chip dataset: a folder or a URL (s3://bucket/ds).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Summarise a chip dataset: chips per split, arrays, classes, versions."""
    from ..store.format import name_class_counts
    from ..store.reader import open_store

    opened = open_store(store)
    if as_json:
        console.print_json(json.dumps(opened.manifest))
        return
    m = opened.manifest
    counts = m["counts"]
    index = opened.index
    console.print(
        f"[bold]{store}[/]: {counts['chips']} chips, {counts['failed']} failed, "
        f"{counts.get('nodata', 0)} nodata (no data, or over the nodata limit; left out of "
        "training)"
    )
    console.print(f"splits {counts['splits']}")
    image = opened.reader("image")
    layout = m.get("layout") or {}
    console.print(
        f"image {m['image']['shape']} {m['image']['dtype']}, bands {m['image']['bands']}, "
        f"nodata {m['image'].get('nodata')}"
    )
    console.print(
        f"layout: codec {layout.get('codec', image.codec)}, "
        f"{layout.get('chips_per_shard', image.per_file)} chip(s) per file, "
        f"{_human(_folder_bytes(opened.path / 'chips.zarr'))} on disk for "
        f"{_human(image.nbytes * image.shape[0])} of pixels"
    )
    if m.get("mask"):
        classes = m["mask"]["classes"]
        console.print(f"mask classes {classes} (ignore = {m['mask']['ignore']})")
        pixels = name_class_counts(counts.get("pixels_per_class") or {}, classes)
        console.print(f"pixels per class {pixels}")
    crss = sorted(set(index["crs"]))
    grids = sorted(set(index["grid_id"])) if "grid_id" in index else []
    console.print(f"{len(grids)} grid(s) in {', '.join(c if len(c) < 40 else 'WKT' for c in crss)}")
    split = m.get("split") or {}
    if split:
        console.print(
            f"split: {split.get('method')}, buffer {split.get('buffer')}; planned "
            f"{split.get('planned')}, dropped {split.get('dropped_straddling', 0)} straddling, "
            f"{split.get('dropped_buffer', 0)} within the buffer, "
            f"{split.get('dropped_outside', 0)} outside regions"
        )
    if counts["failed"]:
        failed = index[index["status"] == "failed"].head(5)
        for row in failed.itertuples():
            console.print(f"failed {row.chip_id}: {row.error}", markup=False, highlight=False)
    console.print(f"written by {m['versions']}")


@app.command()
def check(
    store: Annotated[
        str, typer.Argument(help="A chip dataset: a folder or a URL (s3://bucket/ds).")
    ],
    buffer: Annotated[
        float | None,
        typer.Option(help="Leak distance in CRS units; default: the buffer of the build."),
    ] = None,
    integrity: Annotated[
        bool, typer.Option(help="Read every usable chip back and compare its checksum.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a chip dataset: leakage between splits, class balance, integrity."""
    from ..store.check import check_store

    report = check_store(store, buffer=buffer, integrity=integrity)
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        console.print(
            f"leakage: {len(report.leaks)} pairs of chips in different splits closer than "
            f"{report.buffer:g} (must be 0)"
        )
        for row in report.leaks.head(10).itertuples():
            console.print(
                f"  LEAK {row.chip_a} ({row.split_a}) - {row.chip_b} ({row.split_b}): "
                f"distance {row.distance:g}",
                markup=False,
                highlight=False,
            )
        table = Table(title="class balance per split (pixels of usable chips)")
        table.add_column("split")
        table.add_column("chips", justify="right")
        names = sorted({k for b in report.balance.values() for k in b["pixels"]})
        for name in names:
            table.add_column(name, justify="right")
        for split, b in report.balance.items():
            cells = [
                f"{b['pixels'].get(n, 0):,}"
                + (f" ({b['share'][n]:.0%})" if n in b.get("share", {}) else "")
                for n in names
            ]
            table.add_row(split, str(b["chips"]), *cells)
        console.print(table)
        console.print(
            f"integrity: {report.checked} chips read back, {len(report.corrupt)} checksum "
            f"mismatches; {report.failed} chips failed at build time, {report.nodata} hold "
            "nodata (left out)"
        )
        for name in report.corrupt[:10]:
            console.print(f"  CORRUPT {name}", markup=False, highlight=False)
        for problem in report.problems:
            console.print(f"  PROBLEM {problem}", markup=False, highlight=False)
    if not report.ok:
        err_console.print("check failed")
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def preview(
    store: Annotated[
        str, typer.Argument(help="A chip dataset: a folder or a URL (s3://bucket/ds).")
    ],
    out: Annotated[
        str,
        typer.Option(help="Write a PNG of sample chips and masks per split here (a path or URL)."),
    ] = "preview.png",
    split_map_out: Annotated[
        str | None,
        typer.Option(
            help="Write a PNG map of the chips coloured by split here (default: <out>-splits.png)."
        ),
    ] = None,
    per_split: Annotated[int, typer.Option(min=1, help="Chips shown per split.")] = 4,
    split_map: Annotated[
        str | None, typer.Option(hidden=True, help="Old name of --split-map-out.")
    ] = None,
) -> None:
    """Save a grid of chips and masks per split, and a map of the splits."""
    from ..core.files import check_file_output
    from ..store.viz import save_chip_grid, save_split_map

    map_out = split_map_out or split_map or _beside(out, "-splits.png")
    for target in (out, map_out):  # refused before any work
        check_file_output(target)
    rgb_bands = ("red", "green", "blue")
    grid = save_chip_grid(store, out, per_split=per_split, rgb=rgb_bands)
    map_path = save_split_map(store, map_out)
    console.print(f"preview: {grid}\nsplit map: {map_path}")


def _beside(location: str, ending: str) -> str:
    """``location`` with its suffix replaced by ``ending`` (``a/p.png`` -> ``a/p-splits.png``;
    URLs alike)."""
    stem, _ = posixpath.splitext(location)
    return stem + ending

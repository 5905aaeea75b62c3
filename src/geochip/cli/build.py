"""``geochip build CONFIG.yaml``: build, resume or confirm a chip dataset from a config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app, console, err_console

#: Exit status when the dataset was written but some chips failed (they are in the index).
EXIT_FAILED_CHIPS = 3
#: Exit status after Ctrl-C (the build resumes when run again).
EXIT_INTERRUPTED = 130


@app.command()
def build(
    config: Annotated[
        Path | None, typer.Argument(help="The dataset's YAML config (see --help-config).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder or URL (s3://, gs://, az://); overrides output.path of the config."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Insist on resuming an unfinished build (plain runs resume too).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Start a local Dask cluster of N worker processes (127.0.0.1)."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Use an existing Dask scheduler, tcp://HOST:PORT.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a geochip store built from another config.")
    ] = False,
    force_unlock: Annotated[
        bool,
        typer.Option(
            help="Take over the lock of a URL output left by a killed build (then resume)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    help_config: Annotated[
        bool, typer.Option("--help-config", help="Print every config field and exit.")
    ] = False,
) -> None:
    """Build a chip dataset from a config; run it again to resume an interrupted build."""
    from ..builder.config import describe_config, load_config
    from ..builder.run import build as run_build
    from ..builder.run import summarize

    if help_config:
        console.print(describe_config(), markup=False, highlight=False)
        return
    if config is None:
        err_console.print("error: give a CONFIG.yaml (or --help-config to list its fields)")
        raise typer.Exit(2)
    cfg = load_config(config).with_overrides(out=out, workers=workers, scheduler=scheduler)
    try:
        result = run_build(
            cfg,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            console=console,
            force_unlock=force_unlock,
        )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: run `geochip build {config}` again to resume where it stopped"
        )
        sys.exit(EXIT_INTERRUPTED)
    for line in summarize(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        err_console.print(
            f"{len(result.failed)} chips failed (status 'failed' in the index); run the same "
            "command again to retry them"
        )
        raise typer.Exit(EXIT_FAILED_CHIPS)
    if not result.counts.get("ok", 1) and result.counts.get("nodata"):
        # a complete store without a chip to train from does not end as a success
        err_console.print(
            f"no usable chip: all {result.counts['nodata']} chips hold no data (status "
            "'nodata'); check the sources' area, the bands, the masks and "
            "chips.max_nodata_fraction"
        )
        raise typer.Exit(1)

"""``geochip build CONFIG.yaml``: build, resume or confirm a chip dataset from a config."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import CommandLineError
from .app import app, console, err_console, rerun_command

#: Exit status when the dataset was written but some chips failed (they are in the index).
#: (After Ctrl-C the status is 130 and the hint repeats the command: ``geochip.cli.main``.)
EXIT_FAILED_CHIPS = 3


@app.command()
def build(
    config: Annotated[
        str | None,
        typer.Argument(help="The dataset's YAML config: a path or URL (see --help-config)."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder or URL (s3://, gs://, az://); overrides output.path of the "
            "config (which may then be left out)."
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
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run array job INDEX/COUNT (0-based, e.g. $SLURM_ARRAY_TASK_ID/10): one of "
            "COUNT independent jobs that together write the store; the last one to end writes "
            "the index and manifest."
        ),
    ] = None,
    finalize: Annotated[
        bool,
        typer.Option(
            "--finalize",
            help="After every --shard job ended: write the index and manifest of the build.",
        ),
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
        raise CommandLineError(
            "give a CONFIG.yaml (or --help-config to list its fields); see `geochip build --help`"
        )
    if shard is not None or finalize:
        _array_job(config, out, workers, scheduler, shard, finalize, overwrite, progress)
        return
    cfg = load_config(config, out=out).with_overrides(workers=workers, scheduler=scheduler)
    result = run_build(
        cfg,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        console=console,
        force_unlock=force_unlock,
    )
    for line in summarize(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        err_console.print(
            f"{len(result.failed)} chips failed (status 'failed' in the index); run "
            f"`{rerun_command()}` again to retry them",
            markup=False,
            highlight=False,
            soft_wrap=True,
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


def _array_job(
    config: str,
    out: str | None,
    workers: int | None,
    scheduler: str | None,
    shard: str | None,
    finalize: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """``--shard i/N`` (one array job) or ``--finalize`` (the index and manifest)."""
    from ..builder.config import load_config
    from ..builder.run import summarize
    from ..builder.shards import build_shard, finalize_build, parse_shard
    from ..errors import InputError

    if shard is not None and finalize:
        raise InputError(
            "give --shard i/N (one array job) or --finalize (after every job ended), not both"
        )
    which = "--finalize" if finalize else "--shard"
    if overwrite:
        raise InputError(
            f"{which} cannot --overwrite: the array jobs share the store and none may delete "
            "what the others wrote; remove the old store first, then start the jobs"
        )
    if scheduler is not None:
        raise InputError(
            f"{which} runs on this machine; it cannot use the Dask scheduler {scheduler!r} too: "
            "give --shard or --scheduler, not both (for one build on a Dask cluster, drop "
            "--shard)"
        )
    job = parse_shard(shard) if shard is not None else None
    cfg = load_config(config, out=out).with_overrides(workers=workers)
    if job is None:
        result = finalize_build(cfg, progress=progress, console=console)
    else:
        done = build_shard(cfg, job, progress=progress, console=console)
        for line in done.lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if done.finalized is None:
            if done.failed:
                err_console.print(
                    f"{len(done.failed)} chips of shard {job} failed; run the same command "
                    "again to retry them"
                )
                raise typer.Exit(EXIT_FAILED_CHIPS)
            return
        result = done.finalized
    for line in summarize(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        err_console.print(
            f"{len(result.failed)} chips failed (status 'failed' in the index); run their "
            "shards again to retry them, then --finalize"
        )
        raise typer.Exit(EXIT_FAILED_CHIPS)

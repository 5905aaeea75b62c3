"""``geochip timeseries``: one cube file per geometry (SITS)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from .app import app, console, err_console, split_list
from .search import _ApiKeyEnv, _Header, _HeaderEnv, request_headers


def _bands(values: list[str]) -> tuple[str, ...]:
    return tuple(split_list([v.replace(" ", ",") for v in values]) or ())


@app.command()
def timeseries(
    geoms: Annotated[
        str,
        typer.Argument(
            help="Points or polygons: a GeoJSON/GeoPackage/Shapefile/GeoParquet file, or WKT "
            "in EPSG:4326 such as 'MULTIPOINT ((-87.45 30.75), (-87.35 30.7))'."
        ),
    ],
    catalog: Annotated[
        str,
        typer.Option(help="STAC catalog: a catalog.json path/URL, a STAC API, or 'sample'."),
    ],
    bands: Annotated[
        list[str],
        typer.Option(help="Bands to load (red,nir08); repeat or separate with commas."),
    ],
    crs: Annotated[str, typer.Option(help="Target CRS of the cubes, e.g. EPSG:3035.")],
    resolution: Annotated[float, typer.Option(help="Pixel size in units of the target CRS.")],
    out: Annotated[
        str,
        typer.Option(help="Output folder (or s3://, gs://, az:// URL): <id>.nc or <id>.zarr."),
    ],
    datetime: Annotated[
        str | None, typer.Option(help="Search interval, e.g. 2023-01-01/2023-12-31.")
    ] = None,
    max_cloud: Annotated[
        float | None, typer.Option(help="Keep scenes with eo:cloud_cover <= N (%).")
    ] = None,
    collections: Annotated[
        list[str] | None,
        typer.Option(help="Collections to search; repeat or separate with commas."),
    ] = None,
    buffer: Annotated[
        float, typer.Option(help="Buffer around each geometry (image mode; needs --buffer-unit).")
    ] = 0.0,
    buffer_unit: Annotated[
        str | None, typer.Option(help="Unit of --buffer: deg (EPSG:4326 degrees) or m (metres).")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="image: the buffered geometry's box; patch: --size pixels.")
    ] = "image",
    size: Annotated[
        tuple[int, int] | None,
        typer.Option(help="Patch size in pixels: DIMX DIMY (patch mode)."),
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option(help="Cloud mask: scl:0,1,3,8,9,10 | qa:landsat_c2:cloud,... | prob@B:40."),
    ] = None,
    gapfill: Annotated[
        str | None, typer.Option(help="Fill masked values along time: linear or nearest.")
    ] = None,
    max_gap: Annotated[
        int | None, typer.Option(help="Longest run of missing time steps to fill.")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Output format: nc or zarr.")] = "nc",
    id_column: Annotated[
        str | None,
        typer.Option(
            help="Column holding each geometry's id (default: 'id' or 'label_id' when there "
            "is one, else g0, g1, ...)."
        ),
    ] = None,
    resampling: Annotated[
        str, typer.Option(help="Resampling of continuous bands (categorical: nearest).")
    ] = "bilinear",
    groupby: Annotated[
        str, typer.Option(help="Scenes -> time steps: solar_day, solar_day_orbit, time, id.")
    ] = "solar_day",
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="1: threads in this process; N>1: a local Dask cluster of N workers."
        ),
    ] = 1,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds to wait for each catalog request.")
    ] = 30.0,
    retries: Annotated[
        int,
        typer.Option(min=0, max=10, help="Retries of a catalog request that failed transiently."),
    ] = 3,
    header: _Header = None,
    header_env: _HeaderEnv = None,
    api_key_env: _ApiKeyEnv = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build a time series cube per geometry: search, load, mask clouds, gap-fill, write.

    Geometries already written are skipped, so re-running resumes. Exit status 1 when any
    geometry failed (the summary says why; summary.json in --out has every result), or when
    every geometry was empty (nothing written). An API
    key comes from the environment (--api-key-env VAR, --header-env Name=VAR): the workers
    read the variable; the key never enters the config, the task graph or the files.
    """
    from ..core.progress import Stages
    from ..workflows.timeseries import TimeseriesConfig, read_geometries, run_timeseries

    if catalog == "sample":
        from ..sources.sample import sample_catalog

        catalog = str(sample_catalog())
    sent, from_env = request_headers(header, header_env, api_key_env)
    config = TimeseriesConfig(
        catalog=catalog,
        bands=_bands(bands),
        crs=crs,
        resolution=resolution,
        datetime=datetime,
        collections=_bands(collections) if collections else None,
        max_cloud=max_cloud,
        buffer=buffer,
        buffer_unit=buffer_unit,
        mode=mode,
        size=(int(size[0]), int(size[1])) if size else None,
        mask=mask,
        gapfill=gapfill,
        max_gap=max_gap,
        format=format,
        resampling=resampling,
        groupby=groupby,
        timeout=timeout,
        retries=retries,
        headers=sent,
        headers_env=from_env,
    )
    gdf = read_geometries(geoms, id_column)
    stages = Stages(enabled=progress, console=console)
    client = cluster = None
    if workers > 1:
        from distributed import Client, LocalCluster  # lazy: ~0.9 s, only with --workers

        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            processes=True,
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    try:
        with stages.stage("geometries", total=len(gdf)) as advance:
            summary = run_timeseries(gdf, config, out, client=client, on_done=advance)
    finally:
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
    counts = summary.counts
    console.print(
        f"done {counts['done']}, skipped {counts['skipped']} (already written), "
        f"empty {counts['empty']}, failed {counts['failed']}  ->  {out}"
    )
    problems = [r for r in summary.results if r.status in ("empty", "failed")]
    if problems:
        table = Table(title="empty and failed geometries")
        table.add_column("id")
        table.add_column("status")
        table.add_column("why")
        for r in problems:
            table.add_row(r.id, r.status, r.reason[:200])
        console.print(table)
    if counts["failed"]:
        sys.exit(1)
    if not counts["done"] and not counts["skipped"]:
        # every geometry empty: a run that wrote nothing does not end as a success
        err_console.print(
            f"nothing written: none of the {counts['empty']} geometries has a scene with data "
            "(check --datetime, --collections, --max-cloud and where the geometries are)"
        )
        sys.exit(1)

"""``geochip search`` and ``geochip select``: find scenes in a catalog, choose them per label
and period.

Secrets never go on the command line: ``--api-key-env NAME`` reads the key from the
environment variable ``NAME``; ``--header "Name: value"`` is for non-secret headers (or
``--header-env "Name=VAR"`` to take a header's value from ``$VAR``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import shapely.geometry
import typer
from rich.table import Table

from ..core.files import check_file_output, write_text
from ..core.storage import is_url, local_path
from ..errors import InputError
from .app import app, console, split_list

if TYPE_CHECKING:
    from ..sources.catalog import Catalog

_CATALOG_HELP = (
    "STAC API URL, static catalog/collection (path or URL), ItemCollection JSON, "
    "stac-geoparquet file, or a folder/glob of rasters."
)

# the request options of both commands
_Header = Annotated[
    list[str] | None, typer.Option(help="A non-secret header 'Name: value' (repeatable).")
]
_HeaderEnv = Annotated[
    list[str] | None, typer.Option(help="A header from the environment: 'Name=VAR'.")
]
_ApiKeyEnv = Annotated[
    str | None, typer.Option(help="Environment variable holding the API key (x-api-key).")
]


def request_headers(
    headers: list[str] | None, header_env: list[str] | None, api_key_env: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The request options of ``search``, ``select`` and ``timeseries`` as (headers sent as
    given, header name -> NAME of the environment variable holding its value). A secret
    header given by value (``--header "X-Api-Key: ..."``) is refused: it would sit in the
    shell's history and, for ``timeseries``, in the config that goes to the workers."""
    from ..core.security import check_headers

    parsed: dict[str, str] = {}
    for text in headers or []:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header must be 'Name: value', got {text.split(':')[0]!r}...")
        parsed[name.strip()] = value.strip()
    from_env: dict[str, str] = {}
    for text in header_env or []:
        name, sep, var = text.partition("=")
        if not sep or not name.strip() or not var.strip():
            raise InputError(f"--header-env {text!r}: give Name=VAR (VAR: an environment variable)")
        from_env[name.strip()] = var.strip()
    if api_key_env:
        from_env["x-api-key"] = api_key_env
    check_headers(parsed, from_env, option="--header")
    return parsed, from_env


def _open(
    catalog: str,
    headers: list[str] | None,
    header_env: list[str] | None,
    api_key_env: str | None,
    max_requests: int = 4,
    max_items: int = 10_000,
) -> Catalog:
    from ..core.security import headers_from_env
    from ..sources.open import open_catalog

    parsed, from_env = request_headers(headers, header_env, api_key_env)
    parsed.update(headers_from_env(from_env, option="--header-env/--api-key-env"))
    return open_catalog(catalog, headers=parsed, max_requests=max_requests, max_items=max_items)


def _geometry_file(path: str) -> dict[str, Any]:
    """One EPSG:4326 geometry (the union) from a GeoJSON geometry/Feature/FeatureCollection
    or any vector file (a path or URL)."""
    from ..core.storage import read_bytes
    from ..core.vectors import read_vector  # lazy: geopandas ~0.6 s, only for --intersects

    if path.split("?", 1)[0].lower().endswith((".json", ".geojson")):
        try:
            data = json.loads(read_bytes(path))
        except FileNotFoundError:
            raise InputError(f"--intersects {path}: no such file; check the path") from None
        except ValueError as err:
            raise InputError(f"--intersects {path}: not valid JSON ({err})") from None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind not in {"Feature", "FeatureCollection"} and "coordinates" in data:
            return dict(data)
    frame = read_vector(path, what="--intersects file")
    if frame.empty:
        raise InputError(f"--intersects {path}: no geometry in the file")
    from ..core.geometry import wgs84_footprints  # lazy: as geopandas

    shapes = frame.geometry.values
    if frame.crs is not None:  # split at 180 degrees (RFC 7946)
        shapes = wgs84_footprints(shapes, frame.crs, points=1)
    union = shapely.union_all(shapes)
    return dict(shapely.geometry.mapping(union))


def _journal_path(out: str) -> Path:
    """Where ``geochip select --out OUT`` keeps its journal: beside a local table, in
    geochip's cache for a URL (named by a hash of the URL)."""
    if not is_url(out):
        path = local_path(out)
        return path.with_name(f".{path.name}.journal.jsonl")
    from ..sources.sample import cache_dir  # lazy: the CLI imports what it runs

    digest = hashlib.sha256(out.encode()).hexdigest()[:24]
    return cache_dir() / "journals" / f"select-{digest}.jsonl"


@app.command()
def search(
    catalog: Annotated[str, typer.Option("--catalog", help=_CATALOG_HELP)],
    collections: Annotated[
        list[str] | None, typer.Option(help="Collections; repeat or separate with commas.")
    ] = None,
    bbox: Annotated[
        str | None, typer.Option(help="west,south,east,north in EPSG:4326 (--bbox=-87.6,...).")
    ] = None,
    intersects: Annotated[
        str | None,
        typer.Option(help="A GeoJSON or vector file (path or URL); its geometries' union."),
    ] = None,
    datetime: Annotated[
        str | None, typer.Option(help="2024, 2024-05, 2024-01-01/2024-06-30, ../2024-01-01.")
    ] = None,
    max_cloud: Annotated[
        float | None, typer.Option(help="Largest eo:cloud_cover, in percent.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the items as an ItemCollection JSON.")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option(help="Also write the items to this ItemCollection JSON (path or URL)."),
    ] = None,
    footprints_out: Annotated[
        str | None,
        typer.Option(
            help="Also write the items' footprints (id, collection, datetime, "
            "eo:cloud_cover) to this GeoJSON (path or URL)."
        ),
    ] = None,
    footprints: Annotated[
        str | None, typer.Option(hidden=True, help="Old name of --footprints-out.")
    ] = None,
    max_items: Annotated[int, typer.Option(min=1, help="Stop with an error past this.")] = 10_000,
    header: _Header = None,
    header_env: _HeaderEnv = None,
    api_key_env: _ApiKeyEnv = None,
) -> None:
    """Search a catalog (API, static, stac-geoparquet or rasters) and list the items."""
    from ..core.geometry import check_bbox  # lazy: the command imports what it runs
    from ..core.security import redact, unsign_href

    box = None
    if bbox is not None:  # checked before the catalog is opened
        try:
            values = [float(v) for v in bbox.split(",")]
        except ValueError:
            raise InputError(
                f"--bbox must be four numbers west,south,east,north: {bbox!r}"
            ) from None
        box = list(check_bbox(values, "--bbox"))
    footprints = footprints_out or footprints
    for destination in (out, footprints):
        if destination is not None:  # refused before the search, not after
            check_file_output(destination)
    cat = _open(catalog, header, header_env, api_key_env, max_items=max_items)
    geometry = _geometry_file(intersects) if intersects is not None else None
    items = cat.search(
        collections=split_list(collections),
        bbox=box,
        intersects=geometry,
        datetime=datetime,
        max_cloud=max_cloud,
    )
    features = []
    for item in items:
        clone = item.clone()
        for asset in clone.assets.values():
            asset.href = unsign_href(asset.get_absolute_href() or asset.href)
        features.append(clone.to_dict(include_self_link=False, transform_hrefs=False))
    text = redact(json.dumps({"type": "FeatureCollection", "features": features}, default=str))
    if out is not None:
        write_text(out, text)
    if footprints is not None:
        shapes = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {
                        "id": item.id,
                        "collection": item.collection_id,
                        "datetime": item.datetime.isoformat() if item.datetime else None,
                        "eo:cloud_cover": item.properties.get("eo:cloud_cover"),
                    },
                    "geometry": item.geometry,
                }
                for item in items
            ],
        }
        write_text(footprints, json.dumps(shapes))
    if as_json:
        typer.echo(text)
        return
    table = Table(title=f"{len(items)} items in {redact(cat.href)}")
    for name in ("id", "collection", "datetime", "eo:cloud_cover"):
        table.add_column(name, justify="right" if name == "eo:cloud_cover" else "left")
    for item in items:
        cover = item.properties.get("eo:cloud_cover")
        table.add_row(
            item.id,
            item.collection_id or "",
            item.datetime.isoformat() if item.datetime else "",
            f"{cover:.2f}" if cover is not None else "-",
        )
    console.print(table)


@app.command()
def select(
    catalog: Annotated[str, typer.Option("--catalog", help=_CATALOG_HELP)],
    labels: Annotated[
        str,
        typer.Option(help="Label collection (STAC, label extension) or vector file of footprints."),
    ],
    start: Annotated[str, typer.Option(help="First day (inclusive), e.g. 2024-01-01.")],
    end: Annotated[str, typer.Option(help="Last day (inclusive), e.g. 2024-12-31.")],
    out: Annotated[
        str,
        typer.Option(help="The selection table (GeoParquet; a path or s3://, gs://, az:// URL)."),
    ],
    periods: Annotated[
        str, typer.Option(help="N equal periods, or 'monthly' or 'seasonal'.")
    ] = "1",
    max_cloud: Annotated[float, typer.Option(help="Cloud threshold to start with (%).")] = 10.0,
    relax_step: Annotated[float, typer.Option(help="Raise the threshold by this (%).")] = 5.0,
    cloud_limit: Annotated[float, typer.Option(help="Never relax past this (%).")] = 50.0,
    k: Annotated[int, typer.Option(min=1, help="Scenes kept per period.")] = 1,
    collections: Annotated[
        list[str] | None, typer.Option(help="Collections; repeat or separate with commas.")
    ] = None,
    cloud_band: Annotated[
        str,
        typer.Option(
            help="Where to count clouds when eo:cloud_cover is missing: auto, none, or "
            "asset:kind[:detail] (qa_pixel:landsat_qa:landsat_c2, SCL:scl, CLD:probability:50)."
        ),
    ] = "auto",
    cloud_over: Annotated[
        str, typer.Option(help="scene (eo:cloud_cover or the whole scene) or footprint.")
    ] = "scene",
    skip_missing_cloud: Annotated[
        bool, typer.Option(help="Leave out scenes without any cloud information.")
    ] = False,
    strict: Annotated[bool, typer.Option(help="Fail on an empty period.")] = False,
    id_column: Annotated[
        str | None, typer.Option(help="Column of the label ids (vector labels).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Labels searched at once.")] = 4,
    max_requests: Annotated[int, typer.Option(min=1, help="HTTP requests open at once.")] = 4,
    header: _Header = None,
    header_env: _HeaderEnv = None,
    api_key_env: _ApiKeyEnv = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over labels.")] = True,
    group_cell: Annotated[
        float | None,
        typer.Option(
            help="Group labels by a grid cell of this many degrees: one search per group, "
            "each cloud band read once (same choices as one search per label)."
        ),
    ] = None,
) -> None:
    """Choose the least cloudy scene per label and period (bounded relaxation); write the
    selection table and its items."""
    from ..core.progress import Stages
    from ..select.cloud import CloudBand
    from ..select.labels import load_labels
    from ..select.search import select_scenes
    from ..select.table import items_location

    if cloud_over not in {"scene", "footprint"}:
        raise InputError(f"--cloud-over must be scene or footprint, got {cloud_over!r}")
    band: Any = (
        None
        if cloud_band == "none"
        else "auto"
        if cloud_band == "auto"
        else CloudBand.parse(cloud_band)
    )
    check_file_output(out)  # refused before any search
    cat = _open(catalog, header, header_env, api_key_env, max_requests=max_requests)
    frame = load_labels(labels, id_column=id_column)
    stages = Stages(enabled=progress, console=console)
    # a selection killed part way resumes from its journal (removed once the table is saved);
    # an object store has no append: the journal of a URL lives in geochip's cache
    journal = _journal_path(out)
    with stages.stage("labels", total=len(frame)) as advance:
        selection = select_scenes(
            cat,
            frame,
            start=start,
            end=end,
            periods=periods,
            max_cloud=max_cloud,
            relax_step=relax_step,
            cloud_limit=cloud_limit,
            k=k,
            collections=split_list(collections),
            cloud_band=band,
            cloud_over=cloud_over,  # type: ignore[arg-type]
            missing_cloud="skip" if skip_missing_cloud else "raise",
            strict=strict,
            workers=workers,
            on_label=advance,
            group_cell=group_cell,
            checkpoint=journal,
        )
    selection.save(out)
    journal.unlink(missing_ok=True)
    s = selection.summary()
    table = Table(title="selection")
    for name in ("labels", "periods", "filled", "relaxed", "empty", "items", "skipped"):
        table.add_column(name, justify="right")
    table.add_row(
        *(str(s[key]) for key in ("labels", "periods", "filled", "relaxed", "empty", "items")),
        str(s["skipped_no_cloud"]),
    )
    console.print(table)
    console.print(
        f"periods filled: {s['filled']}, relaxed: {s['relaxed']}, empty: {s['empty']} "
        f"(of {s['periods']})"
    )
    console.print(f"table: {out}  items: {items_location(out)}")

"""Benchmark scene selection at LandCoverNet scale against a real pgstac STAC API.

Run it alone on the machine (needs PostgreSQL + PostGIS, see the README):

    .venv/bin/python benchmarks/selection.py [--quick] [--json out.json]

One run builds a LandCoverNet-like world (``geochip.testing.landcover``: label tiles over a
few MGRS-like tiles, Sentinel-2 L2A items every few days, decoy tiles elsewhere so the
catalog is bigger than the area of interest, SCL bands as small COGs, ``eo:cloud_cover``
missing on 30 % of the items so their cover is counted from the SCL band), loads it into
pgstac (``geochip.testing.pgstac``), puts a loopback proxy adding 50 ms to every API request
in front of it and serves the COGs with 50 ms added to every request, then selects the
least cloudy scene per label and period three ways, each in its own process:

``notebook``   the LandCoverNet notebook's loop: one search per label, per period, per
               relaxed threshold (eo:cloud_cover <= t or missing), the SCL band read for
               each candidate without eo:cloud_cover, one label after the other
``per-label``  ``select_scenes``: one search per label over the whole range (4 workers)
``grouped``    ``select_scenes(group_cell=1.0)``: one search per group of labels (4 workers)

It reports API requests, COG requests, bytes read (API answers + COG bytes), wall time and
peak RSS of each, checks the three choose the same scenes, and prints the ratios of
``grouped`` to ``notebook`` (targets: >= 10x faster, >= 10x fewer requests).
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `select` module, which subprocess imports:
# take its folder off the import path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

LATENCY = 0.05
WORKERS = 4


def worker(method: str, api: str, labels_path: str, params: dict[str, Any]) -> None:
    """Run one method in this process; print its choices, time and peak RSS as JSON."""
    import geopandas as gpd

    from geochip.select.cloud import cloud_cover
    from geochip.select.periods import make_periods
    from geochip.select.ranking import Candidate, rank_key, thresholds
    from geochip.select.search import select_scenes
    from geochip.sources.items import item_time
    from geochip.sources.open import open_catalog

    labels = gpd.read_file(labels_path)
    cat = open_catalog(api, max_requests=WORKERS, max_items=100_000)
    began = time.perf_counter()
    choices: dict[str, list[str]] = {}
    if method == "notebook" and params.get("notebook_labels"):
        labels = labels.iloc[: params["notebook_labels"]]
    if method == "notebook":
        periods = make_periods(params["periods"], params["start"], params["end"])
        ladder = thresholds(params["max_cloud"], params["relax_step"], params["cloud_limit"])
        for label_id, geom in zip(labels["id"], labels.geometry, strict=True):
            for period in periods:
                picked: list[str] = []
                for threshold in ladder:
                    found = cat.search(
                        intersects=geom,
                        datetime=(period.start, period.end),
                        collections=params["collections"],
                        max_cloud=threshold,
                        keep_missing_cloud=True,
                        allow_empty=True,
                    )
                    under = []
                    for item in found:
                        when = item_time(item)
                        if when is None or not period.contains(when):
                            continue
                        cover = cloud_cover(item, href_policy=cat.href_policy)
                        if cover.value <= threshold:
                            under.append(Candidate(item, when, cover))
                    if under:
                        picked = [min(under, key=rank_key(period)).item.id]
                        break
                choices[f"{label_id}/{period.index}"] = picked
    else:
        selection = select_scenes(
            cat,
            labels,
            start=params["start"],
            end=params["end"],
            periods=params["periods"],
            max_cloud=params["max_cloud"],
            relax_step=params["relax_step"],
            cloud_limit=params["cloud_limit"],
            collections=params["collections"],
            cloud_over=params["cloud_over"],
            workers=WORKERS,
            group_cell=1.0 if method == "grouped" else None,
        )
        for row in selection.table.itertuples():
            choices[f"{row.label_id}/{row.period}"] = list(row.item_ids)
    seconds = time.perf_counter() - began
    peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    print(json.dumps({"seconds": seconds, "rss_mib": peak / 1024, "choices": choices}))


def _cog_bytes(requests: list[Any], sizes: dict[str, int]) -> int:
    total = 0
    for r in requests:
        if r.method != "GET" or r.status not in (200, 206):
            continue
        match = re.match(r"bytes=(\d+)-(\d+)", r.range or "")
        total += int(match.group(2)) - int(match.group(1)) + 1 if match else sizes.get(r.path, 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--cloud-over", choices=["scene", "footprint"], default="scene")
    parser.add_argument(
        "--notebook-labels",
        type=int,
        default=None,
        help="run the notebook's loop on the first N labels only and scale its time, requests "
        "and bytes to all labels (default: all with --quick, 100 otherwise: the full loop "
        "takes hours)",
    )
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, api, labels_path, params = args.worker
        worker(method, api, labels_path, json.loads(params))
        return

    from geochip.testing.http import RangeServer
    from geochip.testing.landcover import landcover_world
    from geochip.testing.pgstac import PgstacServer
    from geochip.testing.proxy import FaultProxy

    if args.quick:
        size = {"tiles": 2, "labels_per_tile": 20, "dates": 48, "decoy_tiles": 40, "periods": 12}
    else:
        size = {"tiles": 5, "labels_per_tile": 400, "dates": 146, "decoy_tiles": 132, "periods": 24}
    methods = ["per-label", "grouped"] if args.cloud_over == "footprint" else [
        "notebook", "per-label", "grouped"
    ]  # fmt: skip
    report: dict[str, Any] = {"size": size, "latency_s": LATENCY, "cloud_over": args.cloud_over}
    with tempfile.TemporaryDirectory(prefix="geochip-bench-select-") as tmp:
        root = Path(tmp)
        with RangeServer(root / "cogs") as files, PgstacServer() as pg:
            report["pgstac_startup_s"] = round(pg.startup_seconds, 2)
            t = time.perf_counter()
            world = landcover_world(
                root / "cogs",
                files.url(""),
                tiles=size["tiles"],
                labels_per_tile=size["labels_per_tile"],
                dates=size["dates"],
                decoy_tiles=size["decoy_tiles"],
                days=730,
                start="2023-01-01",
                patterns=8,
                qa_pixels=512,
            )
            report["world_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            pg.load([], world.items)
            report["load_s"] = round(time.perf_counter() - t, 1)
            report["items"] = len(world.items)
            report["labels"] = len(world.labels)
            labels_path = root / "labels.geojson"
            world.labels.to_file(labels_path, driver="GeoJSON")
            sizes = {
                p.relative_to(root / "cogs").as_posix(): p.stat().st_size
                for p in (root / "cogs").rglob("*.tif")
            }
            subset = args.notebook_labels or (None if args.quick else 100)
            params = {
                "notebook_labels": subset,
                "start": "2023-01-01",
                "end": "2024-12-31",
                "periods": size["periods"],
                "max_cloud": 10.0,
                "relax_step": 10.0,
                "cloud_limit": 60.0,
                "collections": world.collection,
                "cloud_over": args.cloud_over,
            }
            print(
                f"{report['items']} items, {report['labels']} labels, {size['periods']} periods;"
                f" pgstac up in {report['pgstac_startup_s']} s, loaded in {report['load_s']} s",
                flush=True,
            )
            files.add_fault("delay", rate=1.0, seconds=LATENCY)
            results: dict[str, Any] = {}
            with FaultProxy(pg.url, latency=LATENCY) as proxy:
                for method in methods:
                    proxy.clear()
                    before = len(files.requests)
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", method, proxy.url,
                         str(labels_path), json.dumps(params)],
                        capture_output=True, text=True, check=False,
                    )  # fmt: skip
                    if out.returncode != 0:
                        raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    cog = files.requests[before:]
                    api = proxy.requests
                    results[method] = {
                        "seconds": round(got["seconds"], 2),
                        "api_requests": len(api),
                        "cog_requests": len(cog),
                        "requests": len(api) + len(cog),
                        "api_mib": round(sum(r.sent for r in api) / 2**20, 2),
                        "cog_mib": round(_cog_bytes(cog, sizes) / 2**20, 2),
                        "rss_mib": round(got["rss_mib"], 1),
                        "choices": got["choices"],
                    }
                    r = results[method]
                    run = len(got["choices"]) // size["periods"]
                    if run < report["labels"]:  # a subset of the labels: scale to all
                        scale = report["labels"] / run
                        r["labels_run"] = run
                        for key in ("seconds", "api_requests", "cog_requests", "requests"):
                            r[key] = round(r[key] * scale, 2)
                        for key in ("api_mib", "cog_mib"):
                            r[key] = round(r[key] * scale, 2)
                        print(f"{method:>10}: ran {run} labels, scaled x{scale:.1f} to all")
                    print(
                        f"{method:>10}: {r['seconds']:8.2f} s  {r['api_requests']:8.0f} API + "
                        f"{r['cog_requests']:7.0f} COG requests  {r['api_mib']:8.2f} + "
                        f"{r['cog_mib']:8.2f} MiB  peak RSS {r['rss_mib']:.0f} MiB",
                        flush=True,
                    )
    reference = results[methods[-1]]["choices"]
    same = all(
        results[m]["choices"] == {k: reference[k] for k in results[m]["choices"]} for m in methods
    )
    chosen = sum(1 for v in reference.values() if v)
    report["same_choices"] = same
    report["filled_periods"] = f"{chosen}/{len(reference)}"
    for r in results.values():
        del r["choices"]
    report["results"] = results
    base, grouped = results[methods[0]], results["grouped"]
    report["grouped_vs_" + methods[0]] = {
        "faster": round(base["seconds"] / grouped["seconds"], 1),
        "fewer_requests": round(base["requests"] / max(grouped["requests"], 1), 1),
    }
    print(f"same choices: {same} ({report['filled_periods']} label-periods filled)")
    print(f"grouped vs {methods[0]}: {report['grouped_vs_' + methods[0]]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not same:
        raise SystemExit("the methods chose different scenes")


if __name__ == "__main__":
    main()

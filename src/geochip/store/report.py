"""One self-contained HTML page about a store (:func:`write_report`, ``geochip report``):
the split map, class balance per split, band statistics, sample chips with their masks,
the config and provenance, and failures. Everything is inline (SVG, PNG as data URIs, no
script, no CDN), so the file works offline and can be attached to an issue or a paper.

Numbers on the page carry ``data-key`` attributes (``chips-<split>``,
``pixels-<split>-<class id>``, ``count-<split>-<band>``) so that a test can read them back.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from odc.geo.geobox import GeoBox
    >>> from geochip.plan.chips import plan_chips
    >>> from geochip.plan.splits import assign_splits
    >>> from geochip.store.writer import ChipSource, write_store
    >>> g = GeoBox.from_bbox((500_000, 0, 500_640, 640), "EPSG:32633", resolution=10)
    >>> plan = assign_splits(plan_chips(g, 16), block_size=32).plan
    >>> image = np.arange(3 * 64 * 64).reshape(3, 64, 64).astype("uint16") + 1
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_store(tmp / "ds", plan, {"grid": ChipSource(image, ["red", "green",
    ...                    "blue"], 0, mask=np.ones((64, 64)))}, classes={"field": 1})
    >>> page = write_report(path, tmp / "report.html")
    >>> "<svg" in page.read_text() and "data:image/png;base64," in page.read_text()
    True
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import box

from ..core.files import output_file, write_text
from ..core.storage import is_url, local_path, read_bytes
from ..core.vectors import read_vector
from ..errors import BrowserNotFoundError, GeochipError, InputError
from ..plan.splits import SPLITS
from ..sources.sample import sample_labels_path
from .bandstats import PERCENTILES, store_stats
from .check import check_store
from .format import MASK_IGNORE
from .reader import ChipStore, open_store
from .viz import _CLASS_COLOURS, _SPLIT_COLOURS, _mask_image, rgb_image

__all__ = [
    "find_chromium",
    "screenshot",
    "write_report",
]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:4px;text-align:center;font-size:11px}
img.chip{width:128px;height:128px;image-rendering:pixelated;border:1px solid #999}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #666;margin-right:4px}
.leak{stroke:#e00;stroke-width:3}pre{background:#f6f6f6;padding:8px;overflow:auto}
.warn{color:#b00}
"""


_DEFAULT_NAMES = {0: "background", MASK_IGNORE: "ignore"}


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _class_colour(value: int) -> str:
    if value == MASK_IGNORE:
        return "#808080"
    return _hex(_CLASS_COLOURS[value % len(_CLASS_COLOURS)])


def _png(array: npt.NDArray[Any]) -> str:
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.clip(array, 0, 1), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, key: str) -> str:
    text = "-" if value is None else f"{value:,.6g}" if isinstance(value, float) else f"{value}"
    return f'<td class="n" data-key="{_e(key)}">{_e(text)}</td>'


def _split_map(store: ChipStore, leaks: Any, labels: Any) -> str:
    index = store.index
    leaking = set(leaks["chip_a"]) | set(leaks["chip_b"]) if len(leaks) else set()
    panels = []
    outlines = 0
    for crs in sorted(set(index["crs"])):
        rows = index[index["crs"] == crs]
        x0, x1 = float(rows["minx"].min()), float(rows["maxx"].max())
        y0, y1 = float(rows["miny"].min()), float(rows["maxy"].max())
        span = max(x1 - x0, y1 - y0) or 1.0
        size = 560.0
        k = size / span
        width, height = (x1 - x0) * k, (y1 - y0) * k
        shapes = []
        for row in rows.itertuples():
            status = getattr(row, "status", "ok")
            split = str(getattr(row, "split", "all"))
            fill = _SPLIT_COLOURS.get(split, "#888888") if status == "ok" else "#bbbbbb"
            if status == "failed":
                fill = "#000000"
            cls = ' class="leak"' if row.chip_id in leaking else ""
            shapes.append(
                f'<rect x="{(row.minx - x0) * k:.2f}" y="{(y1 - row.maxy) * k:.2f}" '
                f'width="{(row.maxx - row.minx) * k:.2f}" height="{(row.maxy - row.miny) * k:.2f}" '
                f'fill="{fill}" fill-opacity="0.6" stroke="#fff" stroke-width="0.5"{cls} '
                f'data-split="{_e(split)}" data-status="{_e(status)}">'
                f"<title>{_e(row.chip_id)} ({_e(split)}, {_e(status)})</title></rect>"
            )
        if labels is not None:
            outlined = _outlines(labels, crs, (x0, y0, x1, y1), 0.5 / k)
            outlines += len(outlined)
            for geom in outlined:
                for ring in _rings(geom):
                    points = " ".join(f"{(x - x0) * k:.1f},{(y1 - y) * k:.1f}" for x, y in ring)
                    shapes.append(
                        f'<polyline points="{points}" fill="none" stroke="#111" '
                        'stroke-width="1" class="label"/>'
                    )
        title = crs if len(crs) < 40 else "a WKT CRS"
        panels.append(
            f"<figure><svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' "
            f"height='{height:.0f}' viewBox='0 0 {width:.2f} {height:.2f}' "
            f"role='img' aria-label='split map'>{''.join(shapes)}</svg>"
            f"<figcaption>{len(rows)} chips in {_e(title)}</figcaption></figure>"
        )
    legend = " ".join(
        f'<span class="swatch" style="background:{c}"></span>{s}' for s, c in _SPLIT_COLOURS.items()
    )
    legend += (
        ' <span class="swatch" style="background:#bbbbbb"></span>over the nodata limit'
        ' <span class="swatch" style="background:#000"></span>failed'
        ' <span class="swatch" style="border:3px solid #e00"></span>leak'
        + (
            f' — black lines: outlines of <span data-key="label-shapes">{outlines}</span> '
            "label shapes over the chips"
            if labels is not None
            else ""
        )
    )
    leak_text = (
        f'<p class="warn" data-key="leaks">{len(leaks)} leaking pairs (outlined red)</p>'
        if len(leaks)
        else '<p data-key="leaks">0 leaking pairs</p>'
    )
    return "".join(panels) + f"<p>{legend}</p>" + leak_text


def _rings(geom: Any) -> list[list[tuple[float, float]]]:
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [list(geom.exterior.coords)]
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [r for g in geom.geoms for r in _rings(g)]
    if geom.geom_type in ("LineString", "LinearRing"):
        return [list(geom.coords)]
    return []


def _outlines(labels: Any, crs: str, bounds: tuple[float, ...], tolerance: float) -> list[Any]:
    """The label shapes over ``bounds`` (in ``crs``), clipped to them and simplified to
    about a pixel of the map (``tolerance``)."""
    shapes = labels.to_crs(crs).geometry
    shapes = shapes[shapes.notna() & ~shapes.is_empty & shapes.intersects(box(*bounds))]
    clipped = shapely.clip_by_rect(shapes.to_numpy(), *bounds)
    return [g for g in shapely.simplify(clipped, tolerance) if not g.is_empty]


def _labels(store: ChipStore) -> Any:
    """The vector label shapes of the build config (``path: sample``: the packaged demo
    labels), when the file is still there; None otherwise (no outlines)."""
    labels = (store.manifest.get("config") or {}).get("labels") or {}
    if not isinstance(labels, dict) or labels.get("kind", "vector") != "vector":
        return None
    path = labels.get("path")
    path = sample_labels_path() if path == "sample" else path
    if not path or not Path(str(path)).is_file():
        return None
    try:
        return read_vector(path, layer=labels.get("layer"), what="label file")
    except (GeochipError, OSError, ValueError):  # a file gone bad since: no outlines
        return None


def _balance(store: ChipStore) -> str:
    classes = (store.manifest.get("mask") or {}).get("classes") or {}
    names = {int(v): k for k, v in classes.items()}
    counts = store.manifest.get("counts", {})
    per_split = counts.get("pixels_per_class_per_split", {})
    balance = {
        s: {"chips": n, "pixels": per_split.get(s, {})} for s, n in counts.get("splits", {}).items()
    }
    ids = sorted({int(c) for b in balance.values() for c in b["pixels"]})
    if not ids:
        return "<p>No class counts (the store has no mask).</p>" + "".join(
            f"<p>{_e(s)}: {_num(b['chips'], f'chips-{s}').replace('td', 'span')} chips</p>"
            for s, b in balance.items()
        )
    head = "".join(
        f'<th><span class="swatch" style="background:{_class_colour(c)}"></span>'
        f"{c} {_e(names.get(c, _DEFAULT_NAMES.get(c, '')))}</th>"
        for c in ids
    )
    rows, bars = [], []
    for split, b in balance.items():
        pixels = {int(k): int(v) for k, v in b["pixels"].items()}
        total = sum(v for k, v in pixels.items() if k != MASK_IGNORE) or 1
        cells = "".join(_num(pixels.get(c, 0), f"pixels-{split}-{c}") for c in ids)
        rows.append(f"<tr><th>{_e(split)}</th>{_num(b['chips'], f'chips-{split}')}{cells}</tr>")
        x = 0.0
        parts = []
        for c in ids:
            if c == MASK_IGNORE:
                continue
            w = pixels.get(c, 0) / total * 400
            parts.append(
                f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="18" fill="{_class_colour(c)}">'
                f"<title>{c}: {pixels.get(c, 0) / total:.1%}</title></rect>"
            )
            x += w
        bars.append(
            f"<div>{_e(split)} <svg xmlns='http://www.w3.org/2000/svg' width='400' height='18' "
            f"role='img' aria-label='class shares of {_e(split)}'>{''.join(parts)}</svg></div>"
        )
    return (
        f"<table><tr><th>split</th><th>chips</th>{head}</tr>{''.join(rows)}</table>"
        f"<p>Share of labelled pixels per class:</p>{''.join(bars)}"
    )


def _stats_table(store: ChipStore) -> str:
    doc = store_stats(store)
    keys = ["count", "mean", "std", "min", "max", *(f"p{q}" for q in PERCENTILES)]
    out = [
        f"<p>Valid pixels only ({_e(doc['valid'])}); {_e(doc['bins'])} histogram bins; "
        f"std {_e(doc['std'])}.</p>"
    ]
    for split, bands in doc["splits"].items():
        rows = "".join(
            f"<tr><th>{_e(band)}</th>"
            + "".join(_num(bands[band][k], f"{k}-{split}-{band}") for k in keys)
            + "</tr>"
            for band in doc["bands"]
        )
        head = "".join(f"<th>{k}</th>" for k in keys)
        out.append(f"<h3>{_e(split)}</h3><table><tr><th>band</th>{head}</tr>{rows}</table>")
    return "".join(out)


def _step_stats(store: ChipStore) -> str:
    """Per time step and band (time stacks): count, mean and std per split, when the build
    kept them (``stats: {per_step: true}``)."""
    if len(store.manifest["image"]["shape"]) != 5:
        return ""
    doc = store.manifest.get("stats") or {}
    if "per_step" not in doc:
        return (
            "<h3>Per time step</h3><p>Not kept by this build: build with <code>stats: "
            "{per_step: true}</code>, or write them with <code>geochip stats DIR --per-step "
            "--save</code>.</p>"
        )
    periods = (store.manifest.get("time") or {}).get("periods") or []
    names = [str(p.get("name", t)) for t, p in enumerate(periods)]
    bands = doc["bands"]
    head = "".join(f"<th colspan='3'>{_e(b)}</th>" for b in bands)
    sub = "<th>count</th><th>mean</th><th>std</th>" * len(bands)
    out = ["<h3>Per time step (valid pixels of each step)</h3>"]
    for split, steps in doc["per_step"]["splits"].items():
        rows = []
        for t, step in enumerate(steps):
            cells = "".join(
                _num(step[b][k], f"step-{k}-{split}-{t}-{b}")
                for b in bands
                for k in ("count", "mean", "std")
            )
            name = names[t] if t < len(names) else str(t)
            rows.append(f"<tr><th>{t}</th><td>{_e(name)}</td>{cells}</tr>")
        out.append(
            f"<h4>{_e(split)}</h4><table><tr><th rowspan='2'>step</th>"
            f"<th rowspan='2'>period</th>{head}</tr><tr>{sub}</tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def _rgb_bands(bands: Sequence[str]) -> list[str]:
    if all(b in bands for b in ("red", "green", "blue")):
        return ["red", "green", "blue"]
    return [bands[min(i, len(bands) - 1)] for i in range(3)]


def _samples(store: ChipStore, per_split: int) -> str:
    index = store.ok()
    nodata = store.manifest["image"].get("nodata")
    rgb = _rgb_bands(store.bands)
    groups = [(s, index[index["split"] == s]) for s in SPLITS] if "split" in index else []
    if not groups:
        groups = [("all", index)]
    out = [
        f"<p>RGB = bands {', '.join(_e(b) for b in rgb)}; each band stretched from its 2nd to "
        "its 98th percentile within the chip (nodata black); time stacks show the first "
        "step. Masks below each chip.</p>"
    ]
    classes = (store.manifest.get("mask") or {}).get("classes") or {}
    if store.has_mask:
        legend = [
            f'<span class="swatch" style="background:{_class_colour(0)}"></span>0 background '
        ]
        legend += [
            f'<span class="swatch" style="background:{_class_colour(int(v))}"></span>'
            f"{int(v)} {_e(k)} "
            for k, v in sorted(classes.items(), key=lambda kv: int(kv[1]))
            if int(v) != 0
        ]
        legend.append(
            f'<span class="swatch" style="background:#808080"></span>{MASK_IGNORE} ignore'
        )
        out.append(f"<p>Classes: {''.join(legend)}</p>")
    for split, rows in groups:
        figures = []
        for row in rows.head(per_split).itertuples():
            image, mask = store.read(int(row.index))
            chip = _png(rgb_image(image, store.bands, nodata, rgb))
            cell = f'<img class="chip" src="{chip}" alt="chip {_e(row.chip_id)}">'
            if mask is not None:
                cell += f'<br><img class="chip" src="{_png(_mask_image(mask))}" '
                cell += f'alt="mask {_e(row.chip_id)}">'
            figures.append(f"<figure>{cell}<figcaption>{_e(row.chip_id)}</figcaption></figure>")
        out.append(f"<h3>{_e(split)}</h3>{''.join(figures) or '<p>no usable chip</p>'}")
    return "".join(out)


def _provenance(store: ChipStore) -> str:
    m = store.manifest
    index = store.index
    out = [f"<p>Written by {_e(json.dumps(m.get('versions', {}), sort_keys=True))}</p>"]
    items = m.get("items")
    if items:
        out.append(f"<p>{len(items)} item(s): {_e(', '.join(map(str, items[:50])))}</p>")
    selection = store.path / "selection.parquet"
    if selection.exists():
        import pandas as pd  # lazy: only stores built with selection have the table

        table = pd.read_parquet(io.BytesIO(selection.read_bytes()))
        keep = [c for c in table.columns if c not in ("geometry",)]
        out.append("<h3>Selection (cloud cover per chosen scene)</h3>")
        out.append(table[keep].head(200).to_html(index=False, border=0))
    else:
        out.append(
            "<p>Cloud cover per scene: not recorded (the store was built without "
            "<code>selection</code>).</p>"
        )
    if "grid_id" in index:
        rows = []
        for gid, group in index.groupby("grid_id", sort=True):
            first = group.iloc[0]
            rows.append(
                f"<tr><td>{_e(gid)}</td><td class='n'>{len(group)}</td>"
                f"<td>{_e(', '.join(map(str, list(first['item_ids'])[:6])))}</td>"
                f"<td>{_e(', '.join(map(str, list(first['datetimes'])[:6])))}</td></tr>"
            )
        out.append(
            "<table><tr><th>grid</th><th>chips</th><th>items</th><th>dates</th></tr>"
            + "".join(rows[:200])
            + "</table>"
        )
    config = json.dumps(m.get("config", {}), indent=2, sort_keys=True)
    out.append(f"<details open><summary>config</summary><pre>{_e(config)}</pre></details>")
    return "".join(out)


def _failures(store: ChipStore) -> str:
    index = store.index
    counts = store.manifest.get("counts", {})
    failed = index[index["status"] == "failed"]
    out = [
        f'<p><span data-key="failed">{int(counts.get("failed", len(failed)))}</span> failed, '
        f'<span data-key="nodata">{int(counts.get("nodata", 0))}</span> over the nodata '
        "limit.</p>"
    ]
    if len(failed):
        rows = "".join(
            f"<tr><td>{_e(r.chip_id)}</td><td>{_e(r.error)}</td></tr>"
            for r in failed.head(100).itertuples()
        )
        out.append(f"<table><tr><th>chip</th><th>error</th></tr>{rows}</table>")
    return "".join(out)


def write_report(
    store: str | Path | ChipStore, out: str | Path, *, per_split: int = 4
) -> str | Path:
    """Write the report page of ``store`` to ``out`` (a local path, atomically, or a URL:
    one upload); return it (a local one as a :class:`~pathlib.Path`).

    Raises :class:`~geochip.errors.StoreError` for a folder that is not a complete store
    (e.g. still being built) and :class:`~geochip.errors.InputError` for a store without
    splits or without a usable chip.
    """
    store = store if isinstance(store, ChipStore) else open_store(store)
    if "split" not in store.index.columns or not store.manifest.get("counts", {}).get("splits"):
        raise InputError(
            f"{store.path} has no splits (its index has no usable chip in train/val/test); "
            "the report compares splits: build it with a `split` section"
        )
    check = check_store(store.path, integrity=False)
    name = store.path.name
    counts = store.manifest.get("counts", {})
    sections = [
        ("Split map", _split_map(store, check.leaks, _labels(store))),
        ("Class balance per split", _balance(store)),
        ("Band statistics", _stats_table(store) + _step_stats(store)),
        ("Sample chips", _samples(store, per_split)),
        ("Config and provenance", _provenance(store)),
        ("Failures", _failures(store)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>geochip report: {_e(name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>geochip report: {_e(name)}</h1>"
        f"<p><span data-key='chips'>{int(counts.get('chips', len(store)))}</span> chips, "
        f"<span data-key='ok'>{int(counts.get('ok', 0))}</span> usable; image "
        f"{_e(store.manifest['image']['shape'])} {_e(store.manifest['image']['dtype'])}, "
        f"bands {_e(', '.join(store.bands))}.</p>{body}</body></html>\n"
    )
    write_text(out, page)  # a rename locally, one PUT for a URL
    return out if is_url(out) else local_path(out)


def find_chromium() -> str | None:
    """The headless browser that :func:`screenshot` runs (Debian's ``chromium``), if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(
    page: str | Path, png: str | Path, *, width: int = 1280, height: int = 2400
) -> str | Path:
    """A PNG of the top ``height`` pixels of ``page`` (a report; a path or URL) as headless
    Chromium shows it, written atomically to ``png`` (a path or URL);
    :class:`~geochip.errors.BrowserNotFoundError` when there is no Chromium."""
    browser = find_chromium()
    if browser is None:
        raise BrowserNotFoundError(
            f"a screenshot of {page} needs headless Chromium and there is none on PATH; "
            "install it (Debian: apt-get install chromium) or leave out --screenshot-out"
        )
    with tempfile.TemporaryDirectory() as profile, output_file(png) as tmp:
        shot = Path(profile) / "page.png"  # Chromium names the format by the suffix
        if is_url(page):  # a report in a bucket: Chromium opens a local copy
            local = Path(profile) / "report.html"
            local.write_bytes(read_bytes(page))
            page = local
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={shot}",
                local_path(page).resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0 or not shot.exists():
            raise BrowserNotFoundError(
                f"{browser} did not take a screenshot of {page} (exit {done.returncode}): "
                f"{done.stderr.strip()[-300:]}"
            )
        shutil.move(shot, tmp)
    return png if is_url(png) else local_path(png)

"""The report page, opened in a real headless Chromium: it renders without console errors,
every image decodes, it loads nothing from the network, and its numbers match the index."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.plan.chips import plan_chips
from geochip.plan.splits import assign_splits
from geochip.store.reader import open_store
from geochip.store.writer import ChipSource, write_store

pytestmark = pytest.mark.xdist_group("chromium")

# appended to a copy of the page: writes what the browser decoded into the DOM
_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const result = {
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    svgs: document.querySelectorAll("svg").length,
  };
  const out = document.createElement("pre");
  out.id = "geochip-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed: apt-get install -y chromium (.ci/run does)"
    return found


def _open(page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, on ``page``; console messages go to stderr."""
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


class _Keys(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        key = dict(attrs).get("data-key")
        if key:
            self._key = key
            self.values[key] = ""

    def handle_data(self, data: str) -> None:
        if self._key:
            self.values[self._key] += data

    def handle_endtag(self, tag: str) -> None:
        self._key = None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    gbox = GeoBox.from_bbox((500_000, 0, 501_280, 1280), "EPSG:32633", resolution=10)
    plan = assign_splits(plan_chips(gbox, 32), block_size=64, seed=2).plan
    rng = np.random.default_rng(0)
    image = rng.integers(1, 4000, (4, 128, 128)).astype("uint16")
    image[:, :10, :] = 0
    mask = rng.integers(0, 3, (128, 128)).astype("uint8")
    path = write_store(
        tmp / "ds",
        plan,
        {"grid": ChipSource(image, ["blue", "green", "red", "nir"], 0, mask)},
        classes={"water": 1, "field": 2},
    )
    out = tmp / "report.html"
    command = ["report", str(path), "--out", str(out), "--screenshot-out", str(tmp / "report.png")]
    done = subprocess.run(
        [sys.executable, "-m", "geochip", *command], capture_output=True, text=True, check=True
    )
    assert "report.html" in done.stdout and "report.png" in done.stdout
    return path, tmp / "report.html"


def test_the_console_check_sees_an_error(tmp_path: Path) -> None:
    # the control: a page that logs an error is caught, so silence below means something
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom-42')</script></body></html>")
    assert any("boom-42" in line for line in _console(_open(page, "--dump-dom").stderr))


def test_report_renders_in_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    store_path, html = report
    text = html.read_text()
    # offline: nothing to fetch (the only URL is SVG's namespace)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text
    page = tmp_path / "page.html"
    page.write_text(text.replace("</body>", _CHECK + "</body>"))
    shown = _open(page, "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert _console(shown.stderr) == []
    found = re.search(r'<pre id="geochip-check">(.*?)</pre>', shown.stdout)
    assert found, shown.stdout[-2000:]
    result = json.loads(found.group(1))
    assert result["images"] == text.count("<img ") == 2 * 3 * 4  # 4 chips + masks, 3 splits
    assert result["decoded"] == result["images"]
    assert result["svgs"] >= 4  # the map and a bar per split

    # the numbers on the page, as the browser has them, against the index
    keys = _Keys()
    keys.feed(shown.stdout)
    store = open_store(store_path)
    ok = store.index[store.index["status"] == "ok"]
    for split, rows in ok.groupby("split"):
        assert int(keys.values[f"chips-{split}"]) == len(rows)
        totals: dict[str, int] = {}
        for text_counts in rows["class_counts"]:
            for c, n in json.loads(text_counts).items():
                totals[c] = totals.get(c, 0) + n
        for c, n in totals.items():
            assert int(keys.values[f"pixels-{split}-{c}"]) == n
        image = np.asarray(store.image[:])[rows["index"].to_numpy()]
        valid = int((image != 0).all(axis=1).sum())
        for band in store.bands:
            assert int(keys.values[f"count-{split}-{band}"]) == valid
    assert keys.values["leaks"].startswith("0 ")
    assert keys.values["failed"] == "0"

    # the screenshot for people (`geochip report --screenshot-out`; `make demo` keeps one as
    # demo-output/report.png): a PNG of the page's width, not blank
    shot = html.with_suffix(".png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and float(pixels[..., :3].std()) > 0.05

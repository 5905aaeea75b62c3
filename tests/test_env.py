"""GDAL/HTTP settings in one place; retries on transient HTTP failures, none on permanent ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from geochip.core.env import DEFAULTS, GdalEnv
from geochip.core.gdal import set_block_cache
from geochip.core.retry import call_with_retries, is_transient
from geochip.errors import ConfigError, RasterReadError
from geochip.plan.scenes import plan_scenes
from geochip.read.open import open_scene, open_scenes
from geochip.read.stream import ChipStream
from geochip.testing import make_cog
from geochip.testing.http import RangeServer

FAST = GdalEnv.default().with_retries(6, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("http")
    out = []
    for k in range(2):
        grid = GeoBox.from_bbox(
            (500_000 + k * 1e4, 0, 500_000 + k * 1e4 + 7_680, 5_120), "EPSG:32633", resolution=10
        )
        out.append(
            make_cog(folder / f"s{k}.tif", grid, bands=2, tile=256, pattern="random", seed=k)
        )
    return out


def test_defaults_set_retries_timeouts_and_no_readdir() -> None:
    env = GdalEnv.default()
    for name in ("GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_TIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME"):
        assert int(env.options[name]) > 0
    assert env.options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert env.options == DEFAULTS


def test_user_overrides_replace_defaults() -> None:
    env = GdalEnv.default().with_options(GDAL_HTTP_TIMEOUT=7, GDAL_HTTP_UNSAFESSL=True)
    assert env.options["GDAL_HTTP_TIMEOUT"] == "7"
    assert env.options["GDAL_HTTP_UNSAFESSL"] == "YES"
    assert GdalEnv.default().options["GDAL_HTTP_TIMEOUT"] == DEFAULTS["GDAL_HTTP_TIMEOUT"]


def test_misspelt_option_is_refused_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"'GDAL_HTTP_MAX_RETRIES'.*did you mean 'GDAL_HTTP_MAX_RETRY'"
    ):
        GdalEnv.default().with_options(GDAL_HTTP_MAX_RETRIES=3)


def test_unknown_option_allowed_on_request() -> None:
    env = GdalEnv.default().with_options(allow_unknown=True, GDAL_SOMETHING_NEW="1")
    assert env.options["GDAL_SOMETHING_NEW"] == "1"


def test_repr_hides_secrets() -> None:
    env = GdalEnv.default().with_options(
        AWS_SECRET_ACCESS_KEY="planted-secret-1",
        GDAL_HTTP_HEADERS="Authorization: Bearer planted-secret-2",
        GDAL_HTTP_PROXY="http://user:planted-secret-3@proxy:8080",
    )
    text = repr(env) + str(env)
    assert "planted-secret" not in text
    assert "AWS_SECRET_ACCESS_KEY" in text


@pytest.mark.parametrize(
    ("message", "path", "transient"),
    [
        ("HTTP response code: 503", "/vsicurl/http://h/a.tif", True),
        ("CURL error: Connection reset by peer", "https://h/a.tif", True),
        ("HTTP response code: 404", "/vsicurl/http://h/a.tif", False),
        ("HTTP response code: 403", "/vsicurl/http://h/a.tif", False),
        ("TIFFReadEncodedTile() failed", "/data/a.tif", False),
    ],
)
def test_transient_or_permanent(message: str, path: str, transient: bool) -> None:
    assert is_transient(OSError(message), path) is transient


def test_call_with_retries_retries_transient_then_succeeds() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("HTTP response code: 502")
        return "ok"

    assert call_with_retries(flaky, "https://h/a.tif", FAST, sleep=waits.append) == "ok"
    assert len(calls) == 3
    assert len(waits) == 2 and waits[1] > 0


def test_call_with_retries_gives_up_on_404_at_once() -> None:
    calls: list[int] = []

    def missing() -> None:
        calls.append(1)
        raise OSError("HTTP response code: 404")

    with pytest.raises(OSError, match="404"):
        call_with_retries(missing, "https://h/a.tif", FAST, sleep=lambda _: None)
    assert len(calls) == 1


def test_unrecognised_remote_file_is_tried_once_more_only() -> None:
    calls: list[int] = []

    def not_a_raster() -> None:
        calls.append(1)
        raise OSError("'/vsicurl/http://h/x' not recognized as being in a supported file format")

    with pytest.raises(OSError, match="not recognized"):
        call_with_retries(not_a_raster, "/vsicurl/http://h/x", FAST, sleep=lambda _: None)
    assert len(calls) == 3


def test_truncated_header_on_open_is_retried(cogs: list[Path]) -> None:
    with RangeServer(cogs[0].parent) as server:
        server.add_fault("truncate", count=1, ranged_only=True)
        scene = open_scene(server.url(cogs[0].name), env=FAST)
        assert [r.fault for r in server.requests].count("truncate") == 1
    assert scene.geobox == open_scene(cogs[0]).geobox


def test_curl_cache_is_cleared_in_rasterio_gdal_even_with_pyogrio_loaded() -> None:
    import pyogrio  # noqa: F401 - loads a second libgdal in the process

    from geochip.core.gdal import _gdal

    assert "rasterio" in str(_gdal()._name)


def test_block_cache_is_capped() -> None:
    from geochip.core.gdal import _gdal

    lib = _gdal()
    before = lib.GDALGetCacheMax64()
    set_block_cache(32)
    assert lib.GDALGetCacheMax64() == min(before, 32 << 20)
    lib.GDALSetCacheMax64(before)


def _reference(cogs: list[Path]) -> list[np.ndarray]:
    scenes = open_scenes(cogs)
    plan = plan_scenes(scenes, 128, overlap=64)
    return [b.image.copy() for b in ChipStream(plan, scenes).batch(7)]


@pytest.mark.parametrize("kind", ["status", "reset", "truncate"])
def test_transient_faults_still_give_byte_identical_chips(cogs: list[Path], kind: str) -> None:
    expected = _reference(cogs)
    with RangeServer(cogs[0].parent, seed=1) as server:
        scenes = open_scenes([server.url(p.name) for p in cogs], env=FAST)
        server.add_fault(kind, rate=0.2, status=503, ranged_only=True)
        plan = plan_scenes(scenes, 128, overlap=64)
        got = [b.image.copy() for b in ChipStream(plan, scenes, env=FAST).batch(7)]
        faults = [r for r in server.requests if r.fault]
    assert faults, "the server injected no fault"
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.tobytes() == b.tobytes()


def test_mixed_faults_429_and_5xx_across_threads(cogs: list[Path]) -> None:
    expected = _reference(cogs)
    with RangeServer(cogs[0].parent, seed=2) as server:
        server.add_fault("status", rate=0.1, status=429, ranged_only=True)
        server.add_fault("status", rate=0.1, status=500, ranged_only=True)
        server.add_fault("reset", rate=0.05)
        scenes = open_scenes([server.url(p.name) for p in cogs], env=FAST)
        plan = plan_scenes(scenes, 128, overlap=64)
        got = [b.image.copy() for b in ChipStream(plan, scenes, env=FAST, threads=3).batch(7)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, expected, strict=True))


def test_stall_is_cut_by_the_low_speed_limit_and_retried(cogs: list[Path]) -> None:
    env = FAST.with_options(GDAL_HTTP_LOW_SPEED_TIME=1, GDAL_HTTP_LOW_SPEED_LIMIT=1000)
    local = open_scene(cogs[0])
    with RangeServer(cogs[0].parent) as server:
        scene = open_scene(server.url(cogs[0].name), env=env)
        server.add_fault("stall", count=1, ranged_only=True, seconds=30)
        data = scene.read(env=env)
    assert np.array_equal(data, local.read())


def test_permanent_failure_surfaces_quickly_without_retries(cogs: list[Path]) -> None:
    import time

    with RangeServer(cogs[0].parent) as server:
        scene = open_scene(server.url(cogs[0].name), env=FAST)
        server.add_fault("status", rate=1.0, status=403, ranged_only=True)
        server.clear_requests()
        start = time.monotonic()
        with pytest.raises(RasterReadError, match=r"s0.tif: reading rows 0:512.*HTTP.*403"):
            scene.read(env=FAST)
        assert time.monotonic() - start < 10
        # one failed read, one one-byte status probe, and no retry after it
        probes = [i for i, r in enumerate(server.requests) if r.range == "bytes=0-0"]
        assert len(probes) == 1
        assert probes[0] == len(server.requests) - 1


def test_endless_5xx_gives_up_after_the_retry_budget(cogs: list[Path]) -> None:
    env = GdalEnv.default().with_options(GDAL_HTTP_MAX_RETRY=0).with_retries(2, backoff=0.01)
    with RangeServer(cogs[0].parent) as server:
        scene = open_scene(server.url(cogs[0].name), env=env)
        server.add_fault("status", rate=1.0, status=503, ranged_only=True)
        server.clear_requests()
        with pytest.raises(RasterReadError, match=r"HTTP response code: 503"):
            scene.read(env=env)
        # the first try and 2 retries, each failure classified by one status probe
        assert sum(r.range == "bytes=0-0" for r in server.requests) == 3


def test_a_reader_thread_takes_the_options_of_each_stream_it_serves() -> None:
    import threading

    from rasterio.env import get_gdal_config

    seen: list[object] = []

    def serve() -> None:
        for timeout in (7, 7, 9):
            GdalEnv.default().with_options(GDAL_HTTP_TIMEOUT=timeout).ensure_thread()
            seen.append(get_gdal_config("GDAL_HTTP_TIMEOUT"))

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()
    assert [str(v) for v in seen] == ["7", "7", "9"]


def test_an_error_gdal_signals_but_does_not_raise_fails_the_read(tmp_path: Path) -> None:
    # GDAL can log a failure and still return data (a truncated tile index read over HTTP
    # leaves tiles "missing", read as zeros): such a read counts as failed, and is retried
    import logging

    from geochip.core.retry import call_with_retries

    calls = []

    def read() -> str:
        calls.append(1)
        if len(calls) == 1:  # rasterio's own record of a signalled, unraised error
            logging.getLogger("rasterio._err").info(
                "GDAL signalled an error: err_no=%r, msg=%r", 1, "Cannot read offset/size"
            )
        return "pixels"

    with pytest.raises(OSError, match="GDAL reported an error but returned data"):
        call_with_retries(read, str(tmp_path / "a.tif"), FAST)  # local: not retried
    calls.clear()
    url = "/vsicurl/http://127.0.0.1:9/a.tif"
    assert call_with_retries(read, url, FAST, sleep=lambda _: None, known_raster=True) == "pixels"
    assert len(calls) == 2


def test_the_gdal_error_tap_passes_on_nothing_new() -> None:
    # the tap lowers rasterio._err to INFO to see signalled errors; a handler on the root
    # logger (at WARNING, the default) must still get none of those INFO records
    import logging

    from geochip.core.retry import call_with_retries

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        err = logging.getLogger("rasterio._err")
        with pytest.raises(OSError):
            call_with_retries(lambda: err.info("GDAL signalled an error: x"), "local.tif", FAST)
        err.info("GDAL signalled an error: outside any read")
        err.warning("a warning still gets through")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert [r.getMessage() for r in seen if r.name == "rasterio._err"] == [
        "a warning still gets through"
    ]

"""The engine: threads, a real `dask scheduler` with two `dask worker` processes, a local
cluster; byte-identical stores whatever runs them; retries; no secrets in tasks."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from geochip.core.engine import open_engine
from geochip.core.env import probe_gdal, safe_gdal_options
from geochip.core.retry import is_transient, retry
from geochip.errors import InputError
from geochip.testing.catalogs import make_scene_catalog, scene_config
from geochip.testing.cluster import DaskCluster

pytestmark = pytest.mark.xdist_group("dask")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _build(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "geochip",
            "build",
            str(config),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("engine")
    catalog = make_scene_catalog(tmp / "cogs", scenes=2, size=256)
    cfg = scene_config(catalog, tmp / "unused", size=32, engine={"threads": 2, "batch_size": 8})
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _build(config, tmp / "threads")
    assert result.returncode == 0, result.stderr
    assert "engine: 2 threads" in result.stdout
    return config, _files(tmp / "threads")


def test_a_build_on_a_real_scheduler_is_byte_identical_to_threads(
    cluster: DaskCluster, job: tuple, tmp_path: Path
) -> None:
    config, reference = job
    with cluster.client() as client:
        before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
    result = _build(config, tmp_path / "dask", "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    assert f"the Dask scheduler at {cluster.address}, 2 workers" in result.stdout
    assert _files(tmp_path / "dask") == reference
    with cluster.client() as client:
        counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(counts.values()) - before == 16  # 128 chips in batches of 8
    assert all(n > 0 for n in counts.values())  # both workers took batches


def test_a_time_stacked_signed_build_on_a_real_scheduler_is_byte_identical(
    cluster: DaskCluster, tmp_path: Path
) -> None:
    """Grids with time steps, a signer by import path and cloud masks, run by `dask worker`
    processes: the same bytes as threads."""
    from geochip.testing.catalogs import make_time_catalog

    dates = ["2024-01-05", "2024-02-10", "2024-04-15"]
    catalog = make_time_catalog(tmp_path / "cat", dates, covers=[30, 5, 20], size=64)
    cfg = {
        "sources": {
            "kind": "catalog",
            "path": str(catalog),
            "sign": "geochip.testing.signing:sign",
        },
        "bands": ["red", "nir"],
        "time": {
            "start": "2024-01-01",
            "end": "2024-04-30",
            "periods": "monthly",
            "gapfill": {"method": "linear"},
        },
        "masks": {"kind": "scl", "band": "scl"},
        "chips": {"size": 16},
        "split": {"block_size": 2},
        "output": {"path": str(tmp_path / "unused")},
        "engine": {"threads": 2, "batch_size": 4},
    }
    config = tmp_path / "stacked.yaml"
    config.write_text(yaml.safe_dump(cfg))
    threads = _build(config, tmp_path / "threads")
    assert threads.returncode == 0, threads.stderr
    dask = _build(config, tmp_path / "dask", "--scheduler", cluster.address)
    assert dask.returncode == 0, dask.stderr
    assert _files(tmp_path / "dask") == _files(tmp_path / "threads")


def test_gdal_options_reach_the_workers(cluster: DaskCluster) -> None:
    from geochip.builder.config import EngineConfig

    # what a build ships: geochip's defaults (env.DEFAULTS) merged with the config's
    options = EngineConfig(gdal={"GDAL_CACHEMAX": 64, "GDAL_HTTP_MAX_RETRY": 4}).gdal_options()
    names = ["GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_LOW_SPEED_TIME", "GDAL_DISABLE_READDIR_ON_OPEN"]
    with cluster.client() as client:
        seen = client.gather(
            [
                client.submit(probe_gdal, options, names, pure=False, workers=[w])
                for w in client.scheduler_info()["workers"]
            ]
        )
    got = [[str(s[n]) for n in names] for s in seen]
    assert got == [["4", "20", "EMPTY_DIR"]] * 2


def test_the_graph_stays_bounded(cluster: DaskCluster) -> None:
    def slow(x: int) -> int:
        time.sleep(0.05)
        return x

    sizes = []
    with (
        open_engine(scheduler=cluster.address, max_in_flight=3) as engine,
        cluster.client() as client,
    ):
        assert engine.max_in_flight == 3
        results = []
        for i, value in engine.map(slow, range(20)):
            results.append((i, value))
            sizes.append(
                client.run_on_scheduler(
                    lambda dask_scheduler: sum(
                        1 for k in dask_scheduler.tasks if str(k).startswith("geochip-batch")
                    )
                )
            )
    assert sorted(results) == [(i, i) for i in range(20)]
    assert max(sizes) <= 3


def test_a_lost_worker_does_not_lose_chips(
    cluster: DaskCluster, job: tuple, tmp_path: Path
) -> None:
    config, reference = job
    out = tmp_path / "lost"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geochip",
            "build",
            str(config),
            "--out",
            str(out),
            "--no-progress",
            "--scheduler",
            cluster.address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    batches = out / ".geochip" / "batches"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        batches.exists() and len(list(batches.iterdir())) >= 3
    ):
        time.sleep(0.005)
    victim = cluster.workers.pop(0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert _files(out) == reference
    cluster.workers.append(cluster.start_worker())
    cluster.wait_for(2)


def test_a_local_cluster_build_is_byte_identical(job: tuple, tmp_path: Path) -> None:
    config, reference = job
    result = _build(config, tmp_path / "local", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "engine: a local Dask cluster on 127.0.0.1, 2 workers, 2 threads" in result.stdout
    # bokeh is installed (dev group): the dashboard is served and its link printed
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/status$", result.stdout, re.M)
    assert _files(tmp_path / "local") == reference


def test_tasks_carry_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geochip.builder.config import parse_config
    from geochip.builder.plan import plan_build
    from geochip.builder.tasks import batch_tasks as _batch_tasks
    from geochip.testing import make_catalog, make_cog, make_item
    from geochip.testing.catalogs import scene_grid

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-1")
    path = make_cog(tmp_path / "a.tif", scene_grid(0, 64), nodata=0)
    item = make_item("s", {"b1": path, "b2": path})
    cat = make_catalog(tmp_path / "cat", [item])
    # a signed href, as some catalogs hand out
    cat_json = json.loads((tmp_path / "cat" / "s" / "s.json").read_text())
    cat_json["assets"]["b1"]["href"] = str(path) + "?sig=planted-secret-2&se=2030"
    (tmp_path / "cat" / "s" / "s.json").write_text(json.dumps(cat_json))
    config = parse_config(scene_config(cat, tmp_path / "ds"))
    bp = plan_build(config)
    tasks = list(_batch_tasks(tmp_path / "ds", bp, config, "f", "uint16", 0, False, 1, {0, 1}))
    blob = pickle.dumps(tasks)
    assert b"planted-secret" not in blob
    assert b"sig=" not in blob and b"se=2030" not in blob  # the href is unsigned
    assert len(blob) < 64_000  # a batch task is small: chips, one item, options


def test_secret_gdal_options_are_refused() -> None:
    with pytest.raises(InputError, match="AWS_SESSION_TOKEN carries credentials"):
        safe_gdal_options({"AWS_SESSION_TOKEN": "x"})


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError("HTTP response code: 503"), True),
        (OSError("CURL error: Connection reset by peer"), True),
        (TimeoutError("read"), True),
        (OSError("HTTP response code: 429 Too Many Requests"), True),
        (OSError("HTTP response code: 404"), False),
        (OSError("HTTP response code: 403"), False),
        (FileNotFoundError("No such file or directory: a.tif"), False),
        (ValueError("bad dtype"), False),
    ],
)
def test_transient_errors_are_told_from_permanent_ones(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_retry_backs_off_then_succeeds() -> None:
    waits: list[float] = []
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OSError("HTTP response code: 502")
        return "pixels"

    assert retry(flaky, retries=3, delay=0.5, sleep=waits.append) == "pixels"
    assert waits == [0.5, 1.0, 2.0]


def test_retry_gives_up_after_the_limit_and_never_retries_404() -> None:
    waits: list[float] = []

    def down() -> None:
        raise OSError("HTTP response code: 500")

    with pytest.raises(OSError, match="500"):
        retry(down, retries=2, delay=0.1, sleep=waits.append)
    assert len(waits) == 2

    def missing() -> None:
        raise OSError("HTTP response code: 404")

    with pytest.raises(OSError, match="404"):
        retry(missing, retries=5, delay=0.1, sleep=waits.append)
    assert len(waits) == 2


def test_thread_engine_keeps_positions() -> None:
    with open_engine(threads=3, max_in_flight=4) as engine:
        out = dict(engine.map(lambda x: x * 10, range(25)))
    assert out == {i: i * 10 for i in range(25)}


def test_ctrl_c_while_waiting_on_tasks_is_raised_between_waits() -> None:
    """A KeyboardInterrupt raised inside concurrent.futures.wait can leave a future's lock
    held, and the pool's shutdown then hangs (a build that Ctrl-C did not stop): the engine
    remembers Ctrl-C and raises it between two waits, then stops at once."""

    def task(i: int) -> int:
        if i == 3:
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        return i

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        t0 = time.monotonic()
        seen: list[int] = []

        def run() -> None:
            with open_engine(threads=2, max_in_flight=4) as engine:
                seen.extend(i for i, _ in engine.map(task, range(200)))

        with pytest.raises(KeyboardInterrupt) as info:
            run()
        assert time.monotonic() - t0 < 5
        assert info.traceback[-1].name == "_wait_first"
        assert len(seen) < 50
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)

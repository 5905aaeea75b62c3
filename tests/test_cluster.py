"""Clusters that share no folder (issue 13, part 4): a build on a real Dask cluster whose
`dask worker` processes each run in a new, empty working directory with their own
--local-directory, and array jobs (`--shard i/N`) each in a folder of its own. They read the
sources over HTTP and write only to the object store (moto's S3 server on loopback); the
endpoint and credentials reach them through their environment. What the tasks carry is read
back from the scheduler: no credential, no local path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from geochip.core.storage import filesystem
from geochip.store.reader import open_store
from geochip.testing.catalogs import make_scene_catalog, scene_config
from geochip.testing.cluster import DaskCluster, TaskLog
from geochip.testing.http import RangeServer

pytestmark = pytest.mark.xdist_group("dask")


def geochip(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``geochip ARGS`` started in ``cwd`` (with the S3 environment the test set)."""
    return subprocess.Popen(
        [sys.executable, "-m", "geochip", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def new_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def objects(url: str) -> dict[str, bytes]:
    """Every object under ``url`` (key relative to it -> bytes)."""
    fs, root = filesystem(url)
    fs.invalidate_cache()
    keys = sorted(fs.find(root))
    return {key[len(root) + 1 :]: fs.cat_file(key) for key in keys}


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def same_store(a: Any, b: Any) -> None:
    """Every chip (image and mask) equal, and the index equal column by column."""
    assert len(a) == len(b) and a.image.shape == b.image.shape
    for i in range(len(a)):
        for x, y in zip(a.read(i), b.read(i), strict=True):
            np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(
        pd.DataFrame(a.index.drop(columns="geometry")),
        pd.DataFrame(b.index.drop(columns="geometry")),
    )
    assert a.index.geometry.geom_equals_exact(b.index.geometry, tolerance=0).all()


@pytest.fixture
def job(s3_bucket: str, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The config (sources over HTTP) in the submitting machine's folder, and that folder."""
    cogs = tmp_path / "cogs"
    catalog = make_scene_catalog(cogs, scenes=2, size=96)
    client_dir = new_dir(tmp_path / "client")
    with RangeServer(cogs) as http:
        # 18 chips in shards of 2: 9 batches (the remote default, 32, would make one)
        cfg = scene_config(
            http.url(catalog),  # type: ignore[arg-type]
            "unused",
            size=32,
            output={"path": "unused", "chips_per_shard": 2},
            engine={"batch_size": 2},
        )
        config = client_dir / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        yield config, client_dir


def test_a_dask_cluster_that_shares_no_folder_builds_into_the_bucket(
    job: tuple[Path, Path], s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    config, client_dir = job
    url = f"s3://{s3_bucket}/ds"
    with DaskCluster(tmp_path / "dask", isolated=True) as cluster:
        with cluster.client() as client:
            TaskLog.register(client)
        build = geochip("build", str(config), "--out", url, "--scheduler", cluster.address,
                        cwd=client_dir)  # fmt: skip
        assert f"the Dask scheduler at {cluster.address}, 2 workers" in finish(build).stdout
        with cluster.client() as client:
            blobs = TaskLog.fetch(client)
            ran = client.run(lambda dask_worker: dask_worker.state.executed_count)
        worker_files = cluster.worker_files()
    # both workers took batches, and wrote nothing where they run
    assert len(ran) == 2 and all(n > 0 for n in ran.values()), ran
    assert worker_files == {"worker-0": [], "worker-1": []}
    # the tasks: batches of the bucket's store, with no credential and no local path
    batches = [blob for key, blob in blobs.items() if "geochip-batch" in key]
    assert len(batches) == 9, sorted(blobs)
    env = s3_server.environ()
    for blob in batches:
        assert url.encode() in blob
        assert env["AWS_SECRET_ACCESS_KEY"].encode() not in blob
        assert env["AWS_ACCESS_KEY_ID"].encode() not in blob
        assert str(tmp_path).encode() not in blob
    assert listing(client_dir) == ["config.yaml"]  # the submitting side wrote nothing either
    finish(geochip("build", str(config), "--out", str(tmp_path / "local"), cwd=client_dir))
    same_store(open_store(url), open_store(tmp_path / "local"))
    # the same layout: the bucket's objects are the local build's files, byte for byte
    assert objects(url) == files(tmp_path / "local")


def test_array_jobs_that_share_no_folder_write_the_single_build_into_the_bucket(
    job: tuple[Path, Path], s3_bucket: str, tmp_path: Path
) -> None:
    config, client_dir = job
    single = f"s3://{s3_bucket}/single"
    sharded = f"s3://{s3_bucket}/sharded"
    finish(geochip("build", str(config), "--out", single, cwd=client_dir))
    # each job on "its own machine": a new, empty folder; started at once
    jobs = [new_dir(tmp_path / f"job-{i}") for i in range(3)]
    procs = [
        geochip("build", str(config), "--out", sharded, f"--shard={i}/3", cwd=jobs[i])
        for i in range(3)
    ]
    done = [finish(p) for p in procs]
    assert any("store: " + sharded in d.stdout for d in done), [d.stdout for d in done]
    assert all(listing(j) == [] for j in jobs)
    reference = objects(single)
    assert "manifest.json" in reference and "chips.zarr/image/c/8/0/0/0" in reference
    assert objects(sharded) == reference


def test_a_local_output_folder_a_worker_does_not_see_is_refused_before_any_chip(
    job: tuple[Path, Path], tmp_path: Path
) -> None:
    """One of two workers runs as on another machine: the output folder is, for it, an empty
    folder of its own (a tmpfs in its own mount namespace). Its chips would have landed on
    its disk while the manifest, written here, named them: the build is refused first."""
    config, client_dir = job
    out = new_dir(tmp_path / "shared") / "ds"
    with DaskCluster(tmp_path / "dask", workers=1, isolated=True) as cluster:
        cluster.workers.append(cluster.start_worker(hide=out.parent))
        cluster.wait_for(2)
        build = geochip("build", str(config), "--out", str(out), "--scheduler", cluster.address,
                        cwd=client_dir)  # fmt: skip
        stdout, stderr = build.communicate(timeout=300)
        with cluster.client() as client:
            ran = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert build.returncode == 1, stdout + stderr
    assert "1 of 2 Dask workers (tcp://127.0.0.1:" in stderr
    assert f"do not see the output folder {out}" in stderr and "Traceback" not in stderr
    assert sum(ran.values()) == 0  # no batch ran
    assert not (out / "manifest.json").exists()
    assert not list(out.parent.rglob(".geochip-worker-probe-*"))

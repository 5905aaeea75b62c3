"""A sample of the kill suite (``benchmarks/kill.py``): a few ``kill -9`` per job at seeded
moments, each resumed and compared byte for byte; and what the comparison catches."""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from geochip.testing.kill import (
    JOBS,
    Job,
    JobReport,
    Tree,
    check_killed,
    compare_trees,
    run_reference,
    run_trial,
    tree,
)

pytestmark = pytest.mark.xdist_group("kill")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, sample_catalog_path: Path) -> Callable:
    """One uninterrupted run per job, shared by the tests: (job, its tree, (its seconds, when
    its first output appeared))."""
    done: dict[str, tuple[Job, Tree, tuple[float, float]]] = {}

    def get(name: str) -> tuple[Job, Tree, tuple[float, float]]:
        if name not in done:
            work = tmp_path_factory.mktemp(f"kill-{name}")
            job = JOBS[name](work)
            timing = run_reference(job, work / "reference", work / "reference.log")
            done[name] = (job, tree(work / "reference"), timing)
        return done[name]

    return get


@pytest.mark.parametrize(
    ("name", "seed", "sig"),
    [
        ("build", 7, signal.SIGKILL),
        ("build", 3, signal.SIGINT),  # Ctrl-C: stops within the grace period, then resumes
        ("timeseries", 7, signal.SIGKILL),
        ("timeseries", 8, signal.SIGKILL),
    ],
    ids=["build-kill", "build-ctrl-c", "timeseries-kill", "timeseries-kill-2"],
)
def test_a_killed_run_resumes_byte_identical(
    references: Callable, tmp_path: Path, name: str, seed: int, sig: int
) -> None:
    job, reference, (seconds, first) = references(name)
    report = JobReport(name)
    rng = random.Random(seed)
    for attempt in range(3):  # a run faster than the reference may end before the moment
        out = tmp_path / f"out-{attempt}"
        # after the first output, before the end: in the work
        moments = (first, first + 0.8 * (seconds - first))
        run_trial(job, out, reference, moments, rng, report, sig=sig)
        if report.kills:
            break
    assert report.failures == []
    assert report.kills == 1 and report.resumes == 1
    assert report.identical == report.trials


def _job(tmp_path: Path, name: str = "timeseries") -> tuple:
    work = tmp_path / "work"
    work.mkdir()
    return JOBS[name](work), tmp_path / "ref", tmp_path / "out"


def _summary(*results: dict) -> bytes:
    return json.dumps({"counts": {}, "results": list(results)}).encode()


def test_a_partial_file_under_a_final_name_is_caught(tmp_path: Path) -> None:
    job, ref, out = _job(tmp_path)
    ref.mkdir()
    out.mkdir()
    (ref / "a.nc").write_bytes(b"complete cube")
    (out / "a.nc").write_bytes(b"complete")  # torn: under the final name
    (out / ".b.nc.partial").write_bytes(b"torn")  # a temporary name: allowed mid-run
    problems = check_killed(tree(ref), tree(out), job)
    assert problems == ["a.nc under its final name differs from the reference"]


def test_a_marker_without_every_file_is_caught(tmp_path: Path) -> None:
    job, ref, out = _job(tmp_path, "build")
    for root in (ref, out):
        root.mkdir()
        (root / "manifest.json").write_text("{}")
    (ref / "index.parquet").write_bytes(b"index")
    assert check_killed(tree(ref), tree(out), job) == [
        "manifest.json is there but index.parquet is not"
    ]


def test_leftovers_and_differences_after_the_last_run_are_caught(tmp_path: Path) -> None:
    job, ref, out = _job(tmp_path, "build")
    for root in (ref, out):
        (root / "chips.zarr").mkdir(parents=True)
        (root / "manifest.json").write_text("{}")
    (out / "manifest.json").write_text("{ }")
    (out / ".geochip").mkdir()
    (out / "chips.zarr" / "x.1234.partial").write_bytes(b"")
    assert compare_trees(tree(ref), tree(out), job) == [
        "left over .geochip",
        "left over chips.zarr/x.1234.partial",
        "manifest.json differs (3 bytes, reference 2)",
    ]


def test_the_summary_is_compared_by_meaning(tmp_path: Path) -> None:
    job, _, _ = _job(tmp_path)
    check = job.reports["summary.json"][1]
    ref = _summary(
        {"id": "a", "status": "done", "path": "/r/a.nc", "reason": "", "times": 2, "seconds": 1},
        {"id": "b", "status": "empty", "path": None, "reason": "no scene", "times": 0},
    )
    resumed = _summary(
        {"id": "a", "status": "skipped", "path": "/o/a.nc", "reason": "already", "times": 0},
        {"id": "b", "status": "empty", "path": None, "reason": "no scene", "times": 0},
    )
    assert check(ref, resumed) == []
    wrong = _summary(
        {"id": "a", "status": "done", "path": "/o/a.nc", "reason": "", "times": 1},
        {"id": "b", "status": "failed", "path": None, "reason": "boom", "times": 0},
    )
    assert check(ref, wrong) == ["a: 1 time steps, reference 2", "b: failed, reference empty"]

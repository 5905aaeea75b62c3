"""Kill suite: ``kill -9`` geochip commands at random moments, resume, compare byte for byte.

For each job (``geochip build`` over the sample catalog, ``geochip timeseries`` of 23 points
on the sample catalog, NetCDF or Zarr), one uninterrupted run is the reference; then every
trial starts the command, sends SIGKILL after a moment drawn (seeded) between 0 and the
reference's duration, checks that nothing under a final name is partial, runs the command
again until it completes (with ``--rekill P`` each resume is killed too with probability P)
and compares the output with the reference byte for byte (the tree of files and folders:
no temporary file or state may be left). The logic, what is compared and what is excluded
(and why) live in :mod:`geochip.testing.kill`; ``tests/test_kill.py`` runs a few trials in
``make test``.

Not part of ``make test`` (50 kills per job take minutes). Run it alone on the machine::

    .venv/bin/python benchmarks/kill.py                      # 50 kills per job
    .venv/bin/python benchmarks/kill.py --kills 5 --jobs build
    .venv/bin/python benchmarks/kill.py --rekill 0.3 --json kill.json

Measured on 2 cores shared with other jobs (load 1 to 13), 2026-12-04: uniform moments, 50
kills each: build 50/50 byte-identical (40 kills in the interpreter's start, 10 in the
batches), timeseries 54/54 (35 before the first file, 11 among the geometries, 3 at exit);
``--from-first-output --rekill 0.3``: build 51 kills in 36 trials, 36/36 (42 in the
batches, 1 in index + manifest, 3 at exit), timeseries 50 kills in 43 trials, 43/43.

Exit status 1 when any trial failed; the failed trials' folders and logs are kept under
``--work`` (a temporary folder by default) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from geochip.testing.kill import JOBS, JobReport, run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kills that land, per job")
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), default=sorted(JOBS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rekill", type=float, default=0.0, help="probability that a resume is killed too"
    )
    parser.add_argument(
        "--signal",
        choices=["KILL", "INT", "TERM"],
        default="KILL",
        help="KILL (kill -9, the default), INT (Ctrl-C) or TERM: the run must stop at once",
    )
    parser.add_argument(
        "--from-first-output",
        action="store_true",
        help="draw moments after the reference's first output (skip the interpreter's start)",
    )
    parser.add_argument("--work", type=Path, default=None, help="working folder (kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="geochip-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    # one sample catalog for every run of the suite, created once by the first reference
    os.environ.setdefault("GEOCHIP_CACHE_DIR", str(work / "cache"))
    load = os.getloadavg()
    reports: list[JobReport] = []
    t0 = time.perf_counter()

    def progress(r: JobReport) -> None:
        if args.json:  # the counts so far, should the run be stopped
            args.json.write_text(json.dumps([x.to_dict() for x in [*reports, r]], indent=1))
        print(
            f"\r{r.job}: trial {r.trials}, {r.kills}/{args.kills} kills, {r.identical} "
            f"identical, {len(r.failures)} failed",
            end="",
            flush=True,
            file=sys.stderr,
        )

    for name in args.jobs:
        job_work = work / name
        job_work.mkdir(exist_ok=True)
        job = JOBS[name](job_work)
        report = run_job(job, job_work, kills=args.kills, seed=args.seed, rekill=args.rekill,
                         sig=signal.Signals[f"SIG{args.signal}"], on_trial=progress,
                         from_first_output=args.from_first_output)  # fmt: skip
        print(file=sys.stderr)
        reports.append(report)
        print("\n".join(report.lines()), flush=True)
    failed = sum(len(r.failures) for r in reports)
    print(
        f"\ntotal: {sum(r.kills for r in reports)} kills, {sum(r.resumes for r in reports)} "
        f"resumes, {sum(r.identical for r in reports)}/{sum(r.trials for r in reports)} "
        f"byte-identical, {failed} failed; {time.perf_counter() - t0:.0f} s; load average "
        f"before/after {load[0]:.1f} / {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    if failed:
        print(f"failed trials' folders and logs: {work}")
        sys.exit(1)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

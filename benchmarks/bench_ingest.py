"""Ingest benchmark: the whole Dagster CLI ingest against a bare DuckDB read_csv of the same file.

    .venv/bin/python benchmarks/bench_ingest.py --rows 1290000

Generates one export (cached in benchmarks/out/), then runs, alternately and
each as a fresh child process measured from outside:

(a) `dagster asset materialize --select classifications -m engagement_pipeline.definitions`
    with ENGAGEMENT_HOME, DAGSTER_HOME and ENGAGEMENT_EXPORTS_DIR in a new
    temporary folder: the process a user starts, Dagster's start-up, the
    asset's warehouse defaults (memory_limit included) and all;
(b) a Python child that runs `create table t as select * from read_csv(file)`
    into an empty DuckDB file, with DuckDB's defaults.

Time is the child's wall clock; peak RSS is the OS's figure for the child
and every process below it (`getrusage(RUSAGE_CHILDREN).ru_maxrss`, taken
in a fresh measuring process per run, so one run's peak never hides
another's). Prints the best time of each, the ratio a/b, the least CPU time
(user + system, every thread) of each and its ratio, and the highest peak
RSS of each. Targets (issue 11): a/b <= 2.0, (a) peak RSS <= 2 GB.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exports import OUT, cached_export  # benchmarks/exports.py, beside this script

REPO = Path(__file__).resolve().parent.parent
BARE = "import duckdb, sys; duckdb.connect(sys.argv[2]).execute('create table t as select * from read_csv(?)', [sys.argv[1]])"


def measure(command: list[str]) -> None:
    """Run `command` to its end; print its wall time and the peak RSS of it and its children."""
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"{command[0]} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_mb}))


def child_command(phase: str, export: Path, workdir: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if phase == "bare":
        return [sys.executable, "-c", BARE, str(export), str(workdir / "bare.duckdb")], env
    exports = workdir / "exports"
    exports.mkdir()
    (exports / export.name).symlink_to(export)
    env.update(
        ENGAGEMENT_HOME=str(workdir / "home"),
        DAGSTER_HOME=str(workdir / "dagster"),
        ENGAGEMENT_EXPORTS_DIR=str(exports),
    )
    (workdir / "dagster").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "--select", "classifications"]
    return [*command, "-m", "engagement_pipeline.definitions"], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_290_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:  # the measuring process: its only child is the command
        measure(json.loads(args.measure[0]))
        return

    export = cached_export(args.rows)
    results: dict[str, list[dict]] = {"ingest": [], "bare": []}
    for _ in range(args.repeats):
        for phase in ("ingest", "bare"):  # alternate so machine noise hits both sides
            with tempfile.TemporaryDirectory(dir=OUT) as folder:
                command, env = child_command(phase, export, Path(folder))
                completed = subprocess.run(
                    [sys.executable, __file__, "--measure", json.dumps(command)],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
            results[phase].append(json.loads(completed.stdout.strip().splitlines()[-1]))

    best = {phase: min(r["seconds"] for r in runs) for phase, runs in results.items()}
    peak = {phase: max(r["peak_rss_mb"] for r in runs) for phase, runs in results.items()}
    cpu = {phase: min(r["cpu_seconds"] for r in runs) for phase, runs in results.items()}
    print(f"rows: {args.rows:,}  file: {export.stat().st_size / 1e6:.0f} MB  repeats: {args.repeats}")
    print(
        f"(a) dagster asset materialize --select classifications  best {best['ingest']:.2f}s  "
        f"CPU {cpu['ingest']:.1f}s  peak RSS {peak['ingest']:.0f} MB"
    )
    print(
        f"(b) bare DuckDB read_csv                                best {best['bare']:.2f}s  "
        f"CPU {cpu['bare']:.1f}s  peak RSS {peak['bare']:.0f} MB"
    )
    print(f"a/b = {best['ingest'] / best['bare']:.2f}  (target <= 2.0; (a) peak RSS target <= 2048 MB)")
    print(f"CPU a/b = {cpu['ingest'] / cpu['bare']:.2f}  (user + system, all threads: less noisy on a loaded machine)")


if __name__ == "__main__":
    main()

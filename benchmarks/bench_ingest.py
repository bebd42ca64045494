"""Ingest benchmark: the project's ingest against a bare DuckDB read_csv of the same file.

    .venv/bin/python benchmarks/bench_ingest.py --rows 1000000

Generates one export (cached in benchmarks/out/), then runs, alternately and
each in a fresh child process, (a) the project's ingest of it into an empty
warehouse and (b) `create table t as select * from read_csv(file)` into an
empty DuckDB file. Prints the best time of each, the ratio a/b and the peak
RSS of each child. Targets (issue 2): a/b <= 2.0, ingest peak RSS <= 2 GB.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exports import OUT, cached_export  # benchmarks/exports.py, beside this script


def run_ingest(export: Path, workdir: Path, memory_limit: str) -> None:
    from engagement_pipeline import ingest
    from engagement_pipeline.resources import Warehouse

    warehouse = Warehouse(database=str(workdir / "warehouse.duckdb"), memory_limit=memory_limit)
    salt = ingest.load_salt(workdir / "salt")
    with warehouse.connect() as con:
        ingest.ingest_exports(con, [export], salt, workdir / "tmp")
        rows = con.execute("select count(*) from classifications").fetchone()[0]
    print(f"ingested {rows:,} rows", file=sys.stderr)


def run_bare(export: Path, workdir: Path, memory_limit: str) -> None:
    import duckdb

    con = duckdb.connect(str(workdir / "bare.duckdb"))
    con.execute("set memory_limit = ?", [memory_limit])
    con.execute("create table t as select * from read_csv(?)", [str(export)])
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit for both sides")
    parser.add_argument("--phase", choices=["ingest", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        start = time.perf_counter()
        (run_ingest if args.phase == "ingest" else run_bare)(args.export, args.workdir, args.memory_limit)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"inner_seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb}))
        return

    export = cached_export(args.rows)

    results: dict[str, list[dict]] = {"ingest": [], "bare": []}
    for _ in range(args.repeats):
        for phase in ("ingest", "bare"):  # alternate so machine noise hits both sides
            with tempfile.TemporaryDirectory(dir=OUT) as workdir:
                completed = subprocess.run(
                    [sys.executable, __file__, "--phase", phase, "--export", str(export), "--workdir", workdir,
                     "--memory-limit", args.memory_limit],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
            results[phase].append(json.loads(completed.stdout.strip().splitlines()[-1]))

    best = {phase: min(r["inner_seconds"] for r in runs) for phase, runs in results.items()}
    peak = {phase: max(r["peak_rss_mb"] for r in runs) for phase, runs in results.items()}
    print(f"rows: {args.rows:,}  file: {export.stat().st_size / 1e6:.0f} MB  memory_limit: {args.memory_limit}")
    print(f"(a) ingest   best {best['ingest']:.2f}s  peak RSS {peak['ingest']:.0f} MB")
    print(f"(b) read_csv best {best['bare']:.2f}s  peak RSS {peak['bare']:.0f} MB")
    print(f"a/b = {best['ingest'] / best['bare']:.2f}  (target <= 2.0; ingest peak RSS target <= 2048 MB)")


if __name__ == "__main__":
    main()

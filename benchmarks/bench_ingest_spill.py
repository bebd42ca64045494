"""Spill benchmark: ingest an export larger than DuckDB's memory_limit, and show it spills rather than dies.

    .venv/bin/python benchmarks/bench_ingest_spill.py --rows 2100000 --memory-limit 500MB

Generates one export (cached in benchmarks/out/; 2.1M rows is ~2 GB), then
runs, each in a fresh child process and side by side in one run:

(a) the project's ingest with DuckDB `memory_limit` set to `--memory-limit`
    (500 MB: about a quarter of the file), and
(b) the same ingest with a roomy `--reference-limit` (default 8 GB), which
    has no reason to spill: the price of spilling is a/b.

While each child runs, the parent samples the size of the warehouse's DuckDB
`temp_directory` (`$home/duckdb_tmp`, where DuckDB spills) every 0.1 s; the
child reports its own peak RSS (getrusage) and checks that every row of the
file arrived (`classifications` = rows written, `rejected_rows` empty).
Prints time, peak RSS, the memory_limit and the peak temp-directory usage of
each, and the ratios.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from exports import OUT, cached_export  # benchmarks/exports.py, beside this script


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` right now (files come and go while DuckDB spills)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def run_child(export: Path, workdir: Path, memory_limit: str) -> dict:
    """In the child: the project's ingest of `export` into an empty warehouse under `memory_limit`."""
    from engagement_pipeline import ingest
    from engagement_pipeline.resources import Warehouse

    warehouse = Warehouse(database=str(workdir / "warehouse.duckdb"), memory_limit=memory_limit)
    salt = ingest.load_salt(workdir / "salt")
    started = time.perf_counter()
    with warehouse.connect() as con:
        report = ingest.ingest_exports(con, [export], salt, workdir / "ingest_tmp")
        stored, rejected = con.execute(
            "select (select count(*) from classifications), (select count(*) from rejected_rows)"
        ).fetchone()
        setting = con.execute("select current_setting('memory_limit')").fetchone()[0]
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows_read": report.total("rows_read"),
        "stored": stored,
        "rejected": rejected,
        "duckdb_memory_limit": setting,
    }


def measure(export: Path, memory_limit: str) -> dict:
    """Run one ingest in a fresh process, sampling its spill folder from here."""
    with tempfile.TemporaryDirectory(dir=OUT) as folder:
        workdir = Path(folder)
        spill = workdir / "duckdb_tmp"
        peak = {"bytes": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak["bytes"] = max(peak["bytes"], folder_bytes(spill))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, __file__, "--child", "--export", str(export), "--workdir", str(workdir),
             "--memory-limit", memory_limit],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    if completed.returncode != 0:
        return {"failed": True, "returncode": completed.returncode, "stderr": completed.stderr[-2000:], "wall": wall}
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall, "peak_spill_mb": peak["bytes"] / 1e6, "memory_limit": memory_limit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_100_000)
    parser.add_argument("--memory-limit", default="500MB", help="DuckDB memory_limit of the measured ingest")
    parser.add_argument("--reference-limit", default="8GB", help="a limit roomy enough not to spill")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.export, args.workdir, args.memory_limit)))
        return

    export = cached_export(args.rows)
    size_mb = export.stat().st_size / 1e6
    print(f"export: {args.rows:,} rows, {size_mb:,.0f} MB", flush=True)

    runs = {}
    for label, limit in (("a", args.memory_limit), ("b", args.reference_limit)):
        runs[label] = measure(export, limit)
        print(f"({label}) {json.dumps(runs[label])}", flush=True)

    a, b = runs["a"], runs["b"]
    if a.get("failed"):
        raise SystemExit(
            f"the ingest under memory_limit {args.memory_limit} FAILED (exit {a['returncode']}):\n{a['stderr']}"
        )
    complete = a["stored"] == args.rows and a["rejected"] == 0
    print()
    print("| | memory_limit | time | peak RSS | peak spill (temp_directory) | rows stored |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, run in runs.items():
        if run.get("failed"):
            print(f"| ({label}) | {run.get('memory_limit', '?')} | failed | | | |")
            continue
        print(
            f"| ({label}) | {run['duckdb_memory_limit']} | {run['seconds']:.1f} s | {run['peak_rss_mb']:,.0f} MB | "
            f"{run['peak_spill_mb']:,.0f} MB | {run['stored']:,} |"
        )
    print(
        f"file / memory_limit: {size_mb / _parse_mb(args.memory_limit):.1f}x; every row stored under the limit: {complete}"
    )
    if not b.get("failed"):
        print(f"a/b time: {a['seconds'] / b['seconds']:.2f}   a/b peak RSS: {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}")


def _parse_mb(limit: str) -> float:
    """'500MB' -> 500.0, '8GB' -> 8000.0 (DuckDB's decimal units)."""
    units = {"KB": 1e-3, "MB": 1.0, "GB": 1e3, "TB": 1e6}
    text = limit.strip().upper().replace("I", "")  # MiB/GiB: close enough for a ratio shown to one decimal
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text) / 1e6


if __name__ == "__main__":
    main()

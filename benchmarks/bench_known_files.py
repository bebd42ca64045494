"""Recognising old exports: full sha256 + line scan (before) vs the size/mtime/64 KiB fingerprint (now).

    .venv/bin/python benchmarks/bench_known_files.py

Four full-snapshot exports (25, 50, 75, 100% of a 300k-row generated export), as a folder holds after four
nights; each pass times what a night spends on files it has already loaded, side by side in one run.
"""

import time
from pathlib import Path

from engagement_pipeline.ingest.files import scan_file
from engagement_pipeline.ingest.known_files import quick_fingerprint
from engagement_pipeline.ingest.load import MAX_LINE_BYTES
from engagement_pipeline.sample import write_export

out = Path("benchmarks/out/fp")
big = out / "all.csv"
if not big.exists():
    write_export(big, 300_000, seed=3)
lines = big.read_bytes().splitlines(keepends=True)
files = []
for k in range(1, 5):  # four nights' full snapshots: 25%, 50%, 75%, 100% of the rows
    f = out / f"night{k}.csv"
    f.write_bytes(b"".join(lines[: len(lines) * k // 4]))
    files.append(f)
total = sum(f.stat().st_size for f in files)
for _pass in range(2):
    t = time.perf_counter()
    [scan_file(f, MAX_LINE_BYTES) for f in files]
    full = time.perf_counter() - t
    t = time.perf_counter()
    [quick_fingerprint(f) for f in files]
    quick = time.perf_counter() - t
    print(
        f"{len(files)} known files, {total / 1e6:.0f} MB: full sha256+line scan {full:.2f}s, fingerprint {quick * 1000:.1f}ms"
    )

"""Hostile exports (issue 23), generated at any size, and a child-process ingest whose peak memory is measured.

Used by test_ingest_hostile.py (small sizes) and benchmarks/bench_ingest_hostile.py
(the issue's sizes). Each builder writes one file and returns its path.
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

HEADER = (
    "classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,workflow_version,created_at,"
    "gold_standard,expert,metadata,annotations,subject_data,subject_ids"
)
META = '"{""started_at"":""2017-01-06T20:36:00Z"",""finished_at"":""2017-01-06T20:36:50Z""}"'


def row(i: int, name: str | None = None, ip: str = "192.0.2.10", annotations: str = "[]") -> str:
    name = name or f"volunteer_{i % 7}"
    return f"{1000 + i},{name},{5000 + i % 7},{ip},2276,Initial,463.55,2017-01-06 20:36:{i % 60:02d} UTC,,,{META},{annotations},{{}},{9000 + i}"


def normal(path: Path, rows: int, ending: str = "\n") -> Path:
    """A well-formed export of `rows` rows."""
    path.write_bytes(ending.join([HEADER] + [row(i) for i in range(rows)]).encode() + ending.encode())
    return path


def extra_fields(path: Path, fields: int, good_rows: int = 20) -> Path:
    """Good rows and, in the middle, one row with `fields` extra fields (the issue: 40,000, an 82 KB file)."""
    lines = [HEADER] + [row(i) for i in range(good_rows)]
    lines.insert(good_rows // 2 + 1, row(10_000) + ",x" * fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def many_extra_fields(path: Path, rows: int, fields: int) -> Path:
    """`rows` rows, every other one with `fields` extra fields."""
    with open(path, "w") as out:
        out.write(HEADER + "\n")
        for i in range(rows):
            out.write(row(i) + (",x" * fields if i % 2 else "") + "\n")
    return path


def binary_junk(path: Path, size: int, rows: int = 1_000, seed: int = 23) -> Path:
    """`rows` good rows, `size` random bytes, `rows` good rows again."""
    import numpy as np

    junk = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    first = "\n".join([HEADER] + [row(i) for i in range(rows)]) + "\n"
    last = "\n" + "\n".join(row(rows + i) for i in range(rows)) + "\n"
    path.write_bytes(first.encode() + junk + last.encode())
    return path


def wide_header_crlf(
    path: Path,
    columns: int,
    rows: int = 200,
    header_like_rows: int = 0,
    name: str = "extra_column_with_a_rather_long_name_{:05d}",
    value: str = "",
) -> Path:
    """A CRLF export whose header has `columns` extra column names (the issue: 10,000 long ones, read to
    3,452 by the code before issue 23) and rows holding `value` in each; `header_like_rows` rows repeat
    the header. Every row has the header's field count."""
    names = [name.format(i) for i in range(columns)]
    header = HEADER + "," + ",".join(names)
    filler = ("," + value) * columns
    lines = [header] + [row(i) + filler for i in range(rows)]
    for k in range(header_like_rows):
        lines.insert(2 + k * max(1, rows // max(1, header_like_rows)), header)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def long_row_crlf(path: Path, row_bytes: int, rows: int = 300) -> Path:
    """A CRLF export with one row of `row_bytes` bytes (over the 16 MB line limit in the issue: 40 MB) at line 3."""
    lines = [HEADER] + [row(i) for i in range(rows)]
    lines[2] = row(1, annotations='"' + "x" * row_bytes + '"')
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def mixed_endings(path: Path, lf_rows: int = 2000, crlf_rows: int = 3) -> Path:
    """`lf_rows` lines ending in LF, then `crlf_rows` ending in CRLF."""
    lf = "\n".join([HEADER] + [row(i) for i in range(lf_rows)]) + "\n"
    crlf = "".join(row(lf_rows + i) + "\r\n" for i in range(crlf_rows))
    path.write_bytes((lf + crlf).encode())
    return path


def gzip_bomb(path: Path, expanded_bytes: int) -> Path:
    """A .csv.gz of one good row, a row holding one Latin-1 byte, then blank-padded rows up to `expanded_bytes`."""
    pad = "z" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write((HEADER + "\n" + row(0) + "\n").encode() + row(1, name="José").encode("latin-1") + b"\n")
        written, i = 0, 2
        while written < expanded_bytes:
            line = row(i, annotations=f'"{pad}"') + "\n"
            out.write(line.encode())
            written += len(line)
            i += 1
    return path


PEAK_CHILD = """
import json, sys
from pathlib import Path
from engagement_pipeline import ingest
from engagement_pipeline.resources import Warehouse
home, folder = Path(sys.argv[1]), Path(sys.argv[2])
salt = ingest.load_salt(home / "user_name_salt")
with Warehouse(home=str(home), threads=2).connect() as con:
    try:
        report = ingest.ingest_exports(con, ingest.find_exports(folder), salt, home / "ingest_tmp")
        outcome = {"stored": report.total("rows_inserted"), "rejected": report.total("rows_rejected")}
    except Exception as error:
        outcome = {"refused": str(error).splitlines()[0][:300]}
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a child of a big pytest process would report
# its parent's peak; VmHWM belongs to this process's own memory map.
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
outcome["peak_rss_mb"] = float(status["VmHWM"].split()[0]) / 1024
print(json.dumps(outcome))
"""


def ingest_in_child(repo: Path, home: Path, folder: Path, timeout: float = 600, cap_mb: float | None = None) -> dict:
    """Ingest `folder` into a fresh `home` in a child Python that imports `repo`'s package: the outcome
    (rows stored and rejected, or the refusal), its wall time, and the child's peak RSS (the whole
    process, DuckDB's threads included, as the kernel counts it: VmHWM). With `cap_mb`, a child whose
    RSS passes it is killed (so an old, unbounded ingest cannot take the machine down) and reported so."""
    import time

    env = {**os.environ, "PYTHONPATH": str(repo)}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", PEAK_CHILD, str(home), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(repo),
    )  # fmt: skip
    peak, killed = 0.0, False
    while child.poll() is None and time.perf_counter() - start < timeout:
        rss, hwm = _memory_mb(child.pid)
        peak = max(peak, hwm)
        if cap_mb is not None and rss > cap_mb:
            child.kill()
            killed = True
            break
        time.sleep(0.05)
    if child.poll() is None:
        child.kill()
    stdout, stderr = child.communicate()
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    outcome = json.loads(lines[-1]) if lines else {"crashed": (stderr.decode() or stdout.decode())[-300:]}
    if killed:
        outcome = {"killed": f"RSS passed the {cap_mb:,.0f} MB cap", "peak_rss_mb": peak}
    outcome.setdefault("peak_rss_mb", peak)
    return {**outcome, "seconds": round(time.perf_counter() - start, 2)}


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process, in MB; zeros once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (OSError, ValueError):
        return 0.0, 0.0
    return tuple(float(fields.get(key, "0 kB").split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))

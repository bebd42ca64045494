"""Recognise export files already loaded without reading them again.

Exports are full snapshots: every night adds one file that repeats every row of the last,
and the folder keeps the old ones. Reading and hashing all of them each night costs more
every night. A file is recognised as loaded when its path, size, modification time (ns) and
a quick fingerprint (sha256 of its size, first and last 64 KiB) match what was recorded when
its content was loaded or last recognised by its full digest; only then is it not read.
When any of them differs, the file is read and hashed in full as before (its content may
still be known: then only the record is refreshed).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from engagement_pipeline.ingest.files import FileScan

EDGE_BYTES = 64 * 1024


def quick_fingerprint(path: Path) -> tuple[int, int, str]:
    """(size, mtime in ns, sha256 of size + first and last EDGE_BYTES): two small reads, whatever the file's size."""
    stat = path.stat()
    digest = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if stat.st_size > EDGE_BYTES:
            handle.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
            digest.update(handle.read(EDGE_BYTES))
    return stat.st_size, stat.st_mtime_ns, digest.hexdigest()


def path_key(path: Path) -> str:
    """The file's absolute path as stored: a name that is not UTF-8 keeps its bytes as \\xNN escapes."""
    return os.fsencode(str(path.resolve())).decode("utf-8", "backslashreplace")


def scan_unknown(
    con, files: list[Path], known_digests: set[str], run_sql, scan: Callable[[Path], FileScan]
) -> tuple[dict[Path, FileScan], dict[Path, tuple[int, int, str]], int]:
    """Scans of `files`: in full, except files recognised by fingerprint (a scan holding only their known digest).

    Returns (scans, fingerprints taken, files recognised without reading).
    """
    run_sql(con, "fingerprints_schema")
    recorded = {row[0]: tuple(row[1:]) for row in run_sql(con, "known_fingerprints").fetchall()}
    scans, fingerprints, recognised = {}, {}, 0
    for path in files:
        try:
            fingerprint = quick_fingerprint(path)
        except OSError:  # the full scan says which file cannot be read, and why
            scans[path] = scan(path)
            continue
        fingerprints[path] = fingerprint
        previous = recorded.get(path_key(path))
        if previous is not None and previous[:3] == fingerprint and previous[3] in known_digests:
            scans[path] = FileScan(previous[3], None, False)  # recognised: never read
            recognised += 1
        else:
            scans[path] = scan(path)
    return scans, fingerprints, recognised


def record_fingerprints(con, scans, fingerprints, run_sql) -> None:
    """Remember the fingerprint of every file whose content is now stored, for the next night."""
    stored = {row[0] for row in run_sql(con, "known_files").fetchall()}
    rows = [
        (path_key(path), *fingerprints[path], scan.sha256)
        for path, scan in scans.items()
        if scan.sha256 in stored and path in fingerprints
    ]
    if rows:
        con.executemany("insert or replace into ingested_fingerprints values (?, ?, ?, ?, ?)", rows)

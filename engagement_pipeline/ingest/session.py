"""The DuckDB settings an ingest changes on its connection, and puts back when it ends, however it ends.

- memory_limit is lowered to the ingest's (never raised): what DuckDB cannot
  spill stays bounded whatever the export (load.py, INGEST_MEMORY_LIMIT);
- the progress bar is enabled, never printed: DuckDB computes a running
  statement's progress (read by progress.py's watcher) only with it on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def ingest_settings(con, run_sql: Callable, memory_limit: str) -> Iterator[None]:
    previous_limit = set_memory_limit(con, run_sql, memory_limit)
    try:
        previous_bar = run_sql(con, "progress_settings").fetchone()
        run_sql(con, "set_progress", bar=True, bar_print=False)
        try:
            yield
        finally:
            run_sql(con, "set_progress", bar=previous_bar[0], bar_print=previous_bar[1])
    finally:
        set_memory_limit(con, run_sql, previous_limit)


def set_memory_limit(con, run_sql: Callable, limit: str) -> str:
    """Lower DuckDB's memory_limit to `limit` (never raise it); returns the one before."""
    (previous,) = run_sql(con, "current_memory_limit").fetchone()
    if size_in_bytes(limit) < size_in_bytes(previous):
        run_sql(con, "set_memory_limit", memory_limit=limit)
    return previous


def size_in_bytes(size: str) -> float:
    """'1GB', '953.6 MiB', '3.7 GiB' -> bytes (DuckDB's own spellings)."""
    number = size.strip().rstrip("BbiIKkMmGgTt ")
    unit = size.strip()[len(number) :].strip().upper().replace("IB", "").replace("B", "")
    return float(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]

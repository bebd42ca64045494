"""Turning a simulation into text with DuckDB, in parallel: the export as an Arrow table of strings,
or as a CSV file (gzip when the name ends with .gz) whose lines' bytes go straight to disk."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from engagement_pipeline.sample.export_format import EXPORT_COLUMNS, lines_sql, table_sql
from engagement_pipeline.sample.simulation import Simulation


def _connect(simulated: pa.Table):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET enable_progress_bar = false")
    con.register("raw", simulated)
    return con


def export_table(sim: Simulation) -> pa.Table:
    """The 14 columns as the CSV's strings (empty fields are nulls)."""
    con = _connect(sim.table)
    try:
        return con.sql(table_sql()).to_arrow_table()
    finally:
        con.close()


def _string_bytes(array: pa.Array) -> memoryview:
    """The concatenated bytes of a (large_)string array without nulls."""
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offsets_type)[array.offset : array.offset + len(array) + 1]
    return memoryview(array.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def write_csv(path: Path, sim: Simulation) -> Path:
    """Write the export to `path` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    con = _connect(sim.table)
    try:
        with open(tmp, "wb") as raw_file:
            if path.name.endswith(".gz"):
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw_file, compresslevel=6, mtime=0)
            else:
                out = raw_file
            out.write((",".join(EXPORT_COLUMNS) + "\n").encode())
            # DuckDB assembles the lines in parallel; their bytes go straight to the file
            for batch in con.sql(lines_sql()).to_arrow_reader(65_536):
                out.write(_string_bytes(batch.column(0)))
            if out is not raw_file:
                out.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return path

"""Ingest: exports folder -> `classifications` and `rejected_rows` (assets.py).

files.py finds and checks export files, load.py loads them through DuckDB
(the SQL it runs is in sql/), exports_folder.py remembers which folder a home
reads. The names below are the ingest's library, usable without Dagster.
"""

from engagement_pipeline.ingest.files import PANOPTES_COLUMNS, TRANSCODED_PREFIX, ExportFormatError, find_exports
from engagement_pipeline.ingest.load import FileResult, IngestReport, ensure_schema, ingest_exports, load_salt

__all__ = [
    "PANOPTES_COLUMNS",
    "TRANSCODED_PREFIX",
    "ExportFormatError",
    "FileResult",
    "IngestReport",
    "ensure_schema",
    "find_exports",
    "ingest_exports",
    "load_salt",
]

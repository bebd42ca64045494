"""The generator's public functions: the export as a table, as a file, and the bundled sample."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from engagement_pipeline.sample.render import export_table, write_csv
from engagement_pipeline.sample.shapes import DEFAULT_SHAPE
from engagement_pipeline.sample.simulation import simulate

DEFAULT_SEED = 7
DEFAULT_CLASSIFICATIONS = 150_000
SAMPLE_FILE_NAME = "sample-classifications.csv"


def generate_export_table(n_classifications: int, seed: int = DEFAULT_SEED, shape: str = DEFAULT_SHAPE) -> pa.Table:
    """The export as a pyarrow Table: the 14 columns as the CSV's strings
    (empty fields are nulls), exactly n_classifications rows sorted by created_at."""
    return export_table(simulate(n_classifications, seed, shape))


def write_export(
    path: Path, n_classifications: int = DEFAULT_CLASSIFICATIONS, seed: int = DEFAULT_SEED, shape: str = DEFAULT_SHAPE
) -> Path:
    """Write a classification export CSV (gzip when the name ends with .gz), atomically; `shape`
    names the volunteers' behaviour (see `shapes`)."""
    return write_csv(path, simulate(n_classifications, seed, shape))


def _has_export(folder: Path) -> bool:
    return any(p.is_file() and (p.name.endswith(".csv") or p.name.endswith(".csv.gz")) for p in folder.rglob("*"))


def ensure_sample_exports(folder: Path) -> Path:
    """Write the default sample export into `folder` unless it already holds an export."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _has_export(folder):
        write_export(folder / SAMPLE_FILE_NAME)
    return folder

"""Reading export files before DuckDB does: finding them, their digest, their header.

Everything here looks at a file's bytes only; nothing touches the warehouse.
"""

import codecs
import csv
import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

PANOPTES_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)  # fmt: skip
TRANSCODED_PREFIX = "transcoded-"  # UTF-8 copies of exports in the scratch folder: raw rows, user_ip included


class ExportFormatError(ValueError):
    """A file that is not a Zooniverse classification export."""


def find_exports(root: Path) -> list[Path]:
    """Every `*.csv` and `*.csv.gz` under `root`, in a stable order."""
    if not root.is_dir():
        raise FileNotFoundError(f"Exports folder {root} does not exist (ENGAGEMENT_EXPORTS_DIR).")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


@dataclass(frozen=True)
class FileScan:
    sha256: str
    newlines: int | None  # None for gzip: counted on the compressed bytes it would mean nothing
    ends_with_newline: bool


def scan_file(path: Path) -> FileScan:
    """The file's sha256 and, for plain CSV, its newline count: one streaming pass."""
    digest = hashlib.sha256()
    newlines, last = 0, b""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            last = chunk
    plain = not path.name.lower().endswith(".gz")
    return FileScan(digest.hexdigest(), newlines if plain else None, last.endswith(b"\n"))


def read_header(path: Path) -> list[str]:
    """The export's column names, normalized; raises ExportFormatError when it is no CSV export."""
    try:
        with open_binary(path) as handle:
            head = handle.read(64 * 1024)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ExportFormatError(f"{path}: cannot be read as an export: {error}") from None
    if not head.strip():
        raise ExportFormatError(f"{path}: the file is empty; expected a classification export with a header line")
    if b"\x00" in head or head.startswith(b"PK\x03\x04"):
        raise ExportFormatError(f"{path}: binary content (a zip or other non-CSV file renamed .csv?), not a CSV export")
    first_line = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[0]
    return [name.strip().lower() for name in next(csv.reader([first_line]))]


def check_header(path: Path, header: list[str]) -> None:
    """Raise ExportFormatError naming the file and what is missing."""
    missing = [c for c in ("classification_id", "created_at") if c not in header]
    if "user_id" not in header and "user_name" not in header:
        missing.append("user_id or user_name")
    if missing:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            hint = " (the header has one column: is the delimiter not a comma?)"
        # Never echo the first line itself: in a file without a header it is a volunteer's row.
        known = [c for c in header if c in PANOPTES_COLUMNS]
        raise ExportFormatError(
            f"{path}: not a Zooniverse classification export: missing column(s) "
            f"{', '.join(missing)}{hint}; its first line has {len(header)} field(s), "
            f"known export columns among them: {', '.join(known) or 'none'}"
        )
    duplicated = sorted({c for c in header if c in PANOPTES_COLUMNS and header.count(c) > 1})
    if duplicated:
        raise ExportFormatError(f"{path}: column(s) {', '.join(duplicated)} appear more than once in the header")


def staged_columns(header: list[str]) -> dict[str, str]:
    """read_csv's `columns`: a known Panoptes column keeps its name, anything else becomes extra_<i>.

    Column names from the file never reach SQL text: they travel as this
    struct, a parameter.
    """
    return {(name if name in PANOPTES_COLUMNS else f"extra_{i}"): "VARCHAR" for i, name in enumerate(header)}


def transcode_to_utf8(path: Path, folder: Path) -> Path:
    """A UTF-8 copy of `path` with undecodable bytes replaced (U+FFFD), streamed in chunks."""
    handle, target = tempfile.mkstemp(prefix=TRANSCODED_PREFIX, suffix=".csv", dir=folder)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open_binary(path) as source, os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
        for chunk in iter(lambda: source.read(1 << 22), b""):
            out.write(decoder.decode(chunk))
        out.write(decoder.decode(b"", final=True))
    return Path(target)

"""Loading export files into the warehouse: one file, one transaction.

`ingest_file` takes its steps in order, each one SQL file in `ingest_sql/`:
stage (read the CSV as text), number lines (the physical line of each row),
parse (type, hash and judge each row), insert (classifications and
rejected_rows), record (ingested_files). Parameters reach the SQL one way
only: DuckDB variables (`set variable name = ?`, read with `getvariable`).
"""

import functools
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engagement_pipeline.ingest_files import (
    TRANSCODED_PREFIX,
    ExportFormatError,
    FileScan,
    check_header,
    read_header,
    scan_file,
    staged_columns,
    transcode_to_utf8,
)

SQL_DIR = Path(__file__).parent / "ingest_sql"
MAX_LINE_BYTES = 16 * 1024 * 1024  # one row may be large (10 MB annotations happen)
CSV_BUFFER_BYTES = 2 * MAX_LINE_BYTES  # DuckDB's read buffer; its default (16 x max_line_size) would be 256 MB


@dataclass
class FileResult:
    path: str
    skipped: bool = False
    rows_read: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    transcoded: bool = False


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def files_read(self) -> int:
        return sum(not f.skipped for f in self.files)

    @property
    def files_skipped(self) -> int:
        return sum(f.skipped for f in self.files)

    def total(self, attribute: str) -> int:
        return sum(getattr(f, attribute) for f in self.files)


@functools.cache
def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def run_sql(con, name: str, **variables):
    """Set each keyword as a DuckDB variable, then run ingest_sql/<name>.sql; returns DuckDB's result."""
    for variable, value in variables.items():  # our own keyword names, never text from a file
        con.execute(f"set variable {variable} = ?", [value])
    return con.execute(sql_text(name))


def load_salt(salt_file: Path) -> str:
    """The salt for hashing user names: created once, kept out of the repo, never logged.

    Written whole to a private temporary file and linked into place, so two
    processes starting at once agree on one salt and a crash never leaves an
    empty one (which would make the hash unsalted).
    """
    if not salt_file.exists():
        salt_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=salt_file.parent, prefix=".salt-")  # mode 0600
        try:
            with os.fdopen(handle, "w") as out:
                out.write(secrets.token_hex(32))
                out.flush()
                os.fsync(out.fileno())
            os.link(temporary, salt_file)  # fails if another process linked its salt first: keep that one
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    salt = salt_file.read_text().strip()
    if len(salt) != 64 or any(c not in "0123456789abcdef" for c in salt):
        raise ValueError(f"{salt_file} is not a salt written by this project (64 hex digits); restore it from a backup")
    return salt


def ensure_schema(con) -> None:
    run_sql(con, "schema")


# --------------------------------------------------------------------------- the steps of one file


def _stage(con, path: Path, header: list[str]) -> tuple[int, int, int]:
    """Step 1: the CSV into csv_rows and ingest_rejects; returns (rows staged, parser rejects, invalid UTF-8)."""
    import duckdb

    try:
        run_sql(
            con,
            "stage_csv",
            csv_path=str(path),
            csv_columns=staged_columns(header),
            max_line_bytes=MAX_LINE_BYTES,
            buffer_bytes=CSV_BUFFER_BYTES,
        )
    except (duckdb.IOException, OSError, EOFError) as error:
        # A truncated or corrupt gzip, a file that vanished or cannot be read: nothing was written yet.
        raise ExportFormatError(f"{path}: cannot be read to its end, nothing loaded from it: {error}") from error
    except duckdb.InvalidInputException as error:
        # DuckDB's CSV reader gave up on the file as a whole (not a row it could reject): nothing was written yet.
        first_line = str(error).splitlines()[0]
        raise ExportFormatError(f"{path}: cannot be parsed as CSV, nothing loaded from it: {first_line}") from error
    return run_sql(con, "staged_counts").fetchone()


def _number_lines(con, scan: FileScan, rows_staged: int, parser_rejects: int) -> None:
    """Step 2: row_lines, the physical line each staged row starts on."""
    records = rows_staged + parser_rejects
    physical_lines = None if scan.newlines is None else scan.newlines + (0 if scan.ends_with_newline else 1)
    run_sql(con, "number_lines", records=records, one_line_per_record=physical_lines == 1 + records)


def ingest_file(con, path: Path, header: list[str], scan: FileScan, salt: str, scratch: Path) -> FileResult:
    """Load one export (already scanned, its header read and checked) in one transaction."""
    result = FileResult(path=str(path))
    transcoded_path = None
    try:
        # Staging works in temp tables; only the inserts need the transaction.
        rows_staged, parser_rejects, invalid_encoding = _stage(con, path, header)
        if invalid_encoding:
            transcoded_path = transcode_to_utf8(path, scratch)
            result.transcoded = True
            rows_staged, parser_rejects, _ = _stage(con, transcoded_path, header)
            transcoded = scan_file(transcoded_path)
            scan = FileScan(scan.sha256, transcoded.newlines, transcoded.ends_with_newline)
        _number_lines(con, scan, rows_staged, parser_rejects)
        run_sql(con, "parse_rows", salt=salt)

        con.execute("begin transaction")
        (result.rows_inserted,) = run_sql(con, "insert_classifications", source_file=str(path)).fetchone()
        run_sql(
            con,
            "insert_rejected_rows",
            source_file=str(path),
            ip_position=header.index("user_ip") + 1 if "user_ip" in header else 0,
            name_position=header.index("user_name") + 1 if "user_name" in header else 0,
            header_fields=len(header),
        )
        value_rejects, parser_rejects = run_sql(con, "file_counts").fetchone()
        result.rows_rejected = value_rejects + parser_rejects
        result.rows_duplicate = rows_staged - result.rows_inserted - value_rejects
        result.rows_read = rows_staged + parser_rejects
        run_sql(
            con,
            "record_file",
            sha256=scan.sha256,
            source_file=str(path),
            bytes=path.stat().st_size,
            rows_read=result.rows_read,
            rows_inserted=result.rows_inserted,
            rows_duplicate=result.rows_duplicate,
            rows_rejected=result.rows_rejected,
        )
        con.execute("commit")
    except BaseException:
        _rollback_if_open(con)
        raise
    finally:
        run_sql(con, "drop_staging")
        if transcoded_path is not None:
            transcoded_path.unlink(missing_ok=True)
    return result


def _rollback_if_open(con) -> None:
    try:
        con.execute("rollback")
    except Exception:  # no transaction was open: nothing to undo
        pass


def ingest_exports(con, files: list[Path], salt: str, scratch: Path, log=None) -> IngestReport:
    """Ingest every new or changed file; check all headers before touching the warehouse."""
    ensure_schema(con)
    seen = {row[0] for row in run_sql(con, "known_files").fetchall()}
    scans = {path: scan_file(path) for path in files}
    new_files: dict[Path, list[str]] = {}  # the first path of each content not loaded yet -> its header
    for path in files:
        if scans[path].sha256 not in seen:
            seen.add(scans[path].sha256)  # the same content at a second path is skipped like a known file
            new_files[path] = read_header(path)
            check_header(path, new_files[path])

    report = IngestReport()
    scratch.mkdir(parents=True, exist_ok=True)
    # A run killed mid-file leaves its UTF-8 copy behind; we hold the warehouse
    # lock, so no other ingest is using one now. They hold raw user_ip values.
    for leftover in scratch.glob(f"{TRANSCODED_PREFIX}*.csv"):
        leftover.unlink(missing_ok=True)
    for path in files:
        if path not in new_files:
            report.files.append(FileResult(path=str(path), skipped=True))
            continue
        result = ingest_file(con, path, new_files[path], scans[path], salt, scratch)
        report.files.append(result)
        if log is not None:
            log.info(
                f"{path.name}: {result.rows_read:,} rows read, {result.rows_inserted:,} new, "
                f"{result.rows_duplicate:,} already stored, {result.rows_rejected:,} rejected"
                + (" (non-UTF-8 bytes replaced)" if result.transcoded else "")
            )
    return report

"""Loading export files into the warehouse: one file, one transaction.

`ingest_file` takes its steps in order, each one SQL file in `sql/`:
stage (read the CSV as text), number lines (the physical line of each row),
parse (type, hash and judge each row), insert (classifications and
rejected_rows), record (ingested_files). Parameters reach the SQL one way
only: DuckDB variables (`set variable name = ?`, read with `getvariable`).
"""

import functools
import hashlib
import os
import secrets
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from engagement_pipeline.ingest.files import (
    LINK_PREFIX,
    TRANSCODED_PREFIX,
    ExportFormatError,
    FileScan,
    check_header,
    open_binary,
    read_header,
    read_lines,
    scan_file,
    shown,
    staged_columns,
    transcode_to_utf8,
)
from engagement_pipeline.ingest.known_files import record_fingerprints, scan_unknown
from engagement_pipeline.ingest.progress import Progress, bytes_read, duckdb_progress
from engagement_pipeline.ingest.session import ingest_settings
from engagement_pipeline.ingest.structure import (
    CARRIAGE_RETURN,
    QUOTING,
    UNCLOSED,
    FileStructure,
    TooManyMalformedRecords,
    read_records,
    scan_structure,
    write_clean_copy,
)

SQL_DIR = Path(__file__).parent / "sql"
MAX_LINE_BYTES = 16 * 1024 * 1024  # one row may be large (10 MB annotations happen); longer ones are rejected
CSV_BUFFER_BYTES = 2 * MAX_LINE_BYTES  # DuckDB's read buffer; its default (16 x max_line_size) would be 256 MB
# A file of which more than this share of rows cannot be used stops the ingest
# (nothing of it stored): it is most likely not what it seems (dates in another
# format, another table's export). The asset's run config can change it.
MAX_FILE_REJECTED_SHARE = 0.9
# DuckDB's memory_limit during the load: the typed rows of a big export spill to
# duckdb_tmp past it (they hold no user_ip or user_name), so the whole ingest
# process stays under 2 GB; the warehouse's own limit is put back after it.
INGEST_MEMORY_LIMIT = "1GB"
# The largest export read, once decompressed (the ingest's run config: max_export_gb). A copy of
# a file (UTF-8, or without its malformed records) is never larger than this, nor than the file.
# 64 GB: the research's 38.5M classifications are one 37 GB file once decompressed (issue 27);
# a copy is refused separately when it would leave its disk under 100 MB free.
MAX_EXPORT_GB = 64.0
# Rows of a file inserted per statement (insert_classifications.sql, by a hash of the id): the joins'
# pointer tables, which DuckDB cannot spill, stay well inside INGEST_MEMORY_LIMIT (10M ids in one went).
ROWS_PER_INSERT_PART = 4_000_000
PROGRESS_EVERY_S = 30.0  # a pass over a big file says how far it is at least this often
# Raw text kept of malformed records (a quote in the wrong place, a stray carriage return): up to
# this much of each, and of all of one file together; the others keep none.
MAX_RAW_TEXT_BYTES = 64 * 1024
MAX_RAW_TEXT_TOTAL = 4 * 2**20


@dataclass
class FileResult:
    path: str
    skipped: bool = False
    rows_read: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    transcoded: bool = False
    top_reasons: list[str] = field(default_factory=list)  # the commonest reasons its rows were rejected


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
    """Set each keyword as a DuckDB variable, then run sql/<name>.sql; returns DuckDB's result."""
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


def _stage_and_parse(
    con, path: Path, shown_path: str, header: list[str], salt: str, every_column: bool = False
) -> tuple[int, int, int, int]:
    """Steps 1 and 2: csv_rows (a view of the file: the Panoptes columns, or `every_column` but user_ip),
    parsed_rows.

    Returns (rows read, parser rejects, invalid UTF-8, rows read whose values cannot be used).
    """
    import duckdb

    run_sql(
        con,
        "stage_csv",
        every_column=every_column,
        csv_path=str(path),
        csv_columns=staged_columns(header),
        max_line_bytes=MAX_LINE_BYTES,
        buffer_bytes=CSV_BUFFER_BYTES,
    )
    try:
        run_sql(con, "parse_rows", salt=salt)
    except (duckdb.IOException, OSError, EOFError) as error:
        # A truncated or corrupt gzip, a file that vanished or cannot be read: nothing was written yet.
        raise ExportFormatError(
            f"{shown_path}: cannot be read to its end, nothing loaded from it: {str(error).splitlines()[0]}. "
            "Download it again (a .gz must be complete) and run the ingest again."
        ) from error
    except duckdb.InvalidInputException as error:
        # DuckDB's CSV reader gave up on the file as a whole (not a row it could reject): nothing was written yet.
        first_line = str(error).splitlines()[0]
        raise ExportFormatError(
            f"{shown_path}: cannot be parsed as CSV, nothing loaded from it: {first_line}. "
            "Re-export it from Zooniverse, or repair the line named (a lone carriage return in a field?)."
        ) from error
    return run_sql(con, "staged_counts").fetchone()


def _number_lines(con, shown_path: str, structure: FileStructure, rows_read: int, parser_rejects: int) -> None:
    """Step 3: row_lines and reject_lines, the physical line each row starts on; every line accounted for.

    Numbered in the file DuckDB read, then moved past the malformed records left out of it."""
    records = rows_read + parser_rejects
    malformed = structure.malformed
    lines = 1 + structure.lines - int(malformed["lines"].sum())  # of the file read
    one_line_per_record = lines == 1 + records
    run_sql(
        con,
        "number_lines",
        records=records,
        one_line_per_record=one_line_per_record,
    )
    (accounted,) = run_sql(con, "line_accounting").fetchone()
    # Blank lines hold no row (DuckDB skips them); any other shortfall is a row the reader lost.
    if not 0 <= lines - accounted <= structure.blank_lines:
        raise ExportFormatError(
            f"{shown_path}: {lines - accounted} of its {lines} lines could not be matched to a row; "
            "nothing loaded from it. Re-export it, or repair the file, and run the ingest again."
        )
    if len(malformed["line"]):
        run_sql(
            con,
            "map_removed_lines",
            removed_lines=malformed["line"].tolist(),
            removed_spans=malformed["lines"].tolist(),
        )


def _raw_lines(con, path: Path) -> tuple[list[int], list[str]]:
    """The physical lines the parser rejected, read from the file itself (DuckDB's csv_line can be another row's)."""
    wanted = [line for (line,) in run_sql(con, "reject_line_numbers").fetchall()]
    texts = read_lines(path, wanted, MAX_RAW_TEXT_BYTES) if wanted else {}
    return list(texts), [text.decode("utf-8", errors="replace").rstrip("\r") for text in texts.values()]


def _malformed_texts(path: Path, structure: FileStructure) -> list[str | None]:
    """Raw text of the malformed records whose fields may be shown (quoting, carriage returns): a few, short."""
    m = structure.malformed
    shown_ok = ((m["code"] == QUOTING) | (m["code"] == CARRIAGE_RETURN) | (m["code"] == UNCLOSED)) & (
        m["length"] <= MAX_RAW_TEXT_BYTES
    )
    import numpy as np

    shown_ok &= np.cumsum(np.where(shown_ok, m["length"], 0)) <= MAX_RAW_TEXT_TOTAL
    texts: list[str | None] = [None] * len(m["line"])
    chosen = np.flatnonzero(shown_ok)
    raw = read_records(path, m["offset"][chosen], m["length"][chosen], open_binary)
    for index, text in zip(chosen.tolist(), raw, strict=True):
        texts[index] = text.decode("utf-8", errors="replace").replace("\r\n", "\n").rstrip("\r")
    return texts


def ingest_file(
    con,
    path: Path,
    header: list[str],
    encoding: str,
    scan: FileScan,
    salt: str,
    scratch: Path,
    max_rejected_share: float,
    progress: Progress | None = None,
) -> FileResult:
    """Load one export (already scanned, its header read and checked) in one transaction.

    `progress` says how far each pass over a big file is, every PROGRESS_EVERY_S seconds while it runs."""
    progress = progress or Progress(None)
    result = FileResult(path=shown(path))
    name = shown(path.name)
    copies: list[Path] = []  # files made in the scratch folder for this one: removed at the end
    try:
        # Staging, parsing and numbering work in temp tables; only the inserts need the transaction.
        result.transcoded = not scan.valid_utf8 and encoding == "utf-8"
        with progress.step(f"{name}: reading it as UTF-8", bytes_read(_size(path))):
            readable = _readable(path, encoding, scan, scratch, copies)
        try:
            with progress.step(f"{name}: finding its records", bytes_read(readable.stat().st_size)):
                structure = scan_structure(readable, len(header), MAX_LINE_BYTES, open_binary)
        except TooManyMalformedRecords as error:
            raise ExportFormatError(f"{result.path}: {error}; nothing loaded from it") from None
        except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt gzip; gone, unreadable
            raise ExportFormatError(
                f"{result.path}: cannot be read to its end, nothing loaded from it: {error}. "
                "Download it again (a .gz must be complete) and run the ingest again."
            ) from error
        texts = _malformed_texts(readable, structure) if len(structure.malformed["line"]) else []
        if structure.needs_copy:
            with progress.step(f"{name}: writing a clean copy", bytes_read(readable.stat().st_size)):
                readable = _clean_copy(readable, path, structure, len(header), scan, scratch, copies)
        with progress.step(f"{name}: parsing", duckdb_progress(con)):
            rows_read, parser_rejects, invalid_encoding, value_rejects = _stage_and_parse(
                con, readable, result.path, header, salt
            )
        if invalid_encoding:  # the scan found every byte UTF-8: DuckDB should agree
            raise ExportFormatError(f"{result.path}: DuckDB found bytes that are not UTF-8; nothing loaded from it")
        try:
            with progress.step(f"{name}: numbering its lines", duckdb_progress(con)):
                _number_lines(con, result.path, structure, rows_read, parser_rejects)
        except ExportFormatError:  # newlines quoted in a column not staged? Stage them all, count again
            with progress.step(f"{name}: parsing again, every column", duckdb_progress(con)):
                _stage_and_parse(con, readable, result.path, header, salt, every_column=True)
            with progress.step(f"{name}: numbering its lines", duckdb_progress(con)):
                _number_lines(con, result.path, structure, rows_read, parser_rejects)
        con.execute("begin transaction")
        has_rejects = bool(parser_rejects or value_rejects or texts)
        _insert(con, result, readable, header, structure, texts, rows_read, has_rejects, progress, name)
        _refuse_if_mostly_rejected(result, max_rejected_share)
        _record(con, result, path, scan)
        con.execute("commit")
    except BaseException:
        _rollback_if_open(con)
        raise
    finally:
        run_sql(con, "drop_staging")
        for copy in copies:
            copy.unlink(missing_ok=True)
    return result


def _clean_copy(readable: Path, path: Path, structure, fields: int, scan: FileScan, scratch: Path, copies) -> Path:
    """The file without its malformed records, CRLF made LF: in place when `readable` is already our copy."""
    if readable in copies and readable.name.startswith(TRANSCODED_PREFIX):  # our UTF-8 copy, not a link
        target = readable
    else:
        _require_room(path, scratch, scan.expanded_bytes)
        handle, name = tempfile.mkstemp(prefix=TRANSCODED_PREFIX, suffix=".csv", dir=scratch)
        os.close(handle)
        target = Path(name)
        copies.append(target)
    write_clean_copy(readable, target, structure, fields, MAX_LINE_BYTES, open_binary)
    return target


def _require_room(path: Path, scratch: Path, size: int) -> None:
    """Refuse to write a copy of `size` bytes that would leave the scratch folder's disk with under 100 MB."""
    import shutil

    free = shutil.disk_usage(scratch).free
    if free - size < 100 * 2**20:
        raise ExportFormatError(
            f"{shown(path)}: reading it needs a copy of {size / 2**20:,.0f} MB in {scratch}, and its disk has "
            f"{free / 2**20:,.0f} MB free; free space there (or point ENGAGEMENT_HOME at a larger disk) and run "
            "the ingest again (nothing of this file was stored)"
        )


def _insert(
    con,
    result: FileResult,
    readable: Path,
    header: list[str],
    structure: FileStructure,
    texts: list[str | None],
    rows_read: int,
    has_rejects: bool,
    progress: Progress,
    name: str,
) -> None:
    """Step 4: the usable rows into classifications, the others into rejected_rows; counts into `result`."""
    parts = max(1, -(-rows_read // ROWS_PER_INSERT_PART))
    statement = [0]  # two statements a part, one after the other: choose its rows, insert them
    with progress.step(f"{name}: storing {rows_read:,} rows", duckdb_progress(con, 2 * parts, statement)):
        result.rows_inserted = 0
        for part in range(parts):
            statement[0] = 2 * part
            run_sql(con, "choose_rows", id_parts=parts, id_part=part)
            statement[0] = 2 * part + 1
            result.rows_inserted += run_sql(con, "insert_classifications", source_file=result.path).fetchone()[0]
    run_sql(con, "delete_rejected_rows", source_file=result.path)  # a changed file's earlier rejects
    if has_rejects:
        _insert_rejects(con, result, readable, header, structure, texts)
    value_rejects, result.rows_rejected, result.top_reasons = run_sql(
        con, "file_counts", source_file=result.path
    ).fetchone()
    result.rows_duplicate = rows_read - result.rows_inserted - value_rejects
    result.rows_read = rows_read + result.rows_rejected - value_rejects


def _insert_rejects(con, result: FileResult, readable: Path, header, structure: FileStructure, texts) -> None:
    reject_line_numbers, reject_line_texts = _raw_lines(con, readable)
    m = structure.malformed
    run_sql(
        con,
        "insert_rejected_rows",
        source_file=result.path,
        ip_position=header.index("user_ip") + 1 if "user_ip" in header else 0,
        name_position=header.index("user_name") + 1 if "user_name" in header else 0,
        header_fields=len(header),
        reject_line_numbers=reject_line_numbers,
        reject_line_texts=reject_line_texts,
        malformed_lines=m["line"].tolist(),
        malformed_codes=m["code"].tolist(),
        malformed_fields=m["fields"].tolist(),
        malformed_bytes=m["length"].tolist(),
        malformed_texts=texts,
        max_line_bytes=MAX_LINE_BYTES,
    )


def _refuse_if_mostly_rejected(result: FileResult, max_rejected_share: float) -> None:
    if result.rows_read and result.rows_rejected / result.rows_read > max_rejected_share:
        raise ExportFormatError(
            f"{result.path}: {result.rows_rejected:,} of its {result.rows_read:,} rows cannot be used, more than "
            f"the {max_rejected_share:.0%} a file may have (max_file_rejected_share); nothing loaded from it. "
            f"Commonest reasons: {'; '.join(result.top_reasons)}. Fix or remove the file and run the ingest again."
        )


def _record(con, result: FileResult, path: Path, scan: FileScan) -> None:
    """Step 5: the file's content as loaded, so a rerun skips it."""
    run_sql(
        con,
        "record_file",
        sha256=scan.sha256,
        source_file=result.path,
        bytes=path.stat().st_size,
        rows_read=result.rows_read,
        rows_inserted=result.rows_inserted,
        rows_duplicate=result.rows_duplicate,
        rows_rejected=result.rows_rejected,
    )


def _readable(path: Path, encoding: str, scan: FileScan, scratch: Path, copies: list[Path]) -> Path:
    """The UTF-8 file DuckDB reads for `path`: the file itself unless it must be transcoded
    (UTF-16, or bytes that are not UTF-8), or has a non-UTF-8 name."""
    readable = path
    if encoding != "utf-8" or not scan.valid_utf8:  # DuckDB reads UTF-8 only
        _require_room(path, scratch, 2 * scan.expanded_bytes)  # Latin-1 bytes take two in UTF-8
        readable = transcode_to_utf8(path, scratch, encoding)
        copies.append(readable)
    if readable == path and os.fsencode(str(path)) != str(path).encode("utf-8", errors="ignore"):
        readable = _utf8_named_link(path, scratch)  # DuckDB takes UTF-8 paths only
        copies.append(readable)
    return readable


def _utf8_named_link(path: Path, scratch: Path) -> Path:
    """A symbolic link with a UTF-8 name to a file whose name is not UTF-8, in the scratch folder."""
    link = scratch / f"{LINK_PREFIX}{hashlib.sha256(os.fsencode(str(path))).hexdigest()[:16]}.csv"
    if path.name.lower().endswith(".gz"):
        link = link.with_suffix(".csv.gz")
    link.unlink(missing_ok=True)
    link.symlink_to(path.resolve())
    return link


def _rollback_if_open(con) -> None:
    try:
        con.execute("rollback")
    except Exception:  # no transaction was open: nothing to undo
        pass


def ingest_exports(
    con,
    files: list[Path],
    salt: str,
    scratch: Path,
    log=None,
    max_rejected_share: float = MAX_FILE_REJECTED_SHARE,
    max_export_gb: float = MAX_EXPORT_GB,
) -> IngestReport:
    """Ingest every new or changed file; check all headers before touching the warehouse."""
    ensure_schema(con)
    progress = Progress(log.info if log is not None else None, PROGRESS_EVERY_S)
    seen = {row[0] for row in run_sql(con, "known_files").fetchall()}

    def scan(path: Path) -> FileScan:
        passes = 2 if path.name.lower().endswith(".gz") else 1  # the bytes as stored, then decompressed
        with progress.step(f"{shown(path.name)}: checking (digest, lines, encoding)", bytes_read(_size(path), passes)):
            return scan_file(path, MAX_LINE_BYTES, max_bytes=int(max_export_gb * 2**30))

    # old snapshots are recognised by size, mtime and a quick fingerprint, not read again (known_files.py)
    scans, fingerprints, _ = scan_unknown(con, files, seen, run_sql, scan)
    new_files: dict[Path, tuple[list[str], str]] = {}  # the first path of each new content -> (header, encoding)
    for path in files:
        if scans[path].sha256 not in seen:
            seen.add(scans[path].sha256)  # the same content at a second path is skipped like a known file
            new_files[path] = read_header(path)
            check_header(path, new_files[path][0])

    report = IngestReport()
    scratch.mkdir(parents=True, exist_ok=True)
    with ingest_settings(con, run_sql, INGEST_MEMORY_LIMIT):
        _ingest_new_files(con, files, new_files, scans, salt, scratch, log, max_rejected_share, report, progress)
    record_fingerprints(con, scans, fingerprints, run_sql)
    return report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # the scan says which file cannot be read, and why
        return 0


def _ingest_new_files(con, files, new_files, scans, salt, scratch, log, max_rejected_share, report, progress) -> None:
    # A run killed mid-file leaves its UTF-8 copy behind; we hold the warehouse
    # lock, so no other ingest is using one now. They hold raw user_ip values.
    for leftover in [*scratch.glob(f"{TRANSCODED_PREFIX}*.csv"), *scratch.glob(f"{LINK_PREFIX}*")]:
        leftover.unlink(missing_ok=True)
    for path in files:
        if path not in new_files:
            report.files.append(FileResult(path=shown(path), skipped=True))
            continue
        header, encoding = new_files[path]
        result = ingest_file(con, path, header, encoding, scans[path], salt, scratch, max_rejected_share, progress)
        report.files.append(result)
        if log is not None:
            log.info(
                f"{shown(path.name)}: {result.rows_read:,} rows read, {result.rows_inserted:,} new, "
                f"{result.rows_duplicate:,} already stored or repeated, {result.rows_rejected:,} rejected"
                + (" (non-UTF-8 bytes read as Latin-1)" if result.transcoded else "")
                + (f" (read as {encoding})" if encoding != "utf-8" else "")
            )

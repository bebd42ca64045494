"""Ingest: Zooniverse classification exports -> `classifications` and `rejected_rows`.

One road for every file under the exports folder (`*.csv`, `*.csv.gz`, recursively):

1. Its header is read and checked first, for every new file, before anything
   is written: a file that is not a classification export stops the ingest
   with one message naming the file and what is missing.
2. A file whose content (sha256) was loaded before is skipped; a changed file
   is read again. Exports are full snapshots, so a classification already
   stored is kept as first stored (the earliest ingested file wins; later
   copies count as duplicates, even if their content differs).
3. DuckDB's CSV reader stages the rows as text, `ingest_sql/stage_rows.sql`
   types them, hashes user names and judges each row; usable rows go to
   `classifications`, the rest to `rejected_rows` with file, line and reason.
   All of one file is one transaction: never half a file.

`user_ip` is never read past the CSV reader, and `user_name` only into a
salted hash: neither reaches any table (CONTRACT.md, Privacy).
"""

import codecs
import csv
import gzip
import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from pydantic import Field

from engagement_pipeline.exports_folder import check_exports_folder
from engagement_pipeline.resources import Exports, Storage, Warehouse

SQL_DIR = Path(__file__).parent / "ingest_sql"

PANOPTES_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)  # fmt: skip
MAX_LINE_BYTES = 16 * 1024 * 1024  # one row may be large (10 MB annotations happen)
CSV_BUFFER_BYTES = 2 * MAX_LINE_BYTES  # DuckDB's read buffer; its default (16 x max_line_size) would be 256 MB
TRANSCODED_PREFIX = "transcoded-"  # UTF-8 copies of exports in the scratch folder: raw rows, user_ip included


class ExportFormatError(ValueError):
    """A file that is not a Zooniverse classification export."""


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


def find_exports(root: Path) -> list[Path]:
    """Every `*.csv` and `*.csv.gz` under `root`, in a stable order."""
    if not root.is_dir():
        raise FileNotFoundError(f"Exports folder {root} does not exist (ENGAGEMENT_EXPORTS_DIR).")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))


def _open_binary(path: Path):
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
        with _open_binary(path) as handle:
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
    con.execute((SQL_DIR / "schema.sql").read_text())


def _transcode_to_utf8(path: Path, folder: Path) -> Path:
    """A UTF-8 copy of `path` with undecodable bytes replaced (U+FFFD), streamed in chunks."""
    handle, target = tempfile.mkstemp(prefix=TRANSCODED_PREFIX, suffix=".csv", dir=folder)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with _open_binary(path) as source, os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
        for chunk in iter(lambda: source.read(1 << 22), b""):
            out.write(decoder.decode(chunk))
        out.write(decoder.decode(b"", final=True))
    return Path(target)


def _stage_csv(con, csv_path: Path, header: list[str]) -> int:
    """Read the CSV into temp table csv_rows (all text) and the parser's rejects; returns rows read.

    Column names from the file are never pasted into SQL: a known Panoptes
    column keeps its name, anything else becomes extra_<i>.
    """
    names = {(name if name in PANOPTES_COLUMNS else f"extra_{i}"): "VARCHAR" for i, name in enumerate(header)}
    con.execute("drop table if exists csv_rows; drop table if exists ingest_rejects; drop table if exists ingest_scans")
    # user_ip is dropped by the reader's projection: it is never staged, so never spilled to disk.
    projection = "* exclude (user_ip)" if "user_ip" in names else "*"  # one of two constant strings
    con.execute(
        f"""
        create temp table csv_rows as
        select {projection} from read_csv(?, header = true, auto_detect = false, columns = ?, delim = ',',
                               quote = '"', escape = '"', nullstr = ['NA', ''], strict_mode = true,
                               max_line_size = ?, buffer_size = ?, store_rejects = true,
                               rejects_table = 'ingest_rejects', rejects_scan = 'ingest_scans')
        """,
        [str(csv_path), names, MAX_LINE_BYTES, CSV_BUFFER_BYTES],
    )
    for column in PANOPTES_COLUMNS:  # our own constant names only
        if column not in names and column != "user_ip":
            con.execute(f"alter table csv_rows add column {column} varchar")
    return con.execute("select count(*) from csv_rows").fetchone()[0]


def _number_lines(con, scan: FileScan, rows_read: int) -> None:
    """row_lines(idx, record_line, raw_line): the physical line each staged row starts on.

    DuckDB counts records, not lines, and skips the records it rejects; the
    line of a row is its record number plus the newlines quoted inside the
    rows before it. When the file has exactly one line per record (the usual
    case, known from the newline count) that sum is zero and is not computed.
    """
    parser_rejects = con.execute("select count(distinct line) from ingest_rejects").fetchone()[0]
    records = 1 + rows_read + parser_rejects
    physical_lines = None if scan.newlines is None else scan.newlines + (0 if scan.ends_with_newline else 1)
    quoted_newlines = (
        "0"
        if physical_lines == records
        else "coalesce(length(concat_ws('', *columns(*))) - length(replace(concat_ws('', *columns(*)), chr(10), '')), 0)"
    )
    con.execute(
        f"""
        create or replace temp table row_lines as
        with accepted as (
            select rowid as idx, {quoted_newlines} as quoted_newlines from csv_rows
        ),
        parser_rejects as (select distinct line from ingest_rejects),
        free_record_lines as (
            select range as record_line, row_number() over (order by range) - 1 as idx
            from range(2, ? + 2)
            where range not in (select line from parser_rejects)
        )
        select idx, record_line, quoted_newlines,
               record_line + coalesce(sum(quoted_newlines) over (order by idx rows between unbounded preceding and 1 preceding), 0)
                   as raw_line
        from accepted join free_record_lines using (idx)
        """,  # `quoted_newlines` is one of two constant expressions above
        [rows_read + parser_rejects],
    )


def ingest_file(con, path: Path, header: list[str], scan: FileScan, salt: str, scratch: Path) -> FileResult:
    """Load one export (already scanned, its header read and checked) in one transaction."""
    import duckdb

    result = FileResult(path=str(path))
    transcoded_path = None
    try:
        # Staging works in temp tables; only the final inserts need the transaction.
        try:
            result.rows_read = _stage_csv(con, path, header)
            bad_encoding = con.execute(
                "select count(*) from ingest_rejects where error_type = 'INVALID ENCODING'"
            ).fetchone()[0]
            if bad_encoding:
                transcoded_path = _transcode_to_utf8(path, scratch)
                result.transcoded = True
                result.rows_read = _stage_csv(con, transcoded_path, header)
                transcoded = scan_file(transcoded_path)
                scan = FileScan(scan.sha256, transcoded.newlines, transcoded.ends_with_newline)
        except (duckdb.IOException, OSError, EOFError) as error:
            # A truncated or corrupt gzip, a file that vanished or cannot be read: nothing was written yet.
            raise ExportFormatError(f"{path}: cannot be read to its end, nothing loaded from it: {error}") from error
        except duckdb.InvalidInputException as error:
            # DuckDB's CSV reader gave up on the file as a whole (not a row it could reject): nothing was written yet.
            first_line = str(error).splitlines()[0]
            raise ExportFormatError(f"{path}: cannot be parsed as CSV, nothing loaded from it: {first_line}") from error
        _number_lines(con, scan, result.rows_read)
        con.execute("set variable salt = ?", [salt])
        con.execute((SQL_DIR / "stage_rows.sql").read_text())

        con.execute("begin transaction")
        before = con.execute("select count(*) from classifications").fetchone()[0]
        con.execute(
            """
            insert or ignore into classifications
            select classification_id, user_key, is_anonymous, workflow_id, workflow_version, created_at,
                   started_at, finished_at, utc_offset_minutes, device_class, browser_session,
                   gold_standard, expert, subject_ids, ? as source_file, raw_line as source_line,
                   now() as ingested_at
            from parsed_rows join row_lines using (idx)
            where reason is null
            qualify row_number() over (partition by classification_id order by idx) = 1
            """,
            [str(path)],
        )
        result.rows_inserted = con.execute("select count(*) from classifications").fetchone()[0] - before

        # A changed file is read again: its earlier rejects are replaced, not repeated.
        con.execute("delete from rejected_rows where source_file = ?", [str(path)])
        ip_position = header.index("user_ip") + 1 if "user_ip" in header else 0
        name_position = header.index("user_name") + 1 if "user_name" in header else 0
        con.execute(
            """
            insert into rejected_rows
            select ?, row_lines.raw_line, parsed_rows.reason,
                   to_json({classification_id: r.classification_id, user_id: r.user_id,
                            workflow_id: r.workflow_id, workflow_name: r.workflow_name,
                            workflow_version: r.workflow_version, created_at: r.created_at,
                            gold_standard: r.gold_standard, expert: r.expert, metadata: r.metadata,
                            annotations: r.annotations, subject_data: r.subject_data,
                            subject_ids: r.subject_ids})::varchar,
                   now()
            from parsed_rows join row_lines using (idx) join csv_rows r on r.rowid = parsed_rows.idx
            where parsed_rows.reason is not null
            union all
            -- Lines the CSV parser could not read. They are split into fields
            -- quote-aware (a quoted "Smith, John" is one field) and user_name
            -- and user_ip blanked by position; a line with more or fewer fields
            -- than the header is misaligned, so any field could hold them: its
            -- fields are withheld.
            select ?, e.line + coalesce((select sum(quoted_newlines) from row_lines where record_line < e.line), 0),
                   'malformed CSV: ' || e.error_type || ': ' || e.error_message,
                   case
                       when ? = 0 and ? = 0 then e.text
                       when len(e.fields) = ? then array_to_string(list_transform(e.fields,
                           lambda part, i: case when i in (?, ?) then '' else part end), ',')
                       else 'fields withheld: ' || len(e.fields) || ' fields where the header has ' || ?
                            || ', so user_ip or user_name could be in any of them'
                   end,
                   now()
            from (
                select line, error_type, error_message, trim(csv_line, chr(10) || chr(13)) as text,
                       regexp_extract_all(',' || text, ',("(?:[^"]|"")*"?|[^,]*)', 1) as fields
                from (select distinct on (line) * from ingest_rejects order by line)
            ) e
            """,
            [str(path), str(path), ip_position, name_position, len(header), ip_position, name_position, len(header)],
        )
        value_rejects = con.execute("select count(*) from parsed_rows where reason is not null").fetchone()[0]
        parser_rejects = con.execute("select count(distinct line) from ingest_rejects").fetchone()[0]
        result.rows_rejected = value_rejects + parser_rejects
        result.rows_duplicate = result.rows_read - result.rows_inserted - value_rejects
        result.rows_read += parser_rejects
        con.execute(
            "insert or replace into ingested_files values (?, ?, ?, ?, ?, ?, ?, now())",
            [
                scan.sha256,
                str(path),
                path.stat().st_size,
                result.rows_read,
                result.rows_inserted,
                result.rows_duplicate,
                result.rows_rejected,
            ],
        )
        con.execute("commit")
    except BaseException:
        _rollback_if_open(con)
        raise
    finally:
        con.execute(
            "drop table if exists csv_rows; drop table if exists row_lines; drop table if exists parsed_rows; "
            "drop table if exists ingest_rejects; drop table if exists ingest_scans"  # raw lines, user_ip included
        )
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
    seen = {row[0] for row in con.execute("select sha256 from ingested_files").fetchall()}
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


# --------------------------------------------------------------------------- Dagster


class IngestCheckConfig(dg.Config):
    max_rejected_share: float = Field(
        0.05, description="The check fails when more than this share of the rows read was rejected."
    )


_TZ = "TIMESTAMP WITH TIME ZONE"
# The UI's column schemas of the two tables (ingest_sql/schema.sql is the source;
# engagement_pipeline_tests/test_definitions.py holds these lists to the built tables).
CLASSIFICATIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("classification_id", "BIGINT", description="primary key: each classification stored once"),
        dg.TableColumn("user_key", "VARCHAR", description="user_id, or a salted hash of user_name (never the name)"),
        dg.TableColumn("is_anonymous", "BOOLEAN", description="a not-logged-in volunteer"),
        dg.TableColumn("workflow_id", "BIGINT"),
        dg.TableColumn("workflow_version", "VARCHAR"),
        dg.TableColumn("created_at", _TZ, description="when Zooniverse received the classification (UTC)"),
        dg.TableColumn("started_at", _TZ, description="metadata.started_at (browser clock)"),
        dg.TableColumn("finished_at", _TZ, description="metadata.finished_at (browser clock)"),
        dg.TableColumn("utc_offset_minutes", "INTEGER", description="local time = UTC + this"),
        dg.TableColumn("device_class", "VARCHAR", description="mobile, tablet, desktop or unknown (user agent)"),
        dg.TableColumn("browser_session", "VARCHAR", description="metadata.session"),
        dg.TableColumn("gold_standard", "BOOLEAN"),
        dg.TableColumn("expert", "BOOLEAN"),
        dg.TableColumn("subject_ids", "VARCHAR"),
        dg.TableColumn("source_file", "VARCHAR", description="the export the row was first loaded from"),
        dg.TableColumn("source_line", "BIGINT", description="line of that file where the row starts (1 = header)"),
        dg.TableColumn("ingested_at", _TZ),
    ]
)
REJECTED_ROWS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("source_file", "VARCHAR"),
        dg.TableColumn("line_number", "BIGINT", description="line of the file where the row starts"),
        dg.TableColumn("reason", "VARCHAR", description="why the row could not be used"),
        dg.TableColumn("raw_text", "VARCHAR", description="the row, with user_ip and user_name removed"),
        dg.TableColumn("rejected_at", _TZ),
    ]
)


def _preview_markdown(con) -> str:
    rows = con.execute(
        """
        select workflow_id, device_class, count(*) as classifications,
               min(created_at)::varchar as first, max(created_at)::varchar as last
        from classifications group by all order by classifications desc limit 8
        """
    ).fetchall()
    lines = ["| workflow_id | device | classifications | first | last |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {w} | {d} | {n:,} | {a} | {b} |" for w, d, n, a, b in rows]
    return "\n".join(lines)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "classifications",
            group_name="ingest",
            kinds={"duckdb"},
            owners=["team:engagement"],
            description=(
                "One row per Zooniverse classification from every export under ENGAGEMENT_EXPORTS_DIR "
                "(or the bundled sample): typed, UTC, user key hashed where needed, no user_ip or user_name."
            ),
            metadata={"dagster/column_schema": CLASSIFICATIONS_SCHEMA},
        ),
        dg.AssetSpec(
            "rejected_rows",
            group_name="ingest",
            kinds={"duckdb"},
            owners=["team:engagement"],
            description="Rows of the exports that could not be used: file, line, reason, raw text without user_ip/user_name.",
            metadata={"dagster/column_schema": REJECTED_ROWS_SCHEMA},
        ),
    ],
    # One load writes both tables; selecting either one runs it.
    can_subset=True,
)
def ingest_classifications(context: dg.AssetExecutionContext, warehouse: Warehouse, exports: Exports, storage: Storage):
    """Load new or changed export files into the warehouse, one transaction per file."""
    folder = exports.path
    if folder is None:
        from engagement_pipeline.sample import ensure_sample_exports

        folder = ensure_sample_exports(storage.sample_exports)
        context.log.info(f"ENGAGEMENT_EXPORTS_DIR is unset: using the bundled sample in {folder}")
    files = find_exports(folder)
    if not files:
        raise FileNotFoundError(f"No *.csv or *.csv.gz exports under {folder}")
    salt = load_salt(storage.salt_file)
    with warehouse.connect(log=context.log) as con:
        ensure_schema(con)
        check_exports_folder(con, folder, files, storage.root)
        report = ingest_exports(con, files, salt, scratch=storage.ingest_scratch, log=context.log)
        total, rejected = con.execute(
            "select (select count(*) from classifications), (select count(*) from rejected_rows)"
        ).fetchone()
        preview = _preview_markdown(con)
    common = {
        "files_read": report.files_read,
        "files_skipped": report.files_skipped,
        "rows_read": report.total("rows_read"),
        "rows_inserted": report.total("rows_inserted"),
        "rows_already_stored": report.total("rows_duplicate"),
        "rows_rejected_this_run": report.total("rows_rejected"),
        "exports_dir": str(folder),
    }
    results = {
        "classifications": {**common, "dagster/row_count": total, "preview": dg.MetadataValue.md(preview)},
        "rejected_rows": {**common, "dagster/row_count": rejected},
    }
    for key in context.selected_asset_keys:
        yield dg.MaterializeResult(asset_key=key, metadata=results[key.to_user_string()])


@dg.asset_check(
    asset="classifications", description="classification_id is unique (exports are snapshots: each id stored once)."
)
def classification_id_unique(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        duplicates = con.execute("select count(*) - count(distinct classification_id) from classifications").fetchone()[
            0
        ]
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": duplicates})


@dg.asset_check(
    asset="classifications",
    description="created_at is present and not in the future (beyond the day of clock skew the ingest also allows).",
)
def created_at_present_and_past(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        missing, future = con.execute(
            "select count(*) filter (created_at is null), count(*) filter (created_at > now() + interval 1 day) "
            "from classifications"
        ).fetchone()
    return dg.AssetCheckResult(passed=missing == 0 and future == 0, metadata={"missing": missing, "in_future": future})


@dg.asset_check(
    asset="classifications",
    description="The share of rejected rows (of all rows read from the files ingested) is under max_rejected_share.",
)
def rejected_share_under_threshold(config: IngestCheckConfig, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        ensure_schema(con)
        read, rejected = con.execute(
            # the latest content of each file: a changed file's rejects replace its earlier ones
            "select coalesce(sum(rows_read), 0), coalesce(sum(rows_rejected), 0) from ("
            " select * from ingested_files"
            " qualify row_number() over (partition by source_file order by ingested_at desc) = 1)"
        ).fetchone()
    share = rejected / read if read else 0.0
    return dg.AssetCheckResult(
        passed=share <= config.max_rejected_share,
        metadata={"rejected_share": share, "threshold": config.max_rejected_share, "rows_rejected": rejected},
    )


ingest_assets = [ingest_classifications]
ingest_checks = [classification_id_unique, created_at_present_and_past, rejected_share_under_threshold]

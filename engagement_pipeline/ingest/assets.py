"""Ingest: Zooniverse classification exports -> `classifications` and `rejected_rows`.

One road for every file under the exports folder (`*.csv`, `*.csv.gz`, recursively):

1. Its header is read and checked first, for every new file, before anything
   is written: a file that is not a classification export stops the ingest
   with one message naming the file and what is missing (`files.py`).
2. A file whose content (sha256) was loaded before is skipped; a changed file
   is read again. Exports are full snapshots, so a classification already
   stored is kept as first stored (the earliest ingested file wins; later
   copies count as duplicates, even if their content differs).
3. DuckDB's CSV reader stages the rows as text, `sql/parse_rows.sql`
   types them, hashes user names and judges each row; usable rows go to
   `classifications`, the rest to `rejected_rows` with file, line and reason.
   All of one file is one transaction: never half a file (`load.py`).

`user_ip` is never read past the CSV reader, and `user_name` only into a
salted hash: neither reaches any table (CONTRACT.md, Privacy).

This module holds the Dagster assets and their checks; the library is files.py and load.py.
"""

import dagster as dg
from pydantic import Field

from engagement_pipeline.ingest.exports_folder import check_exports_folder
from engagement_pipeline.ingest.files import find_exports
from engagement_pipeline.ingest.load import (
    MAX_EXPORT_GB,
    MAX_FILE_REJECTED_SHARE,
    ensure_schema,
    ingest_exports,
    load_salt,
    run_sql,
)
from engagement_pipeline.resources import Exports, Storage, Warehouse

# --------------------------------------------------------------------------- Dagster


class IngestConfig(dg.Config):
    max_file_rejected_share: float = Field(
        MAX_FILE_REJECTED_SHARE,
        description="A file of which more than this share of rows cannot be used stops the ingest, "
        "nothing of it stored (the message names the file and the commonest reasons).",
    )
    max_export_gb: float = Field(
        MAX_EXPORT_GB,
        description="The largest export read, in GB once decompressed: a bigger file (a .csv.gz expanding past "
        "it) stops the ingest before anything of it is copied or stored.",
    )


class IngestCheckConfig(dg.Config):
    max_rejected_share: float = Field(
        0.05, description="The check fails when more than this share of the rows read was rejected."
    )


_TZ = "TIMESTAMP WITH TIME ZONE"
# The UI's column schemas of the two tables (sql/schema.sql is the source;
# engagement_pipeline_tests/test_definitions.py holds these lists to the built tables).
CLASSIFICATIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(
            "classification_id",
            "BIGINT",
            description="each classification stored once (the ingest keeps the first; an asset check counts duplicates)",
        ),
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
    rows = run_sql(con, "preview").fetchall()
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
def ingest_classifications(
    context: dg.AssetExecutionContext, config: IngestConfig, warehouse: Warehouse, exports: Exports, storage: Storage
):
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
        report = ingest_exports(
            con,
            files,
            salt,
            scratch=storage.ingest_scratch,
            log=context.log,
            max_rejected_share=config.max_file_rejected_share,
            max_export_gb=config.max_export_gb,
        )
        total, rejected = run_sql(con, "warehouse_totals").fetchone()
        first_day, last_day, days_with_data = run_sql(con, "data_days").fetchone()
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
        "classifications": {
            **common,
            "dagster/row_count": total,
            # which days can be scored: the Materialize dialog of user_predictions offers every day since ENGAGEMENT_PARTITIONS_START
            "first_day": first_day or "none yet",
            "last_day": last_day or "none yet",
            "days_with_data": days_with_data,
            "preview": dg.MetadataValue.md(preview),
        },
        "rejected_rows": {**common, "dagster/row_count": rejected},
    }
    for key in context.selected_asset_keys:
        yield dg.MaterializeResult(asset_key=key, metadata=results[key.to_user_string()])


@dg.asset_check(
    asset="classifications", description="classification_id is unique (exports are snapshots: each id stored once)."
)
def classification_id_unique(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        (duplicates,) = run_sql(con, "check_unique_ids").fetchone()
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": duplicates})


@dg.asset_check(
    asset="classifications",
    description="created_at is present and not in the future (beyond the day of clock skew the ingest also allows).",
)
def created_at_present_and_past(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        missing, future = run_sql(con, "check_created_at").fetchone()
    return dg.AssetCheckResult(passed=missing == 0 and future == 0, metadata={"missing": missing, "in_future": future})


@dg.asset_check(
    asset="classifications",
    description="The share of rejected rows (of all rows read from the files ingested) is under max_rejected_share.",
)
def rejected_share_under_threshold(config: IngestCheckConfig, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        ensure_schema(con)
        read, rejected = run_sql(con, "check_rejected_share").fetchone()
    share = rejected / read if read else 0.0
    return dg.AssetCheckResult(
        passed=share <= config.max_rejected_share,
        metadata={"rejected_share": share, "threshold": config.max_rejected_share, "rows_rejected": rejected},
    )


ingest_assets = [ingest_classifications]
ingest_checks = [classification_id_unique, created_at_present_and_past, rejected_share_under_threshold]

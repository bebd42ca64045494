"""The history the online scorer reads: `history_snapshot`, one Parquet file the pipeline replaces atomically.

`history_snapshot` (an asset downstream of `classifications`) copies the
warehouse's classifications, provenance columns dropped, into one Parquet
file, `<home>/serving/history.parquet`, sorted by user. It is written beside
its place and renamed over it: a reader (the server, any number of them)
opens the old file or the new one, never half of one, and never touches the
warehouse or its lock, so it keeps answering while the pipeline runs.
`online_features.py` turns it and a request's rows into `features`.
"""

from pathlib import Path

import dagster as dg

from engagement_pipeline.ops.atomic_files import remove_leftovers, replacing
from engagement_pipeline.resources import Storage, Warehouse

SNAPSHOT_FILE = "history.parquet"
PROVENANCE_COLUMNS = ("source_file", "source_line", "ingested_at")  # where a row came from: no model reads them
ROW_GROUP_ROWS = 16_384


def snapshot_path(folder: Path) -> Path:
    return folder / SNAPSHOT_FILE


def _sql_string(path: Path) -> str:
    """A path as a SQL string literal (COPY ... TO takes no parameter)."""
    return "'" + str(path).replace("'", "''") + "'"


def write_snapshot(con, folder: Path) -> dict:
    """Copy `classifications` to `folder`/history.parquet atomically; returns rows, users and the latest time."""
    target = snapshot_path(folder)
    excluded = ", ".join(PROVENANCE_COLUMNS)  # our own constant names
    remove_leftovers([folder], SNAPSHOT_FILE)  # a killed run's temporary
    with replacing(target, "history snapshot") as temporary:
        # written in place (use_tmp_file false): the locked temporary is the file DuckDB fills
        con.execute(
            f"""
            copy (
                select * exclude ({excluded}) from classifications
                order by user_key, created_at, classification_id
            ) to {_sql_string(temporary)}
            (format parquet, compression zstd, row_group_size {ROW_GROUP_ROWS}, use_tmp_file false)
            """
        )
    rows, users, latest = con.execute(
        "select count(*), count(distinct user_key), max(created_at)::varchar from read_parquet(?)", [str(target)]
    ).fetchone()
    return {"rows": rows, "users": users, "latest_created_at": latest, "path": str(target)}


@dg.asset(
    deps=[dg.AssetKey("classifications")],
    group_name="scoring",
    kinds={"parquet"},
    owners=["team:engagement"],
    description=(
        "Every stored classification (provenance columns dropped), sorted by user, in one Parquet file "
        "$ENGAGEMENT_HOME/serving/history.parquet, replaced atomically: the history `engagement serve` "
        "reads without the warehouse or its lock, picked up by the running server on its next request."
    ),
)
def history_snapshot(context: dg.AssetExecutionContext, warehouse: Warehouse, storage: Storage) -> dg.MaterializeResult:
    folder = storage.serving
    with warehouse.connect(log=context.log) as con:
        info = write_snapshot(con, folder)
    context.log.info(f"{info['rows']:,} classifications of {info['users']:,} volunteers -> {info['path']}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": info["rows"],
            "users": info["users"],
            "latest_created_at": info["latest_created_at"] or "",
            "path": dg.MetadataValue.path(info["path"]),
        }
    )

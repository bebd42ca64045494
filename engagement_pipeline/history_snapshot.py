"""The history the online scorer reads, and the online road to `features`: one definition of every feature.

* `history_snapshot` (an asset downstream of `classifications`) copies the
  warehouse's classifications, provenance columns dropped, into one Parquet
  file, `<home>/serving/history.parquet`, sorted by user so that a lookup of
  a few volunteers reads a few row groups. It is written beside its place
  and renamed over it: a reader (the server, any number of them) opens the
  old file or the new one, never half of one, and never touches the
  warehouse or its lock, so it keeps answering while the pipeline runs.
* `OnlineFeatures.build` turns raw export rows (JSON, as `POST /invocations`
  carries them) into the `features` rows of those classifications, the way
  the batch path does, with the batch path's own code: the rows are staged
  as the CSV reader stages them (text, `NA` and empty fields NULL), typed and
  hashed by the ingest's `ingest_sql/parse_rows.sql`, joined to the stored
  history of their volunteers only (every feature of a classification uses
  that classification and the same user's earlier ones, so other users
  change nothing), deduplicated by `classification_id` as the ingest does
  (a stored row is the same event; within a request the first copy wins),
  and run through the same `sql/` models into `features`, all in a private
  in-memory DuckDB. No feature is written twice.

`user_ip` is never extracted from the request (the JSON schema below does
not name it), and `user_name` only into the salted hash.
"""

import functools
import queue
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np

from engagement_pipeline.atomic_files import remove_leftovers, replacing
from engagement_pipeline.ingest import PANOPTES_COLUMNS
from engagement_pipeline.ingest_load import sql_text
from engagement_pipeline.resources import Storage, Warehouse
from engagement_pipeline.sql_models import models_for
from engagement_pipeline.windows import FeatureMatrix, feature_names, load_feature_matrix

SNAPSHOT_FILE = "history.parquet"
PROVENANCE_COLUMNS = ("source_file", "source_line", "ingested_at")  # where a row came from: no model reads them
ROW_GROUP_ROWS = 16_384
# The columns of `classifications` the ingest fills from `parsed_rows` (ingest.py, the insert), provenance aside.
CLASSIFICATION_COLUMNS = (
    "classification_id", "user_key", "is_anonymous", "workflow_id", "workflow_version", "created_at",
    "started_at", "finished_at", "utc_offset_minutes", "device_class", "browser_session",
    "gold_standard", "expert", "subject_ids",
)  # fmt: skip
REQUEST_COLUMNS = tuple(c for c in PANOPTES_COLUMNS if c != "user_ip")  # user_ip is never read


def _read_by(sql_texts: list[str], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The `columns` some SQL text names (a name in a comment only costs reading a column for nothing)."""
    return tuple(c for c in columns if any(re.search(rf"\b{c}\b", sql) for sql in sql_texts))


@dataclass(frozen=True)
class OnlineSql:
    """What the online road runs: the ingest's parse step and the feature models, and the columns they read.

    Only what the SQL reads is extracted or loaded: an export row's annotations and subject_data can be
    megabytes that neither the staging nor any model reads. Both lists follow the SQL files by themselves.
    """

    stage_sql: str  # the ingest's own parse step: csv_rows -> parsed_rows
    feature_models: tuple  # the sql/ models `features` needs, in dependency order
    staged_columns: tuple[str, ...]
    model_columns: tuple[str, ...]

    @property
    def field_paths(self) -> str:
        """One JSON path list, so each record is parsed once for all the staged columns."""
        return "[" + ", ".join(f"'$.{c}'" for c in self.staged_columns) + "]"


@functools.cache
def online_sql() -> OnlineSql:
    """Read and derived once, on the first request (importing this module, as definitions.py does, reads no SQL)."""
    stage_sql = sql_text("parse_rows")
    models = tuple(models_for(["features"]))
    return OnlineSql(
        stage_sql=stage_sql,
        feature_models=models,
        staged_columns=_read_by([stage_sql], REQUEST_COLUMNS),
        model_columns=_read_by([model.sql for model in models], CLASSIFICATION_COLUMNS),
    )


class BadRequest(ValueError):
    """A request the scorer cannot use; the message names the record and the problem, never a value."""


class NoSnapshotError(RuntimeError):
    """The history snapshot has not been written yet."""


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


# --------------------------------------------------------------------------- online features


@dataclass(frozen=True)
class OnlineBatch:
    """The features of one request: `rows[i]` is input record i's row in `matrix`."""

    matrix: FeatureMatrix
    rows: np.ndarray  # int64 [n_records]


class OnlineFeatures:
    """Raw export rows + the snapshot -> `features`, through the ingest's staging SQL and the `sql/` models.

    Each request runs on an in-memory DuckDB of its own, taken from a pool
    (opening one costs more than the work), so concurrent requests never see
    each other's tables. The snapshot is opened by path on every request:
    a new file renamed into place is used from the next request on.
    """

    def __init__(self, snapshot: Path, salt: str, pool_size: int = 4, threads: int = 1):
        self.snapshot = snapshot
        self._salt = salt
        self._threads = threads
        self._feature_names: list[str] | None = None
        self._pool: queue.LifoQueue = queue.LifoQueue()
        for _ in range(pool_size):
            self._pool.put(self._connect())

    def _connect(self):
        import duckdb

        con = duckdb.connect(config={"threads": self._threads})
        con.execute("SET TimeZone = 'UTC'")
        con.execute("set variable salt = ?", [self._salt])
        return con

    def feature_names(self, con) -> list[str]:
        """The columns of `features` after its keys (fixed by the SQL files: read from the catalog once)."""
        if self._feature_names is None:
            self._feature_names = feature_names(con)
        return self._feature_names

    @contextmanager
    def connection(self) -> Iterator:
        con = self._pool.get()
        try:
            yield con
        finally:
            self._pool.put(con)

    def build(self, body: bytes | str) -> OnlineBatch:
        """The features of every record of a `{"dataframe_records": [...]}` body; BadRequest when unusable."""
        if not self.snapshot.exists():
            raise NoSnapshotError(
                f"No history snapshot at {self.snapshot}: materialize the `history_snapshot` asset "
                "(it is part of `engagement demo`/`run` and of the nightly refresh)."
            )
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        with self.connection() as con:
            return self._build(con, text)

    def _build(self, con, text: str) -> OnlineBatch:
        import duckdb

        # Stage as the CSV reader does: every column text, empty fields and a bare NA are NULL.
        # The body is parsed by DuckDB, extracting only the columns the staging SQL reads (never user_ip).
        sql = online_sql()
        staged_columns = sql.staged_columns
        staged = ", ".join(
            f"case when f[{staged_columns.index(c) + 1}] in ('', 'NA') then null else f[{staged_columns.index(c) + 1}] end as {c}"
            if c in staged_columns
            else f"null::varchar as {c}"
            for c in REQUEST_COLUMNS
        )
        try:
            con.execute(
                f"""
                create or replace temp table csv_rows as
                with records as (select unnest(json_extract(?, '$.dataframe_records[*]')) as record)
                select {staged}
                from (select json_extract_string(record, {sql.field_paths}) as f from records)
                """,  # our own constant column names and paths
                [text],
            )
        except duckdb.Error:
            raise BadRequest("the request body is not JSON") from None
        if con.execute("select count(*) from csv_rows").fetchall() == [(0,)]:  # fetched to the end: DuckDB 2 wants that
            kind = con.execute("select json_type(?, '$.dataframe_records')", [text]).fetchone()[0]
            if kind != "ARRAY":
                raise BadRequest('expected a JSON object {"dataframe_records": [row, ...]} (MLflow records format)')
            raise BadRequest("dataframe_records is empty: send at least one row")
        con.execute(sql.stage_sql)  # -> parsed_rows: typed, user key hashed, each row judged
        ((n, n_bad),) = con.execute("select count(*), count(reason) from parsed_rows").fetchall()
        if n_bad:
            shown = con.execute(
                "select string_agg('record ' || idx || ': ' || reason, '; ' order by idx) "
                "from (select rowid as idx, reason from parsed_rows where reason is not null order by rowid limit 10)"
            ).fetchone()[0]
            more = f" (and {n_bad - 10} more)" if n_bad > 10 else ""
            raise BadRequest(f"{n_bad} of {n} record(s) cannot be scored: {shown}{more}")

        columns = ", ".join(sql.model_columns)
        con.execute(
            f"""
            create or replace table classifications as
            with request_users as (select distinct user_key from parsed_rows),
            history as (
                select {columns} from read_parquet(?) where user_key in (select user_key from request_users)
            )
            select {columns}
            from (
                select {columns}, 0 as copy_rank, 0 as idx from history
                union all
                select {columns}, 1 as copy_rank, rowid as idx from parsed_rows
            )
            qualify row_number() over (partition by classification_id order by copy_rank, idx) = 1
            """,  # our own constant column names
            [str(self.snapshot)],
        )
        for model in sql.feature_models:
            # The models' own SQL, as build_models runs it, without its per-model bookkeeping
            # (upstream check, transaction, row count): this database is private and rebuilt every request.
            con.execute(f'create or replace table "{model.name}" as\n{model.sql}')
        matrix = load_feature_matrix(con, names=self.feature_names(con))
        ids = con.execute("select classification_id from parsed_rows order by rowid").fetchnumpy()["classification_id"]
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(matrix.classification_id, kind="stable")
        rows = order[np.searchsorted(matrix.classification_id, ids, sorter=order)]
        if not np.array_equal(matrix.classification_id[rows], ids):
            raise AssertionError("a request row has no features row")
        return OnlineBatch(matrix=matrix, rows=rows)
